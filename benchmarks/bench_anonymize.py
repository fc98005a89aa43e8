"""Anonymization on synthetic radiographs: re-identification and classification AUROC
before and after, for three flow-field bounds μ and the noise generator; epoch time.

Each anonymizer is trained (identity pre-training, warm-up, adversarial epochs) on the
training patients and evaluated as PriCheXy-Net was: a verifier retrained from scratch on
anonymized-vs-real pairs (the linkage attack, 3 runs, mean ± std) against the same attack
on real images, and a classifier trained on real images scoring original vs anonymized
test images (paired bootstrap). PriCheXy-Net (256 px, ChestX-ray14): 81.8% → 57.7%
verification AUROC with little loss of classification AUROC.

    python benchmarks/bench_anonymize.py        # 32 px, small CNNs, 4.5 min on 2 cores
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from machine import CpuWatch, load_average

from primia.anonymize.evaluation import evaluate_anonymizer
from primia.anonymize.training import AnonymizerConfig, train_anonymizer
from primia.audit.reid import ReidConfig
from primia.data.synth import SynthConfig, write_dataset

SETTINGS = [("flow", 0.01), ("flow", 0.05), ("flow", 0.1), ("noise", 0.1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=8, help="adversarial epochs")
    parser.add_argument("--runs", type=int, default=3, help="linkage attacks per anonymizer")
    args = parser.parse_args()
    size = args.image_size
    watch = CpuWatch()
    rows = []
    with tempfile.TemporaryDirectory(prefix="primia-anonymize-") as temporary:
        data = Path(temporary) / "data"
        write_dataset(
            data,
            SynthConfig(sites=1, patients_per_site=args.patients, images_per_patient=4, size=size),
            progress=False,
        )
        attacker = ReidConfig(
            data=data, model="cnn", width=16, image_size=size, epochs=6, pairs_per_epoch=1500
        )
        for kind, value in SETTINGS:
            started = time.perf_counter()
            trained = train_anonymizer(
                AnonymizerConfig(
                    data=data,
                    out=Path(temporary) / f"{kind}-{value}",
                    generator=kind,
                    mu=value,
                    noise_strength=value,
                    image_size=size,
                    backbone="cnn",
                    backbone_width=16,
                    epochs=args.epochs,
                    pairs_per_epoch=1500,
                )
            )
            training = time.perf_counter() - started
            evaluation = evaluate_anonymizer(
                trained.generator_path, data, runs=args.runs, reid=attacker, classifier_epochs=8
            )
            rows.append((kind, value, trained, training, evaluation))
    print(
        f"{os.cpu_count()} CPUs, load {load_average()}; other programs used "
        f"{_share(watch.foreign_share())} of the CPUs meanwhile"
    )
    print(
        f"{args.patients} synthetic patients x 4 images at {size} px; attacker and "
        f"classifier: cnn (width 16); {args.epochs} adversarial epochs; {args.runs} "
        "linkage attacks each"
    )
    print(
        "generator       re-id AUROC real   anonymized (mean ± std)   class. AUROC "
        "orig -> anon (diff, P)          s/adv. epoch  training s"
    )
    for kind, value, trained, training, evaluation in rows:
        mean, std = evaluation.linkage_auroc
        document = evaluation.as_dict()["classification"]
        label = f"{kind} {'mu' if kind == 'flow' else 's'}={value:g}"
        print(
            f"{label:<15} {evaluation.baseline.auroc.value:>17.3f}   "
            f"{mean:>10.3f} ± {std:.3f}        "
            f"{document['original']['value']:.3f} -> {document['anonymized']['value']:.3f} "
            f"({document['difference']['difference']:+.3f}, "
            f"P={document['difference']['p_value']:.3f})   "
            f"{trained.seconds_per_adversarial_epoch:>10.1f}  {training:>10.0f}"
        )
    return 0


def _share(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.0%}"


if __name__ == "__main__":
    sys.exit(main())
