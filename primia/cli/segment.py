"""``primia segment train | apply``: masks of the lungs and the heart, which the
segmentation-guided anonymizer keeps unaltered."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from primia.cli.commands import command_help
from primia.cli.groups import add_threads_option, print_help
from primia.cli.progress import step_progress

DESCRIPTION = """\
Segment the diagnostic regions of chest radiographs (lungs, heart) with a small U-Net
(GroupNorm). 'train' learns them from a manifest whose mask_lungs and mask_heart columns
name 0/255 PNG masks (primia data synth --masks writes them) and reports Dice on held-out
patients; 'apply' predicts them for any dataset primia reads and writes a manifest with
the mask columns, which 'primia anonymize train --guide masks' reads.
"""

TRAIN_DESCRIPTION = """\
Train the lung/heart segmenter on a manifest whose mask_lungs and mask_heart columns name
0/255 PNG masks (primia data synth --masks writes them). Patients are split into training
and held-out sets; Dice per region on the held-out patients is printed beside the trivial
all-foreground mask's.
"""

APPLY_DESCRIPTION = """\
Predict lung and heart masks for every image of any dataset primia reads (a manifest, an
image folder, a public collection as downloaded) and write them with a new manifest that
adds the mask columns, for 'primia anonymize train --guide masks'.
"""

TRAIN_EPILOG = """\
example:
  primia data synth --out data/synth --masks
  primia segment train --data data/synth --out seg

OUT receives segmenter.safetensors (weights and settings, no pickle) and segmenter.json
(held-out Dice per region beside the all-foreground mask's). Patients, not images, are
split into training and held-out sets.
"""

APPLY_EPILOG = """\
example:
  primia segment apply --segmenter seg --data data/nih --format nih --out data/nih-masks

OUT receives masks/ (0/255 PNGs at the segmenter's image size) and manifest.csv: the
original images (by absolute path), patients, sites, demographics and labels, with the
mask_lungs and mask_heart columns added.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    segment = subparsers.add_parser(
        "segment",
        help=command_help("segment"),
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    segment.set_defaults(handler=print_help(segment))
    commands = segment.add_subparsers(title="segment commands", metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train the lung/heart segmenter on a manifest with masks",
        description=TRAIN_DESCRIPTION,
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument(
        "--data", type=Path, required=True, metavar="DIR", help="a manifest with mask columns"
    )
    train.add_argument("--out", type=Path, required=True, metavar="OUT", help="output folder")
    train.add_argument(
        "--image-size", type=int, default=64, metavar="PX", help="image side (default 64)"
    )
    train.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    train.add_argument("--width", type=int, default=8, help="U-Net width (default 8)")
    train.add_argument("--site", help="only this site's images")
    train.add_argument("--seed", type=int, default=0, help="seed of split and weights")
    add_threads_option(train)
    train.set_defaults(handler=_train)

    apply = commands.add_parser(
        "apply",
        help="write masks and a manifest with mask columns for a dataset",
        description=APPLY_DESCRIPTION,
        epilog=APPLY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    apply.add_argument(
        "--segmenter",
        type=Path,
        required=True,
        metavar="PATH",
        help="segmenter.safetensors or the folder of 'segment train'",
    )
    apply.add_argument("--data", type=Path, required=True, metavar="DIR", help="any dataset")
    apply.add_argument("--format", help="the dataset's layout (default: detected)")
    apply.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    apply.add_argument("--site", help="only this site's images")
    apply.add_argument("--overwrite", action="store_true", help="replace a manifest in OUT")
    apply.add_argument(
        "--device", default="auto", help="auto (CUDA when present), cpu or cuda (default auto)"
    )
    add_threads_option(apply)
    apply.set_defaults(handler=_apply)


def _train(args: argparse.Namespace) -> int:
    from primia.api.segment import SegmentConfig, train_segmenter_on

    config = SegmentConfig(
        data=args.data,
        out=args.out,
        image_size=args.image_size,
        steps=args.steps,
        width=args.width,
        site=args.site,
        seed=args.seed,
    )
    console = Console()
    with step_progress(console) as progress:
        bar = progress.add_task("segmenter", total=config.steps)

        def on_step(step: int, loss: float) -> None:
            progress.update(bar, completed=step, description=f"segmenter (loss {loss:.3f})")

        trained = train_segmenter_on(config, on_step=on_step)
    console.print(f"{trained.images} images; Dice on {trained.heldout_patients} held-out patients:")
    for region, score, trivial in zip(
        trained.regions, trained.dice, trained.dice_all_foreground, strict=True
    ):
        console.print(f"  {region:<6} {score:.3f} (all-foreground mask {trivial:.3f})")
    console.print(f"segmenter in {trained.path}")
    return 0


def _apply(args: argparse.Namespace) -> int:
    from primia.api.segment import REGIONS, apply_segmenter

    applied = apply_segmenter(
        args.segmenter,
        args.data,
        args.out,
        site=args.site,
        device=args.device,
        overwrite=args.overwrite,
        format=args.format,
    )
    shares = ", ".join(
        f"{region} {share:.1%}" for region, share in zip(REGIONS, applied.foreground, strict=True)
    )
    print(f"masks of {applied.images} images (mean area: {shares}); manifest {applied.manifest}")
    return 0
