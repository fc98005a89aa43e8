"""The synthetic DP-training setting that the AUROC benchmarks share (their flags)."""

from __future__ import annotations

import argparse


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
