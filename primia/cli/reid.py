"""``primia audit reid``: does a radiograph identify its patient?"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from primia.cli.groups import add_threads_option
from primia.cli.progress import step_progress

REID_DESCRIPTION = """\
Train a Siamese verification network (a primia backbone, 128-d embeddings, |difference|
into a linear layer) on same-patient and different-patient pairs of the training patients,
then measure on test patients it never saw: verification AUROC with a 95% interval
(patient-level bootstrap) and retrieval (precision@1, mAP@R). Patients come from the
manifest's patient_id column; the splits are patient-disjoint.
"""

REID_EPILOG = """\
examples:
  primia audit reid --data data/synth --out audit/reid
  primia audit reid --data data/synth --site site0 --model cnn --width 8 --image-size 32 \\
      --epochs 5 --out audit/reid-site0

OUT receives report.html (open it in a browser), report.json, example pairs as PNG
(the most and least alike same-patient pairs, the most alike different-patient pair) and
verifier.safetensors (for 'primia audit invert --verifier OUT').
"""


def add_reid_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reid = commands.add_parser(
        "reid",
        help="re-identification audit: do radiographs link back to their patients?",
        description=REID_DESCRIPTION,
        epilog=REID_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    reid.add_argument(
        "--data",
        type=Path,
        required=True,
        metavar="DIR",
        help="a dataset with patient IDs (manifest, folder or DICOM)",
    )
    reid.add_argument("--out", type=Path, required=True, metavar="OUT", help="report folder")
    reid.add_argument("--site", help="only this site's images")
    reid.add_argument("--model", default="resnet9", help="backbone (default resnet9)")
    reid.add_argument("--width", type=int, default=16, help="backbone width (default 16)")
    reid.add_argument("--image-size", type=int, default=64, metavar="PX", help="default 64")
    reid.add_argument("--epochs", type=int, default=10, help="default 10")
    reid.add_argument(
        "--pairs-per-epoch",
        type=int,
        default=2000,
        metavar="N",
        help="balanced pairs drawn afresh each epoch (default 2000)",
    )
    reid.add_argument("--batch-size", type=int, default=64, help="default 64")
    reid.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (1e-3)")
    reid.add_argument(
        "--test-fraction",
        type=float,
        default=0.3,
        metavar="F",
        help="patients held out for the audit (default 0.3)",
    )
    reid.add_argument("--resamples", type=int, default=1000, help="bootstrap (default 1000)")
    reid.add_argument("--seed", type=int, default=0, help="splits, pairs, weights (0)")
    reid.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    add_threads_option(reid)
    reid.set_defaults(handler=_reid)


def _reid(args: argparse.Namespace) -> int:
    from primia.audit.reid import ReidConfig, run_reid_audit
    from primia.audit.reid_report import write_reid_report

    config = ReidConfig(
        data=args.data,
        model=args.model,
        width=args.width,
        image_size=args.image_size,
        epochs=args.epochs,
        pairs_per_epoch=args.pairs_per_epoch,
        batch_size=args.batch_size,
        lr=args.lr,
        test_fraction=args.test_fraction,
        site=args.site,
        resamples=args.resamples,
        seed=args.seed,
        device=args.device,
    )
    console = Console()
    with step_progress(console) as progress:
        bar = progress.add_task("verifier training", total=config.epochs)

        def on_epoch(epoch: int, epochs: int, record: dict[str, float]) -> None:
            progress.update(
                bar,
                completed=epoch,
                description=f"verifier training, val AUROC {record['val_auroc']:.3f}",
            )

        audit, verifier = run_reid_audit(config, on_epoch=on_epoch)
    files = write_reid_report(audit, args.out, verifier)
    auroc = audit.auroc
    console.print(
        f"verification AUROC {auroc.value:.3f} [{auroc.lower:.3f}, {auroc.upper:.3f}] on "
        f"{audit.test_patients} unseen patients; precision@1 {audit.precision_at_1:.3f} "
        f"(chance {audit.chance_precision_at_1:.3f}), mAP@R {audit.map_at_r:.3f}",
        highlight=False,
    )
    console.print(audit.verdict, highlight=False)
    console.print(f"report: {files.html}", highlight=False)
    return 0
