"""``primia audit invert``: could a radiograph be rebuilt from what leaves a node?"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from primia.cli.commands import command_help
from primia.cli.groups import add_threads_option, print_help
from primia.cli.reid import add_reid_command

DESCRIPTION = """\
Privacy audits: play the attacker against what a node sends, and measure what it gets.
"""

INVERT_DESCRIPTION = """\
Simulate what an observer of a node's model update sees, attack it with gradient
inversion, and score the reconstructions against the originals and against the prior (the
dataset's mean image, which anyone can draw without an update).

Defenses (one audit each; give several to compare them in one report):
  none     one node's plain update: the gradient, or with --local-steps K the weight
           delta after K local SGD steps (the FedAvg variant of the attack)
  dp       the node's DP-SGD update: per-sample clipping (--max-grad-norm) and Gaussian
           noise (--noise-multiplier); the report states the ε it costs
  secagg   the mean of --nodes nodes' updates, all secure aggregation reveals

Attacks: dlg (L-BFGS on the gradient distance, labels optimised too), idlg (labels
recovered analytically first, then as dlg), ig (Inverting Gradients: cosine similarity,
total-variation prior, Adam on signed gradients, restarts), analytic (features and labels
from the last Linear layer, images by a prior learned on public images), feature-ig
(analytic, then refined by full-gradient matching).

Threats (--threat, what the coordinator sends):
  honest        the model as it is
  trap          crafted weights to every node: a head with zero weights and bias -30, a
                counting feature, and where the architecture permits an imprint
  inconsistent  trap weights to the target, weights with a zero update to the others
                (model inconsistency against secure aggregation); primia's
                model-consistency check refuses it, the report says so
"""

INVERT_EPILOG = """\
examples:
  primia audit invert --data data/synth --model lenet --image-size 32 --attack idlg \\
      --defense none dp secagg --out audit/lenet
  primia audit invert --data data/synth --checkpoint runs/demo/run --attack ig \\
      --defense none dp --batch-size 4 --images 8 --iterations 2000 --out audit/trained

  primia audit invert --data data/synth --model resnet9 --image-size 32 \
      --attack feature-ig --defense none dp --out audit/resnet9
  primia audit invert --data data/synth --model lenet --width 17 --image-size 32 \
      --attack analytic --threat inconsistent --defense secagg --batch-size 4 --out audit/mi

AUDIT_DIR receives report.html (open it in a browser), report.json and one PNG grid per
defense (originals above reconstructions, the prior beside them). An image leaks when it
is reconstructed (leakage value >= 0.1 and PSNR >= the prior's + 1 dB) or re-identified
(nearest image or patient, or the verifier, by a method whose hits beat chance). The
verdict is "leaks: k of N images reconstructed or re-identified", or "no leak found by
these attacks: inconclusive, not a proof of safety": an audit can show a leak, never its
absence.
"""

COLUMNS = (
    "defense",
    "PSNR dB (prior)",
    "SSIM (prior)",
    "leakage",
    "labels",
    "re-id image / patient (/ verifier)",
    "re-id by features image / patient",
    "ε",
    "findings exact",
    "verdict",
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = subparsers.add_parser(
        "audit",
        help=command_help("audit"),
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    audit.set_defaults(handler=print_help(audit))
    commands = audit.add_subparsers(title="audit commands", metavar="COMMAND")
    invert = commands.add_parser(
        "invert",
        help="gradient-inversion audit: can an update be turned back into radiographs?",
        description=INVERT_DESCRIPTION,
        epilog=INVERT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_invert_options(invert)
    invert.set_defaults(handler=_invert)
    add_reid_command(commands)


def _add_invert_options(parser: argparse.ArgumentParser) -> None:
    what = parser.add_argument_group("what is attacked")
    what.add_argument("--data", type=Path, required=True, metavar="DIR", help="the node's dataset")
    what.add_argument(
        "--model",
        metavar="NAME",
        help="architecture: resnet9 (default), resnet18, cnn or lenet (the DLG paper's "
        "model, which leaks); with --checkpoint, the checkpoint says",
    )
    what.add_argument("--width", type=int, metavar="N", help="base channel count of the model")
    what.add_argument(
        "--checkpoint",
        type=Path,
        metavar="PATH",
        help="trained weights: a .safetensors file or a run directory (default: the "
        "model untrained, seeded)",
    )
    what.add_argument(
        "--verifier",
        type=Path,
        metavar="PATH",
        help="a verifier from 'primia audit reid --out DIR' (the folder or its "
        "verifier.safetensors): also judge whether reconstructions link to their patients",
    )
    what.add_argument(
        "--image-size",
        type=int,
        metavar="PX",
        help="image side in pixels (default: the checkpoint's, else 64)",
    )
    observer = parser.add_argument_group("what the observer sees")
    observer.add_argument(
        "--defense",
        nargs="+",
        default=["none"],
        metavar="NAME",
        help="none, dp and/or secagg; several give one audit each (default none)",
    )
    observer.add_argument(
        "--batch-size",
        type=int,
        default=1,
        metavar="B",
        help="images behind one node's update (default 1)",
    )
    observer.add_argument(
        "--images",
        type=int,
        default=8,
        metavar="N",
        help="node images to attack, in ⌈N/B⌉ updates (default 8)",
    )
    observer.add_argument(
        "--nodes",
        type=int,
        default=4,
        metavar="N",
        help="secagg: nodes in the aggregate (default 4)",
    )
    observer.add_argument(
        "--local-steps",
        type=int,
        default=1,
        metavar="K",
        help="local SGD steps behind an update; K > 1 attacks the weight delta (default 1)",
    )
    observer.add_argument(
        "--local-lr",
        type=float,
        default=0.1,
        metavar="LR",
        help="their learning rate (default 0.1)",
    )
    observer.add_argument(
        "--noise-multiplier",
        type=float,
        default=1.0,
        metavar="SIGMA",
        help="dp: noise standard deviation over the clipping norm (default 1.0)",
    )
    observer.add_argument(
        "--max-grad-norm",
        type=float,
        default=1.0,
        metavar="C",
        help="dp: per-sample clipping norm (default 1.0)",
    )
    observer.add_argument(
        "--delta", type=float, default=1e-5, help="dp: δ of the ε reported (default 1e-5)"
    )
    attack = parser.add_argument_group("the attack")
    attack.add_argument(
        "--attack",
        choices=["dlg", "idlg", "ig", "analytic", "feature-ig"],
        default="ig",
        help="the attack (default ig)",
    )
    attack.add_argument(
        "--threat",
        choices=["honest", "trap", "inconsistent"],
        default="honest",
        help="what the coordinator sends (default honest)",
    )
    attack.add_argument(
        "--public",
        type=Path,
        metavar="DIR",
        help="analytic, feature-ig: the attacker's public images (another site's dataset) "
        "for the learned prior (default: a synthetic set)",
    )
    attack.add_argument(
        "--iterations",
        type=int,
        metavar="N",
        help="optimiser iterations (default: dlg and idlg 300, ig 2000)",
    )
    attack.add_argument(
        "--restarts", type=int, default=1, metavar="N", help="random starts, best kept (default 1)"
    )
    attack.add_argument(
        "--lr", type=float, metavar="LR", help="attack step size (default: L-BFGS 1.0, ig 0.1)"
    )
    attack.add_argument(
        "--tv-weight",
        type=float,
        default=1e-6,
        metavar="W",
        help="ig: weight of the total-variation prior (default 1e-6)",
    )
    attack.add_argument(
        "--seed", type=int, default=0, help="seeds images, model and noise (default 0)"
    )
    attack.add_argument(
        "--device", default="auto", help="auto (CUDA when present), cpu or cuda (default auto)"
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="AUDIT_DIR", help="report folder"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_threads_option(parser)


def defenses_in(values: Sequence[str]) -> tuple[str, ...]:
    """Defense names from ``--defense`` values that may also hold commas ("none,dp secagg")."""
    names = [part.strip() for value in values for part in value.split(",") if part.strip()]
    return tuple(dict.fromkeys(names))


def _invert(args: argparse.Namespace) -> int:
    from primia.audit import AttackConfig, AttackName, InversionConfig, run_inversion_audit
    from primia.audit.report import refusal_line
    from primia.audit.results import CAVEAT

    config = InversionConfig(
        data=args.data,
        out=args.out,
        model=args.model,
        width=args.width,
        image_size=args.image_size,
        checkpoint=args.checkpoint,
        attack=AttackConfig(
            name=AttackName(args.attack),
            iterations=args.iterations,
            restarts=args.restarts,
            learning_rate=args.lr,
            tv_weight=args.tv_weight,
            seed=args.seed,
        ),
        defenses=defenses_in(args.defense),
        batch_size=args.batch_size,
        images=args.images,
        nodes=args.nodes,
        local_steps=args.local_steps,
        local_lr=args.local_lr,
        noise_multiplier=args.noise_multiplier,
        max_grad_norm=args.max_grad_norm,
        delta=args.delta,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
        verifier=args.verifier,
        threat=args.threat,
        public=args.public,
    )
    run = run_inversion_audit(config)
    table = Table(
        title=f"gradient inversion ({args.attack}, threat {args.threat}): means; "
        "the verdict counts images"
    )
    for column in COLUMNS:
        table.add_column(column)
    for audit in run.audits:
        s = audit.summary
        verifier = (
            "" if s.reidentified_by_verifier is None else f" / {s.reidentified_by_verifier:.0%}"
        )
        table.add_row(
            str(audit.settings["defense"]),
            f"{s.psnr:.1f} ({s.prior_psnr:.1f})",
            f"{s.ssim:.2f} ({s.prior_ssim:.2f})",
            f"{s.leakage:.2f}",
            f"{s.label_accuracy:.0%}",
            f"{s.reidentified_images:.0%} / {s.reidentified_patients:.0%}" + verifier,
            "-"
            if s.reidentified_by_features is None or s.linked_by_features is None
            else f"{s.reidentified_by_features:.0%} / {s.linked_by_features:.0%}",
            "-" if audit.epsilon is None else f"{audit.epsilon:.3g}",
            f"{s.labels_exact_images} of {s.images}",
            s.verdict,
        )
    console = Console()
    console.print(table)
    console.print(f"[bold]caveat:[/bold] {CAVEAT}")
    for audit in run.audits:
        if audit.refusal is not None:
            console.print(f"{audit.settings['defense']}: {refusal_line(audit)}")
    if run.files is not None:
        console.print(f"report: {run.files.html}")
    return 0
