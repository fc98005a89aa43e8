"""``primia demo``: private training on synthetic radiographs, end to end."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from typing import Any

from rich.console import Console

from primia.cli.train import print_summary
from primia.demo import DemoSettings, run_demo

HELP = {
    "out": "folder for the synthetic data and the run (emptied if an earlier demo made it)",
    "sites": "synthetic hospitals",
    "patients_per_site": "patients per hospital",
    "images_per_patient": "radiographs per patient",
    "image_size": "image size in pixels",
    "model": "architecture: resnet9, resnet18 or cnn",
    "width": "base channel count of the model",
    "epochs": "training epochs",
    "batch_size": "expected batch size of the Poisson-sampled DP batches",
    "lr": "learning rate (Adam)",
    "epsilon": "target ε of the DP training",
    "delta": "target δ of the DP training",
    "seed": "seed of the data and the training",
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="synthesize radiographs and train a model on them with differential privacy",
        description="Synthesize a multi-site chest radiograph dataset, train a ResNet-9 on "
        "it with DP-SGD, and print AUROC per finding and the ε spent.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    defaults = DemoSettings()
    for field in fields(DemoSettings):
        if field.name == "progress":
            continue
        default = getattr(defaults, field.name)
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            type=type(default) if not isinstance(default, Path) else Path,
            default=default,
            help=HELP[field.name],
        )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    values = {f.name: getattr(args, f.name) for f in fields(DemoSettings) if f.name != "progress"}
    console = Console()
    console.print("[bold]primia demo[/]: synthetic radiographs, DP-SGD, privacy ledger")
    result = run_demo(DemoSettings(**values, progress=not args.no_progress))
    print_summary(result, console)
    return 0
