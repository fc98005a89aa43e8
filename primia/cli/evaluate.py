"""``primia evaluate`` and ``primia transfer-matrix``: how well, and how well elsewhere."""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from primia.cli.commands import command_help
from primia.cli.groups import add_threads_option
from primia.cli.progress import step_progress

if TYPE_CHECKING:
    from primia.evaluate.evaluation import Comparison, Evaluation

EVALUATE_DESCRIPTION = """\
Evaluate a model on a dataset: thresholds chosen on the validation split (Youden's J per
label), then AUROC, accuracy, sensitivity, specificity, precision and F1 on the test
split, per label and averaged, each with a 95% bootstrap interval; per subgroup of sex and
age where the manifest has them. With --compare, a second model on the same samples and
resamples, and paired bootstrap p-values of the differences.

The data are split by patient as 'primia train' splits them: the same --val-fraction,
--test-fraction and --split-seed give the same test patients.
"""

EVALUATE_EPILOG = """\
examples:
  primia evaluate --model runs/local --data data/synth --out eval/local
  primia evaluate --model runs/dp-eps1 --compare runs/non-dp --data data/synth \\
      --site site2 --out eval/dp-vs-non-dp

The terminal shows, per finding, the operating point (threshold chosen on validation) and
AUROC, sensitivity and specificity with 95% intervals; then the mean per patient group.
EVAL_DIR receives report.html (the same and more, for a browser), evaluation.json (every
figure; 'comparison' with two models) and model.json/.safetensors (the bootstrap
replicates, for later paired comparisons).
"""

MATRIX_DESCRIPTION = """\
The domain-transfer matrix of a consortium: for each privacy level (without DP, and at
each --epsilons value) train one model per site on that site's data alone, at its node,
plus the federated model; then evaluate every model at every site's node on its test split.
Only metrics travel; images, scores and labels stay at the nodes.

This command is the coordinator: start it with the federation's coordinator.toml, then
'primia node serve' at every site (all sites are needed). Nodes must allow non-DP
training for the non-DP models (limits.require_dp = false in node.toml) and hold enough
budget for the DP ones: the sum of --epsilons, twice (local and federated models).
"""

