"""The synthetic DP-training setting that the AUROC benchmarks share (their flags)."""

from __future__ import annotations

import argparse
from pathlib import Path

from primia.data.synth import SynthConfig, write_dataset
from primia.train import DPConfig, TrainConfig


def add_setting_arguments(
    parser: argparse.ArgumentParser, *, patients: int, size: int, width: int, epochs: int
) -> None:
    """Data (synthetic sites × patients × images at a size), ResNet-9's width, the
    optimiser's epochs, batch size and lr, and torch's threads."""
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--patients-per-site", type=int, default=patients)
    parser.add_argument("--images-per-patient", type=int, default=4)
    parser.add_argument("--size", type=int, default=size)
    parser.add_argument("--width", type=int, default=width, help="ResNet-9 base width")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=2)


def write_setting_data(args: argparse.Namespace, path: Path, *, seed: int = 0) -> Path:
    """The setting's synthetic sites at ``path`` (``seed`` draws another population)."""
    config = SynthConfig(
        sites=args.sites,
        patients_per_site=args.patients_per_site,
        images_per_patient=args.images_per_patient,
        size=args.size,
        seed=seed,
    )
    write_dataset(path, config, progress=False)
    return path


def setting_config(args: argparse.Namespace, data: Path, out: Path, dp: DPConfig) -> TrainConfig:
    """Local training of the setting's ResNet-9 on ``data`` with ``dp``."""
    return TrainConfig(
        data=data,
        out=out,
        model="resnet9",
        width=args.width,
        image_size=args.size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_physical_batch_size=64,
        lr=args.lr,
        threads=args.threads,
        progress=False,
        dp=dp,
    )
