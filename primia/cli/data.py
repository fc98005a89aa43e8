"""``primia data``: make datasets. ``primia data synth`` writes synthetic radiographs."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from primia.cli.commands import command_help
from primia.cli.groups import print_help
from primia.data.synth import FINDINGS, SynthConfig, SynthSummary, write_dataset

SYNTH_DESCRIPTION = """\
Write a synthetic multi-site chest radiograph dataset: 8-bit grey PNGs in
OUT/images/<site>/<patient>_<k>.png and a manifest, OUT/manifest.csv, with the columns
path,patient_id,site,view,sex,age,pneumonia,effusion,cardiomegaly,nodule.

Each patient has a stable anatomy; each image varies pose, exposure and noise; each site
has its own intensity curve, noise, blur and burned-in marker. The four findings are
binary labels, each present in roughly 20-40 % of images. The same seed always writes
the same images.
"""

SYNTH_EPILOG = """\
example:
  primia data synth --out data/synth
  primia data synth --out data/small --sites 2 --patients-per-site 10 --size 64 --seed 7
  primia train-local --data data/synth --dp --epsilon 3 --out runs/local
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``primia data`` and its subcommands to the top-level parser."""
    parser = subparsers.add_parser(
        "data",
        help=command_help("data"),
        description="Make datasets. Run 'primia data synth --help' for the options.",
    )
    parser.set_defaults(handler=print_help(parser))
    commands = parser.add_subparsers(title="data commands", metavar="COMMAND")

    defaults = SynthConfig()
    synth = commands.add_parser(
        "synth",
        help="write a synthetic multi-site chest radiograph dataset",
        description=SYNTH_DESCRIPTION,
        epilog=SYNTH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    synth.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        required=True,
        help="folder to write into; created if missing (required)",
    )
    synth.add_argument(
        "--sites",
        type=int,
        metavar="N",
        default=defaults.sites,
        help="hospitals, 1-24, each with its own scanner look and burned-in marker "
        f"(default {defaults.sites})",
    )
    synth.add_argument(
        "--patients-per-site",
        type=int,
        metavar="N",
        default=defaults.patients_per_site,
        help=f"patients at each site (default {defaults.patients_per_site})",
    )
    synth.add_argument(
        "--images-per-patient",
        type=int,
        metavar="N",
        default=defaults.images_per_patient,
        help=f"radiographs of each patient (default {defaults.images_per_patient})",
    )
    synth.add_argument(
        "--size",
        type=int,
        metavar="PX",
        default=defaults.size,
        help=f"image side in pixels, 32-1024 (default {defaults.size})",
    )
    synth.add_argument(
        "--seed",
        type=int,
        metavar="N",
        default=defaults.seed,
        help=f"random seed; the same seed writes the same images (default {defaults.seed})",
    )
    synth.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a dataset already in --out (its images and manifest); without it, a "
        "folder that holds a manifest.csv is refused",
    )
    synth.add_argument("--no-progress", action="store_true", help="no progress bar")
    synth.set_defaults(handler=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    config = SynthConfig(
        sites=args.sites,
        patients_per_site=args.patients_per_site,
        images_per_patient=args.images_per_patient,
        size=args.size,
        seed=args.seed,
    )
    summary = write_dataset(
        args.out, config, progress=not args.no_progress, overwrite=args.overwrite
    )
    print_synth_summary(summary, config, Console())
    return 0


def print_synth_summary(summary: SynthSummary, config: SynthConfig, console: Console) -> None:
    """A short table: what was written, where, and how often each finding occurs."""
    table = Table(title="synthetic radiographs", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("images", f"{summary.n_images:,} of {config.size}x{config.size} px")
    table.add_row("patients", f"{summary.n_patients:,}")
    table.add_row("sites", ", ".join(summary.sites))
    for finding in FINDINGS:
        table.add_row(finding, f"{summary.prevalence[finding]:.0%} of images")
    table.add_row("manifest", str(summary.manifest))
    table.add_row("time", f"{summary.seconds:.1f} s")
    console.print(table)
