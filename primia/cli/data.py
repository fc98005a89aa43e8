"""``primia data``: make and inspect datasets. ``primia data synth`` writes synthetic
radiographs; ``primia data inspect`` says what a dataset folder holds."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from primia.cli.commands import command_help
from primia.cli.groups import print_help
from primia.data import FORMATS, Inspection, ReadOptions, inspect_dataset
from primia.data.collections import Uncertain, Views, Vote
from primia.data.synth import FINDINGS, SynthConfig, SynthSummary, write_dataset
from primia.files import atomic_write_bytes

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
        description="Make and inspect datasets. Run 'primia data synth --help' or "
        "'primia data inspect --help' for the options.",
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
    synth.add_argument(
        "--masks",
        action="store_true",
        help="also write lung and heart masks (0/255 PNG) beside each image, listed in the "
        "manifest's mask_lungs and mask_heart columns",
    )
    synth.add_argument("--no-progress", action="store_true", help="no progress bar")
    synth.set_defaults(handler=run_synth)
    _register_inspect(commands)


INSPECT_EPILOG = """\
formats (detected when unambiguous): manifest, folder, nih (Data_Entry_2017.csv), chexpert
(train.csv/valid.csv), mimic (mimic-cxr-2.0.0-*.csv), vindr (image_labels_train.csv),
rsna (stage_2_train_labels.csv).

examples:
  primia data inspect data/ChestX-ray14
  primia data inspect data/CheXpert --uncertain zeros --json chexpert.json
  primia data inspect data/rsna --format rsna --views all --no-decode
"""


def add_read_options(parser: argparse.ArgumentParser) -> None:
    """``--format`` and the public collections' reading options (docs/data.md)."""
    parser.add_argument(
        "--format",
        choices=FORMATS,
        help="the dataset's layout; detected from its files when left out",
    )
    parser.add_argument(
        "--uncertain",
        choices=[u.value for u in Uncertain],
        default=Uncertain.ONES.value,
        help="CheXpert/MIMIC uncertain (-1) labels: ones (U-Ones), zeros (U-Zeros) or ignore "
        "(leave such images out) (default ones)",
    )
    parser.add_argument(
        "--vote",
        choices=[v.value for v in Vote],
        default=Vote.MAJORITY.value,
        help="VinDr-CXR readers' votes: majority (more than half) or any (default majority)",
    )
    parser.add_argument(
        "--views",
        choices=[v.value for v in Views],
        default=Views.FRONTAL.value,
        help="frontal (PA, AP) only, or all views (default frontal)",
    )


def read_options(args: argparse.Namespace) -> ReadOptions:
    return ReadOptions(uncertain=args.uncertain, vote=args.vote, views=args.views)


def _register_inspect(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    inspect = commands.add_parser(
        "inspect",
        help="say what a dataset folder holds (images, patients, labels, subgroups)",
        description="Read a dataset as training would and print what was found: images, "
        "patients, images per patient, label prevalence, views, sexes, ages, sites, splits, "
        "images left out (missing, lateral, uncertain) and files that cannot be decoded.",
        epilog=INSPECT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inspect.add_argument("path", type=Path, metavar="DIR", help="the dataset folder or CSV")
    add_read_options(inspect)
    inspect.add_argument(
        "--json",
        type=Path,
        metavar="FILE",
        help="also write the summary as JSON to FILE ('-' for standard output only)",
    )
    inspect.add_argument(
        "--no-decode",
        action="store_true",
        help="read the tables only; skip decoding every image to find unreadable files",
    )
    inspect.set_defaults(handler=run_inspect)


def run_inspect(args: argparse.Namespace) -> int:
    found = inspect_dataset(
        args.path, format=args.format, options=read_options(args), decode=not args.no_decode
    )
    text = json.dumps(found.to_dict(), indent=2)
    if args.json is not None and str(args.json) == "-":
        sys.stdout.write(text + "\n")
        return 0
    print_inspection(found, Console())
    if args.json is not None:
        atomic_write_bytes(args.json, (text + "\n").encode())
    return 0


def _listed(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count:,}" for name, count in counts.items()) or "none"


def print_inspection(found: Inspection, console: Console) -> None:
    """The summary as a two-column table."""
    table = Table(title=f"{found.path} ({found.format})", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    per = found.images_per_patient
    table.add_row("images", f"{found.images:,} ({found.task})")
    table.add_row("patients", f"{found.patients:,}")
    table.add_row(
        "images per patient", f"min {per['min']:g}, median {per['median']:g}, max {per['max']:g}"
    )
    for name, share in found.prevalence.items():
        table.add_row(name, f"{share:.1%} ({found.positives[name]:,})")
    table.add_row("views", _listed(found.views))
    table.add_row("sexes", _listed(found.sexes))
    ages = found.ages
    table.add_row(
        "ages",
        f"{ages['known']:,} known, {ages['min']}-{ages['max']}, median {ages['median']:g}"
        if ages["known"]
        else "unknown",
    )
    table.add_row("sites", _listed(found.sites))
    table.add_row("splits", _listed(found.splits))
    table.add_row("left out", _listed(found.skipped))
    decoded = f"{found.unreadable:,}" if found.decoded else "not checked (--no-decode)"
    table.add_row("unreadable files", decoded)
    for item in found.unreadable_files:
        table.add_row("", item["error"])
    console.print(table)


def run_synth(args: argparse.Namespace) -> int:
    config = SynthConfig(
        sites=args.sites,
        patients_per_site=args.patients_per_site,
        images_per_patient=args.images_per_patient,
        size=args.size,
        seed=args.seed,
    )
    summary = write_dataset(
        args.out,
        config,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        masks=args.masks,
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
