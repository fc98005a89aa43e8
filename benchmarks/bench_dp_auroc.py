"""Figure: mean test AUROC of ResNet-9 on synthetic radiographs, non-private vs DP at ε = 3.

Both runs use the same data, splits, model, optimiser and epochs; only DP-SGD differs.
Prints both AUROCs and their ratio. The DP model must learn: AUROC clearly above 0.5.

    python benchmarks/bench_dp_auroc.py [--patients-per-site 200] [--size 128] [--epochs 10]

About 15 minutes on 2 CPU cores (two trainings of 1,680 images at 128 px).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from dp_setting import add_setting_arguments, setting_config, write_setting_data

from primia.train import DPConfig, train_local


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setting_arguments(parser, patients=200, size=128, width=16, epochs=10)
    parser.add_argument("--epsilon", type=float, default=3.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as scratch:
        data = write_setting_data(args, Path(scratch) / "data")
        results = {}
        for label, dp in (
            ("non-private", DPConfig()),
            (f"DP ε={args.epsilon:g}", DPConfig(enabled=True, epsilon=args.epsilon)),
        ):
            started = time.perf_counter()
            result = train_local(
                setting_config(args, data, Path(scratch) / label.replace(" ", "_"), dp)
            )
            assert result.test is not None
            results[label] = result.test.mean_auroc or float("nan")
            spent = result.privacy.epsilon if result.privacy else float("inf")
            per_label = ", ".join(f"{k} {v:.3f}" for k, v in result.test.auroc.items() if v)
            print(
                f"{label:>14}: test mean AUROC {results[label]:.3f} ({per_label}); "
                f"ε spent {spent:.2f}; {time.perf_counter() - started:.0f} s"
            )
    plain, private = results.values()
    print(
        f"ResNet-9 (width {args.width}) at {args.size} px, {args.sites} sites × "
        f"{args.patients_per_site} patients × {args.images_per_patient} images, "
        f"{args.epochs} epochs: AUROC DP/non-private = {private / plain:.3f}"
    )


if __name__ == "__main__":
    main()
