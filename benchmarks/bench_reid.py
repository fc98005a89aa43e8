"""Re-identification of synthetic radiographs: verification AUROC, retrieval, epoch time.

A Siamese verifier (GroupNorm ResNet-9, width 16) trained on same/different-patient pairs
of the training patients, judged on unseen test patients; the figure PriCheXy-Net's
anonymization is measured against (its unanonymized baseline on ChestX-ray14: 81.8%
verification AUROC after the attacker retrains; Packhäuser et al. 2022 report 0.994 for a
verifier trained at full scale).

    python benchmarks/bench_reid.py            # 64 px, 300 patients x 4 images, ~5 min
    python benchmarks/bench_reid.py --quick    # 32 px, small CNN
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from machine import CpuWatch, load_average

from primia.audit.reid import ReidConfig, run_reid_audit
from primia.data.synth import SynthConfig, write_dataset


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    size, patients = (32, 120) if args.quick else (64, 300)
    model, width = ("cnn", 8) if args.quick else ("resnet9", 16)
    epochs = 5 if args.quick else 10
    with tempfile.TemporaryDirectory(prefix="primia-reid-") as temporary:
        data = Path(temporary) / "data"
        write_dataset(
            data,
            SynthConfig(sites=1, patients_per_site=patients, images_per_patient=4, size=size),
            progress=False,
        )
        watch = CpuWatch()
        started = time.perf_counter()
        audit, _ = run_reid_audit(
            ReidConfig(data=data, model=model, width=width, image_size=size, epochs=epochs)
        )
        seconds = time.perf_counter() - started
    print(
        f"{os.cpu_count()} CPUs, load {load_average()}; other programs used "
        f"{_share(watch.foreign_share())} of the CPUs meanwhile"
    )
    print(
        f"{patients} synthetic patients x 4 images at {size} px (one site); {model} "
        f"(width {width}); {epochs} epochs x 2000 pairs"
    )
    auroc = audit.auroc
    print(
        f"verification AUROC {auroc.value:.3f} [{auroc.lower:.3f}, {auroc.upper:.3f}] on "
        f"{audit.test_patients} unseen patients ({audit.positive_pairs} same-patient, "
        f"{audit.negative_pairs} different pairs)"
    )
    print(
        f"retrieval over {audit.test_images} images: precision@1 {audit.precision_at_1:.3f} "
        f"(chance {3 / (audit.test_images - 1):.3f}), mAP@R {audit.map_at_r:.3f}"
    )
    print(
        f"best epoch {audit.best_epoch}; {audit.seconds_per_epoch:.1f} s per epoch; "
        f"{seconds:.0f} s in all"
    )
    return 0


def _share(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.0%}"


if __name__ == "__main__":
    sys.exit(main())
