"""Figure: the DP accuracy ablation: mean test AUROC, non-private and at each ε, adding the
techniques one at a time (example-level DP → patient-level → +WS → +EMA → +K augmentations
→ +pre-training).

Same synthetic data, splits, model, optimiser and epochs in every row; only the technique
changes. The first DP column protects each image (``privacy_unit="example"``, what primia
did before issue 25); every later one protects each patient, at the same ε, and adds to the
column before it. ``+K`` averages K random shifts of each image before clipping
(``--augmentations``); ``+pre-training`` starts from a model trained non-privately on
synthetic data of another seed (data the node need not protect).

    python benchmarks/bench_dp_accuracy.py [--size 64] [--epochs 4] [--epsilons 1 3 8]
        [--techniques patient-level +pre-training]

Prints one line per run (AUROC, ε spent, seconds, load average) and a Markdown table.
The issue's setting is --size 128 --patients-per-site 100 (about an hour on 2 quiet cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch
from dp_setting import add_setting_arguments, setting_config, write_setting_data
from machine import CpuWatch, load_average

from primia.train import DPConfig, TrainConfig, train_local

TECHNIQUES = ("example-level", "patient-level", "+WS", "+EMA", "+K", "+pre-training")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setting_arguments(parser, patients=100, size=64, width=8, epochs=4)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--ema-decay", type=float, default=0.9)
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 3.0, 8.0])
    parser.add_argument("--augmentations", type=int, default=2, help="K of the +K column")
    parser.add_argument(
        "--techniques",
        nargs="+",
        default=list(TECHNIQUES),
        choices=TECHNIQUES,
        help="the columns to run (each still adds to all the columns left of it)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average at start: {load_average()}")

    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)

        data = write_setting_data(args, scratch / "data-0")
        public = write_setting_data(args, scratch / "data-1", seed=1)
        base = setting_config(
            args,
            data,
            scratch / "run",
            DPConfig(max_grad_norm=args.max_grad_norm, epsilon_budget=1e6),
        )
        runs = 0

        def run(label: str, config: TrainConfig) -> float:
            nonlocal runs
            runs += 1
            watch, started = CpuWatch(), time.perf_counter()
            # each run its own ledger: the budget, and the unit of earlier runs, are not
            # what is measured
            dp = dataclasses.replace(config.dp, ledger=scratch / f"ledger-{runs}.jsonl")
            result = train_local(dataclasses.replace(config, out=scratch / f"run-{runs}", dp=dp))
            assert result.test is not None
            auroc = result.test.mean_auroc or float("nan")
            spent = result.privacy.epsilon if result.privacy else float("inf")
            share = watch.foreign_share()
            print(
                f"{label:>24}: test AUROC {auroc:.3f}, val {result.validation.mean_auroc:.3f}, "
                f"ε spent {spent:.2f}, {time.perf_counter() - started:.0f} s, other programs "
                f"{'n/a' if share is None else f'{share:.0%}'} of the CPUs, "
                f"load {load_average()}",
                flush=True,
            )
            return auroc

        plain = run("non-private", base)
        pretrained = scratch / "public-run"
        train_local(dataclasses.replace(base, data=public, out=pretrained, ws=True))
        table: dict[float, list[float]] = {}
        for epsilon in args.epsilons:
            dp = dataclasses.replace(base.dp, enabled=True, epsilon=epsilon)
            example = dataclasses.replace(dp, privacy_unit="example")
            augmented = dataclasses.replace(dp, augmentation_multiplicity=args.augmentations)
            averaged = dataclasses.replace(base, ws=True, ema_decay=args.ema_decay)
            steps = [
                dataclasses.replace(base, dp=example),
                dataclasses.replace(base, dp=dp),
                dataclasses.replace(base, dp=dp, ws=True),
                dataclasses.replace(averaged, dp=dp),
                dataclasses.replace(averaged, dp=augmented),
                dataclasses.replace(averaged, dp=augmented, init=pretrained),
            ]
            table[epsilon] = [
                run(f"ε={epsilon:g} {name}", config)
                for name, config in zip(TECHNIQUES, steps, strict=True)
                if name in args.techniques
            ]
    print(
        f"\nResNet-9 (width {args.width}) at {args.size} px, {args.sites} sites × "
        f"{args.patients_per_site} patients × {args.images_per_patient} images, "
        f"{args.epochs} epochs, batch {args.batch_size}, lr {args.lr:g}, C "
        f"{args.max_grad_norm:g}, EMA decay {args.ema_decay:g}, K {args.augmentations}; "
        f"non-private test AUROC {plain:.3f}; load at the end {load_average()}\n"
    )
    columns = [name for name in TECHNIQUES if name in args.techniques]
    print("| ε | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for epsilon, aurocs in table.items():
        cells = " | ".join(f"{a:.3f} ({a / plain:.2f}×)" for a in aurocs)
        print(f"| {epsilon:g} | {cells} |")


if __name__ == "__main__":
    main()
