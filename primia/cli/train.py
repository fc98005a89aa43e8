"""``primia train-local``: train one model on one dataset, with or without DP."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from primia.cli.commands import command_help
from primia.cli.groups import THREADS_HELP
from primia.config import from_mapping, read_toml
from primia.errors import ConfigError
from primia.train import TrainConfig, TrainResult, train_local

EPILOG = """\
examples:
  primia train-local --data data/synth --model resnet9 --epochs 3 \\
      --dp --epsilon 3 --delta 1e-5 --out runs/dp
  primia train-local --data data/synth --model cnn --epochs 2 --out runs/plain
  primia train-local --config train.toml --epochs 5        # flags override the file

With --dp, the run is reserved in the dataset's privacy ledger (privacy-ledger.jsonl
beside the data) before the first step; a plan that would exceed --epsilon-budget is
refused. RUN_DIR receives config.toml, metrics.jsonl, tb/ (TensorBoard), result.json
and model.safetensors.
"""

# (flag, config key, type, help); nested keys use a dot ("dp.epsilon").
OPTIONS: list[tuple[str, str, type, str]] = [
    (
        "--data",
        "data",
        Path,
        "dataset: a folder with manifest.csv, a CSV manifest, class folders, or a public "
        "collection as downloaded (NIH, CheXpert, MIMIC-CXR-JPG, VinDr-CXR, RSNA)",
    ),
    ("--format", "format", str, "the dataset's layout (docs/data.md); detected when left out"),
    ("--uncertain", "uncertain", str, "CheXpert/MIMIC -1 labels: ones, zeros or ignore"),
    ("--vote", "vote", str, "VinDr-CXR readers' votes: majority or any (default majority)"),
    ("--views", "views", str, "frontal (PA, AP; the default) or all views"),
    ("--out", "out", Path, "run directory for metrics, TensorBoard events and checkpoints"),
    ("--model", "model", str, "architecture: resnet9, resnet18 or cnn (default resnet9)"),
    ("--width", "width", int, "base channel count of the model (default: the model's own)"),
    (
        "--init",
        "init",
        Path,
        "start from this checkpoint's weights (e.g. pre-trained on public or synthetic data); "
        "its model spec must match",
    ),
    (
        "--ema-decay",
        "ema_decay",
        float,
        "evaluate and save the moving average of the weights with this decay, e.g. 0.999 "
        "(free in ε; default 0: off)",
    ),
    (
        "--image-size",
        "image_size",
        int,
        "images are resized to this many pixels square (default 64)",
    ),
    ("--epochs", "epochs", int, "passes over the training split (default 3)"),
    (
        "--batch-size",
        "batch_size",
        int,
        "logical batch size; with DP, the expected size (default 32)",
    ),
    (
        "--physical-batch-size",
        "max_physical_batch_size",
        int,
        "most images per forward pass (default 32)",
    ),
    ("--optimizer", "optimizer", str, "adam or sgd (default adam)"),
    ("--lr", "lr", float, "learning rate (default 1e-3)"),
    ("--seed", "seed", int, "seed of splits, initialisation and sampling (default 0)"),
    ("--device", "device", str, "auto (CUDA when present), cpu or cuda:N (default auto)"),
    ("--threads", "threads", int, THREADS_HELP),
    ("--val-fraction", "val_fraction", float, "share of patients for validation (default 0.15)"),
    ("--test-fraction", "test_fraction", float, "share of patients for testing (default 0.15)"),
    ("--epsilon", "dp.epsilon", float, "target ε of this run with --dp (default 3)"),
    ("--delta", "dp.delta", float, "target δ with --dp (default 1e-5)"),
    ("--max-grad-norm", "dp.max_grad_norm", float, "per-sample clipping norm C (default 1.0)"),
    ("--accountant", "dp.accountant", str, "prv (tight, default) or rdp"),
    (
        "--grad-sample-mode",
        "dp.grad_sample_mode",
        str,
        "per-sample gradients: fast (default) or Opacus: hooks, functorch, ew, ghost",
    ),
    (
        "--privacy-unit",
        "dp.privacy_unit",
        str,
        "what ε protects with --dp: patient (all of a patient's images sampled and clipped "
        "together; default) or example (each image alone)",
    ),
    (
        "--max-images-per-patient",
        "dp.max_images_per_patient",
        int,
        "with --privacy-unit patient, the most images of a patient a step uses (default 16)",
    ),
    (
        "--augmentations",
        "dp.augmentation_multiplicity",
        int,
        "K random shifts of each image averaged before clipping, free in ε (default 1: none)",
    ),
    ("--epsilon-budget", "dp.epsilon_budget", float, "the dataset's total ε budget (default 10)"),
    ("--ledger", "dp.ledger", Path, "privacy ledger file (default: beside the data)"),
]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train-local",
        help=command_help("train-local"),
        description="Train a model on one local dataset. With --dp: DP-SGD through Opacus "
        "(per-sample clipping, Gaussian noise calibrated to --epsilon, Poisson sampling).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_training_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """train-local's settings (also the base configuration of ``primia tune``)."""
    parser.add_argument("--config", type=Path, help="a TOML file of the same settings")
    for flag, _key, kind, text in OPTIONS:
        parser.add_argument(flag, type=kind, default=None, help=text)
    parser.add_argument(
        "--label-columns",
        nargs="+",
        metavar="NAME",
        help="the manifest's label columns, in this order (default: all 0/1 columns)",
    )
    parser.add_argument("--labels", help="deprecated spelling of --label-columns (comma-separated)")
    parser.add_argument("--dp", action="store_true", default=None, help="train with DP-SGD")
    parser.add_argument(
        "--ws", action="store_true", help="weight-standardised convolutions (with GroupNorm)"
    )
    parser.add_argument(
        "--skip-missing",
        action="store_true",
        help="leave out a public collection's rows whose image is missing (partial downloads)",
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's config: the --config file if any, overridden by the flags given."""
    values: dict[str, Any] = {}
    if args.config is not None:
        values = read_toml(args.config)
    for flag, key, _kind, _text in OPTIONS:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            _set(values, key, value)
    if args.labels is not None:
        print(
            "primia: warning: --labels is deprecated; use --label-columns NAME [NAME ...], "
            "the name every command and configuration uses",
            file=sys.stderr,
        )
    names = [*(args.label_columns or []), *([args.labels] if args.labels else [])]
    if names:
        values["label_columns"] = [
            label.strip() for name in names for label in name.split(",") if label.strip()
        ]
    if args.dp:
        _set(values, "dp.enabled", True)
    if args.ws:
        values["ws"] = True
    if args.skip_missing:
        values["skip_missing"] = True
    if getattr(args, "no_progress", False):
        values["progress"] = False
    for required in ("data", "out"):
        if required not in values:
            raise ConfigError(f"--{required} is required (or set {required!r} in --config)")
    return from_mapping(TrainConfig, values, where="train-local")


def run(args: argparse.Namespace) -> int:
    result = train_local(config_from_args(args))
    print_summary(result, Console())
    return 0


def print_summary(result: TrainResult, console: Console) -> None:
    table = Table(title=f"training finished in {result.seconds:.0f} s")
    table.add_column("label")
    table.add_column("validation AUROC", justify="right")
    table.add_column("test AUROC", justify="right")
    for name, value in result.validation.auroc.items():
        test_value = result.test.auroc.get(name) if result.test else None
        table.add_row(name, _fmt(value), _fmt(test_value))
    table.add_row(
        "[bold]mean",
        _fmt(result.validation.mean_auroc),
        _fmt(result.test.mean_auroc if result.test else None),
    )
    console.print(table)
    if result.privacy is None:
        console.print("privacy: none (non-private training; do not share this model)")
    else:
        p = result.privacy
        console.print(
            f"privacy: ε = {p.epsilon:.2f} at δ = {p.delta:g} over {p.steps} steps "
            f"(σ = {p.noise_multiplier:.3f}, q = {p.sample_rate:.4f}, C = {p.max_grad_norm}, "
            f"{p.accountant} accountant)"
        )
        console.print(
            f"dataset ledger: {p.dataset_spent_epsilon:.2f} of ε {p.dataset_budget_epsilon:g} "
            f"spent ({p.ledger})"
        )
    console.print(f"model: {result.model_path}")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def _set(values: dict[str, Any], key: str, value: Any) -> None:
    *tables, leaf = key.split(".")
    for table in tables:
        values = values.setdefault(table, {})
    values[leaf] = value