MATRIX_EPILOG = """\
examples:
  primia transfer-matrix --config coordinator.toml --out transfer
  primia transfer-matrix --config coordinator.toml --out transfer --epsilons 1 3 8 \\
      --rounds 3 --resamples 1000

OUT receives matrix.json (every figure), matrix.csv (a row per cell), heatmap-<level>.png
(rows trained at, columns tested at), report.html, and the models and cells it is made of.
Run the same command again to resume: finished models and cells are not redone.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    evaluate = subparsers.add_parser(
        "evaluate",
        help=command_help("evaluate"),
        description=EVALUATE_DESCRIPTION,
        epilog=EVALUATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument(
        "--model",
        type=Path,
        required=True,
        metavar="RUN_DIR",
        help="a run directory or checkpoint (.safetensors)",
    )
    evaluate.add_argument(
        "--data",
        type=Path,
        required=True,
        metavar="DIR",
        help="a manifest folder, image folder or DICOM folder",
    )
    evaluate.add_argument("--out", type=Path, metavar="EVAL_DIR", help="write the results here")
    evaluate.add_argument(
        "--compare",
        type=Path,
        metavar="RUN_DIR",
        help="a second model: differences and paired p-values",
    )
    evaluate.add_argument("--site", help="only this site's images (manifest 'site' column)")
    evaluate.add_argument(
        "--label-columns",
        nargs="+",
        metavar="NAME",
        help="the manifest's label columns (default: all)",
    )
    evaluate.add_argument(
        "--val-fraction",
        type=float,
        default=0.15,
        metavar="F",
        help="patients for validation (default 0.15, as primia train)",
    )
    evaluate.add_argument(
        "--test-fraction",
        type=float,
        default=0.15,
        metavar="F",
        help="patients for testing (default 0.15, as primia train)",
    )
    evaluate.add_argument(
        "--split-seed",
        type=int,
        default=0,
        metavar="N",
        help="seed of the patient split (default 0, as primia train)",
    )
    _add_bootstrap_options(evaluate)
    evaluate.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    add_threads_option(evaluate)
    evaluate.set_defaults(handler=_evaluate)

    matrix = subparsers.add_parser(
        "transfer-matrix",
        help=command_help("transfer-matrix"),
        description=MATRIX_DESCRIPTION,
        epilog=MATRIX_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    matrix.add_argument(
        "--config",
        type=Path,
        required=True,
        metavar="TOML",
        help="the federation's coordinator.toml (roster, TLS, model, plan)",
    )
    matrix.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="OUT",
        help="the matrix's folder (resumed when it exists)",
    )
    matrix.add_argument(
        "--epsilons",
        type=float,
        nargs="*",
        default=[1.0, 3.0, 8.0],
        metavar="EPS",
        help="DP levels, each a model's total ε (default 1 3 8)",
    )
    matrix.add_argument(
        "--no-non-dp",
        action="store_true",
        help="skip the non-DP models (no baseline to compare DP to)",
    )
    matrix.add_argument("--no-federated", action="store_true", help="only the site-local models")
    matrix.add_argument(
        "--rounds",
        type=int,
        metavar="N",
        help="rounds per model (default: the configuration's rounds)",
    )
    matrix.add_argument("--listen", metavar="HOST:PORT", help="override `listen`")
    _add_bootstrap_options(matrix)
    add_threads_option(matrix)
    matrix.set_defaults(handler=_transfer_matrix)


def _add_bootstrap_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--resamples",
        type=int,
        default=1000,
        metavar="N",
        help="bootstrap resamples (default 1000)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="N", help="seed of the resamples (default 0)"
    )
    parser.add_argument(
        "--no-subgroups", action="store_true", help="skip the sex and age subgroups"
    )


def _evaluate(args: argparse.Namespace) -> int:
    from primia.scoring.checkpoint import EvaluateConfig, evaluate_checkpoint

    config = EvaluateConfig(
        model=args.model,
        data=args.data,
        out=args.out,
        compare_with=args.compare,
        site=args.site,
        label_columns=args.label_columns,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        split_seed=args.split_seed,
        resamples=args.resamples,
        seed=args.seed,
        subgroups=not args.no_subgroups,
        device=args.device,
    )
    console = Console()
    with console.status("evaluating (scores, then the bootstrap)"):
        result = evaluate_checkpoint(config)
    console.print(_findings_table(result.evaluation, title=str(args.model)))
    console.print(_groups_table(result.evaluation))
    if result.other is not None and result.comparison is not None:
        console.print(_findings_table(result.other, title=str(args.compare)))
        console.print(_comparison_table(result.comparison, args.model, args.compare))
    for note in result.evaluation.threshold_notes:
        console.print(f"[yellow]note:[/] {note}")
    if args.out is not None:
        console.print(f"results in {args.out / 'evaluation.json'} and {args.out / 'report.html'}")
    return 0


def _findings_table(evaluation: Evaluation, *, title: str) -> Table:
    """Per finding at its operating point; value above interval in each cell, so that the
    table fits 80 columns (report.html has precision and F1 too)."""
    from primia.evaluate.report import estimate_text

    table = Table(
        title=f"{title}: test split, {evaluation.overall.num_examples} images, 95% CI "
        f"({evaluation.resamples} resamples); threshold from validation (Youden's J)"
    )
    for column in ("finding", "threshold", "AUROC", "sensitivity", "specificity"):
        table.add_column(column, justify="left" if column == "finding" else "right")
    overall = evaluation.overall
    for k, name in enumerate(evaluation.label_names):
        threshold = float(evaluation.thresholds[k])
        table.add_row(
            f"{name} ({overall.positives[k]}+)",
            "arg-max" if math.isnan(threshold) else f"{threshold:.3f}",
            *(
                estimate_text(overall.estimate(metric, name), "\n")
                for metric in ("auroc", "sensitivity", "specificity")
            ),
        )
    table.add_row(
        "[bold]mean",
        "",
        *(
            estimate_text(overall.estimate(metric), "\n")
            for metric in ("auroc", "sensitivity", "specificity")
        ),
    )
    return table


def _groups_table(evaluation: Evaluation) -> Table:
    from primia.evaluate.report import GROUP_METRICS, estimate_text

    table = Table(title="by patient group: mean over findings, 95% CI")
    table.add_column("group")
    for metric in GROUP_METRICS:
        table.add_column(metric, justify="right")
    for name, group in evaluation.groups.items():
        cells = [estimate_text(group.estimate(metric), "\n") for metric in GROUP_METRICS]
        table.add_row(f"{name} (n={group.num_examples})", *cells)
    return table


def _comparison_table(comparison: Comparison, first: Path, second: Path) -> Table:
    from primia.evaluate.report import GROUP_METRICS, comparison_rows

    table = Table(title=f"{first} minus {second}: difference [95% CI] (paired P)")
    table.add_column("group")
    for metric in GROUP_METRICS:
        table.add_column(metric, justify="right")
    for row in comparison_rows(comparison, "\n"):
        table.add_row(*row)
    return table


def _transfer_matrix(args: argparse.Namespace) -> int:
    from primia.cli.federation import stop_on_sigterm
    from primia.federated.coordinator_config import load_coordinator_config
    from primia.transfer.matrix import TransferSettings
    from primia.transfer.report import below_chance
    from primia.transfer.run import run_transfer_matrix

    config = load_coordinator_config(args.config)
    if args.listen:
        config = dataclasses.replace(config, listen=args.listen)
    settings = TransferSettings(
        out=args.out,
        epsilons=tuple(args.epsilons),
        non_private=not args.no_non_dp,
        federated=not args.no_federated,
        rounds=args.rounds,
        resamples=args.resamples,
        seed=args.seed,
        subgroups=not args.no_subgroups,
    )
    stop_on_sigterm()
    console = Console()
    with step_progress(console) as progress:
        bar = progress.add_task("transfer matrix", total=None)

        def on_progress(state: str, done: int, total: int) -> None:
            progress.update(bar, description=state[:60], completed=done, total=total)

        result = run_transfer_matrix(config, settings, on_progress=on_progress)
    table = Table(title="on-site → cross-site AUROC drop (site-local models)")
    for column in ("privacy", "mean drop [95% CI]", "minus non-DP drop", "P"):
        table.add_column(column, justify="right")
    for name, level in result.analysis["levels"].items():
        drop = level.get("mean_drop") or {}
        versus = (level.get("vs_non_dp") or {}).get("mean_drop_difference") or {}
        table.add_row(
            name,
            _format(drop, "value"),
            _format(versus, "difference"),
            "" if versus.get("p_value") is None else f"{versus['p_value']:.3f}",
        )
    console.print(table)
    for level, trained_at, site, value in below_chance(result.analysis):
        console.print(
            f"[yellow]warning:[/] {level}: the model trained at {trained_at} has AUROC "
            f"{value:.3f} at {site}, below chance (0.5): check the label order and coding "
            "there, and the number of test images"
        )
    console.print(f"{result.timings.get('total_seconds', 0):.0f} s; report in {result.files.html}")
    return 0


def _format(estimate: dict[str, float | None], key: str) -> str:
    value, lower, upper = estimate.get(key), estimate.get("lower"), estimate.get("upper")
    if value is None:
        return "n/a"
    if lower is None or upper is None:
        return f"{value:+.3f}"
    return f"{value:+.3f} [{lower:+.3f}, {upper:+.3f}]"
