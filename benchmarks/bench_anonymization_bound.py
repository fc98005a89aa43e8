"""Where identity lives on synthetic radiographs (issue 26): the linkage attack when only
the lungs and heart are shown, and when only the rest is.

A segmentation-guided anonymizer at inside strength 0 leaves the lungs and the heart
untouched, so whatever identifies a patient there (lung outline, ribs over the lungs,
heart size and position) stays for the attacker. Its best case is to erase the rest. This
script measures that best case: the linkage attack of ``bench_anonymization.py`` (a
verifier retrained from scratch on (shown image, real image) pairs, judged on unseen
patients) when the first image keeps only the pixels inside the lung and heart masks
(the rest black), and, for the other half, only the pixels outside them. The first AUROC
bounds from below what any seg-guided anonymizer at inside strength 0 can reach against
this attacker (an anonymizer changes only the outside; erasing it removes everything the
outside can tell).

    python benchmarks/bench_anonymization_bound.py    # same data and attacker as the table
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from machine import CpuWatch, load_average

from primia.anonymize.evaluation import linkage_spread, mask_lookup
from primia.audit.reid import ReidAudit, ReidConfig, run_reid_audit
from primia.data.synth import SynthConfig, write_dataset


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--model", default="resnet9")
    parser.add_argument("--model-width", type=int, default=8)
    parser.add_argument("--runs", type=int, default=2, help="attacks per view (seeds)")
    parser.add_argument("--attack-epochs", type=int, default=3)
    parser.add_argument("--attack-pairs", type=int, default=800)
    args = parser.parse_args()
    watch = CpuWatch()
    started = time.perf_counter()
    print(
        f"{args.patients} synthetic patients x 4 images at {args.image_size} px; linkage "
        f"attack {args.model} width {args.model_width}, {args.attack_epochs} epochs x "
        f"{args.attack_pairs} pairs, {args.runs} seeds per view",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="primia-anonymization-bound-") as temporary:
        data = Path(temporary)
        write_dataset(
            data,
            SynthConfig(
                sites=1, patients_per_site=args.patients, images_per_patient=4, size=args.image_size
            ),
            progress=False,
            masks=True,
        )
        masks_of = mask_lookup(data, args.image_size, None)
        attacker = ReidConfig(
            data=data,
            model=args.model,
            width=args.model_width,
            image_size=args.image_size,
            epochs=args.attack_epochs,
            pairs_per_epoch=args.attack_pairs,
        )
        views: dict[str, Callable[[torch.Tensor], torch.Tensor] | None] = {
            "the real image": None,
            "only lungs and heart (the rest black)": lambda x: _keep(x, masks_of(x), True),
            "only outside lungs and heart": lambda x: _keep(x, masks_of(x), False),
        }
        print("| first image of each pair | linkage AUROC (mean ± std over seeds) |")
        print("| --- | ---: |")
        for name, view in views.items():
            audits: list[ReidAudit] = [
                run_reid_audit(dataclasses.replace(attacker, seed=seed), transform=view)[0]
                for seed in range(args.runs)
            ]
            mean, std = linkage_spread(audits)
            values = ", ".join(f"{a.auroc.value:.3f}" for a in audits)
            print(f"| {name} | {mean:.3f} ± {std:.3f} ({values}) |", flush=True)
    print(
        f"{os.cpu_count()} CPUs, load {load_average()}; other programs used "
        f"{_share(watch.foreign_share())} of the CPUs meanwhile; "
        f"{time.perf_counter() - started:.0f} s in all"
    )
    return 0


def _keep(images: torch.Tensor, masks: torch.Tensor, inside: bool) -> torch.Tensor:
    """``uint8[N, 1, S, S]`` with the pixels inside (or outside) any mask kept, the rest 0."""
    region = masks.amax(dim=1, keepdim=True).bool()
    return torch.where(region if inside else ~region, images, torch.zeros_like(images))


def _share(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.0%}"


if __name__ == "__main__":
    sys.exit(main())
