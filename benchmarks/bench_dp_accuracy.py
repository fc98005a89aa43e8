"""Figure: what each DP technique costs or buys in test AUROC, at the patient level.

One invocation, same data, splits, model and optimiser; only the DP settings differ, in
this order (an ablation):

* non-private;
* ε = 3, **example**-level (each image a unit: what primia did before issue 25);
* ε = 1, 3, 8, **patient**-level (all of a patient's images sampled and clipped together);
* ε = 3, patient-level with augmentation multiplicity K (``--augmentations``).

Prints each run's mean test AUROC, its ratio to the non-private run, the ε spent, the
seconds, and the machine's load beside them. Single runs vary: the DP noise is, by design,
not seeded. Issue 25's goal: patient-level ε = 3 at least 0.95× the non-private AUROC.

    python benchmarks/bench_dp_accuracy.py                       # 64 px, 3 × 100 × 4 images
    python benchmarks/bench_dp_accuracy.py --size 128 --epochs 10
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from machine import CpuWatch, load_average

from primia.data.synth import SynthConfig, write_dataset
from primia.train import DPConfig, TrainConfig, train_local


def runs(augmentations: int) -> list[tuple[str, DPConfig]]:
    """The ablation's rows, in order."""

    def dp(epsilon: float, **extra: Any) -> DPConfig:
        return DPConfig(enabled=True, epsilon=epsilon, epsilon_budget=1e6, **extra)

    return [
        ("non-private", DPConfig()),
        ("ε=3 example", dp(3.0, privacy_unit="example")),
        ("ε=1 patient", dp(1.0)),
        ("ε=3 patient", dp(3.0)),
        ("ε=8 patient", dp(8.0)),
        (
            f"ε=3 patient K={augmentations}",
            dp(3.0, augmentation_multiplicity=augmentations),
        ),
    ]


def share(watch: CpuWatch) -> str:
    foreign = watch.foreign_share()
    return "n/a" if foreign is None else f"{foreign:.0%} of the CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--patients-per-site", type=int, default=100)
    parser.add_argument("--images-per-patient", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--width", type=int, default=16, help="ResNet-9 base width")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--augmentations", type=int, default=2, help="K of the last row")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average before: {load_average()}")

    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "data"
        write_dataset(
            data,
            SynthConfig(
                sites=args.sites,
                patients_per_site=args.patients_per_site,
                images_per_patient=args.images_per_patient,
                size=args.size,
                seed=0,
            ),
            progress=False,
        )
        baseline = None
        for number, (label, dp) in enumerate(runs(args.augmentations)):
            started = time.perf_counter()
            watch = CpuWatch()
            if dp.enabled:  # each run its own ledger: the budget is not what is measured
                dp = dataclasses.replace(dp, ledger=Path(scratch) / f"ledger{number}.jsonl")
            result = train_local(
                TrainConfig(
                    data=data,
                    out=Path(scratch) / f"run{number}",
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
            )
            assert result.test is not None
            auroc = result.test.mean_auroc or float("nan")
            baseline = auroc if baseline is None else baseline
            spent = f"{result.privacy.epsilon:.2f}" if result.privacy else "∞"
            print(
                f"{label:>20}: test mean AUROC {auroc:.3f} ({auroc / baseline:.3f}× non-private); "
                f"ε spent {spent}; {time.perf_counter() - started:.0f} s; "
                f"load {load_average()}; other programs {share(watch)}",
                flush=True,
            )
    print(
        f"ResNet-9 (width {args.width}) at {args.size} px, {args.sites} sites × "
        f"{args.patients_per_site} patients × {args.images_per_patient} images, "
        f"{args.epochs} epochs, Adam {args.lr:g}, batch {args.batch_size}"
    )


if __name__ == "__main__":
    main()
