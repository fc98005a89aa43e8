"""Segmentation-guided anonymization (issue 26) on synthetic radiographs at 64 px:
re-identification and classification AUROC before and after, for the seg-guided flow
field, the plain flow field and the noise generator at three strengths each.

One dataset with anatomy masks; a lung/heart segmenter trained on it (its held-out Dice
printed); per training seed (``--seeds``) one generator per family and strength, trained
adversarially (identity pre-training, warm-up of verifier and classifier on real images,
adversarial epochs; auxiliary-classifier weight ``--utility-weight``); then one curve
evaluation over all of them: a verifier retrained from scratch on anonymized-vs-real
pairs (the linkage attack, ``--runs`` per generator) against the same attack on real
images, and one classifier (the judge) trained on real images scoring original vs
anonymized test images (paired bootstrap). Attacker and judge are ResNet-9s (``--model``):
the small CNN read the findings at AUROC 0.58–0.61, too weak for a utility loss to mean
anything. Each row is the mean ± std over training seeds. Goal: a linkage fall of at
least 0.24 (PriCheXy-Net: 0.818 → 0.577) with at most 0.03 loss of classification AUROC.

    python benchmarks/bench_anonymization.py                    # all three families
    python benchmarks/bench_anonymization.py --families seg     # one (run the three in
                                                                # parallel on more cores)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from machine import CpuWatch, load_average

from primia.anonymize.evaluation import AnonymizerCurve, evaluate_curve
from primia.anonymize.report import write_anonymization_report
from primia.anonymize.training import AnonymizerConfig, train_anonymizer
from primia.audit.reid import ReidConfig
from primia.data.synth import SynthConfig, write_dataset
from primia.segment.dataset import SegmentConfig, train_segmenter_on

GOAL_FALL, GOAL_LOSS = 0.24, 0.03


FAMILIES = {"seg": ("segmenter", "flow"), "flow": ("none", "flow"), "noise": ("none", "noise")}


@dataclass(frozen=True)
class Trained:
    """One trained generator of the table: its family, strength, weight and seed."""

    guide: str
    kind: str
    value: float
    weight: float
    seed: int
    path: Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3, help="adversarial epochs")
    parser.add_argument("--pairs", type=int, default=300, help="pairs per epoch")
    parser.add_argument(
        "--backbone",
        default="resnet9",
        help="the adversaries' backbone in training (a CNN of width 8 stays at chance)",
    )
    parser.add_argument("--width", type=int, default=8, help="the adversaries' width in training")
    parser.add_argument("--warmup-epochs", type=int, default=2)
    parser.add_argument(
        "--model", default="resnet9", help="the linkage attacker's and the judge's backbone"
    )
    parser.add_argument("--model-width", type=int, default=8, help="their width")
    parser.add_argument("--runs", type=int, default=1, help="linkage attacks per generator")
    parser.add_argument("--attack-epochs", type=int, default=3)
    parser.add_argument("--attack-pairs", type=int, default=800)
    parser.add_argument("--judge-epochs", type=int, default=10)
    parser.add_argument("--segmenter-steps", type=int, default=100)
    parser.add_argument("--utility-weight", type=float, default=4.0)
    parser.add_argument("--privacy-weight", type=float, default=3.0)
    parser.add_argument("--generator-lr", type=float, default=1e-3)
    parser.add_argument("--inside", type=float, default=0.0, help="seg-guided inside strength")
    parser.add_argument("--mu", type=float, nargs="+", default=(0.2, 0.4, 0.6))
    parser.add_argument("--noise", type=float, nargs="+", default=(0.05, 0.1, 0.25))
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=(0, 1), help="training seeds (mean ± std)"
    )
    parser.add_argument(
        "--families",
        nargs="+",
        choices=tuple(FAMILIES),
        default=tuple(FAMILIES),
        help="which generators (run families in separate processes to use more cores: "
        "the evaluation is deterministic, so their baselines and judges agree)",
    )
    parser.add_argument("--report", type=Path, help="also write the curve's report here")
    parser.add_argument(
        "--search-weights",
        type=float,
        nargs="+",
        metavar="W",
        help="instead: the seg-guided flow at the largest --mu with these auxiliary-"
        "classifier weights (the document recommends 1, 4, 8)",
    )
    args = parser.parse_args()
    size = args.image_size
    watch = CpuWatch()
    weight = args.utility_weight
    plan = [
        (*FAMILIES[family], value, weight)
        for family in args.families
        for value in (args.noise if family == "noise" else args.mu)
    ]
    if args.search_weights:
        plan = [("segmenter", "flow", max(args.mu), w) for w in args.search_weights]
    started = time.perf_counter()
    aux = "searched" if args.search_weights else f"{args.utility_weight:g}"
    print(
        f"{args.patients} synthetic patients x 4 images at {size} px; generator width 8, "
        f"adversaries {args.backbone} (width {args.width}), 1 pre-training and "
        f"{args.warmup_epochs} warm-up epoch(s), "
        f"{args.epochs} adversarial epochs x {args.pairs} pairs; generator Adam "
        f"{args.generator_lr:g}, loss weights privacy {args.privacy_weight:g} and "
        f"auxiliary classifier {aux}; training seeds {' '.join(map(str, args.seeds))}; "
        f"{args.runs} linkage attack(s) per generator ({args.model} width {args.model_width}, "
        f"{args.attack_epochs} epochs x {args.attack_pairs} pairs); the judge the same "
        f"backbone, {args.judge_epochs} epochs; seg-guided inside strength {args.inside:g} "
        "(lungs, heart); one curve evaluation (one attack on real images, one judge)",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="primia-anonymization-") as temporary:
        root = Path(temporary)
        data = root / "data"
        write_dataset(
            data,
            SynthConfig(sites=1, patients_per_site=args.patients, images_per_patient=4, size=size),
            progress=False,
            masks=True,
        )
        segmenter = train_segmenter_on(
            SegmentConfig(data=data, out=root / "seg", image_size=size, steps=args.segmenter_steps)
        )
        print(
            "segmenter held-out Dice: "
            + ", ".join(
                f"{r} {d:.3f} (all-foreground {t:.3f})"
                for r, d, t in zip(
                    segmenter.regions, segmenter.dice, segmenter.dice_all_foreground, strict=True
                )
            ),
            flush=True,
        )
        trained = []
        for seed in args.seeds:
            for guide, kind, value, utility_weight in plan:
                result = train_anonymizer(
                    AnonymizerConfig(
                        data=data,
                        out=root / f"{guide}-{kind}-{value}-{utility_weight}-{seed}",
                        generator=kind,  # type: ignore[arg-type]
                        mu=value,
                        noise_strength=value,
                        guide=guide,  # type: ignore[arg-type]
                        inside=(args.inside, args.inside),
                        segmenter=segmenter.path if guide == "segmenter" else None,
                        image_size=size,
                        backbone=args.backbone,
                        backbone_width=args.width,
                        generator_width=8,
                        pretrain_epochs=1,
                        warmup_epochs=args.warmup_epochs,
                        epochs=args.epochs,
                        pairs_per_epoch=args.pairs,
                        utility_weight=utility_weight,
                        privacy_weight=args.privacy_weight,
                        generator_lr=args.generator_lr,
                        seed=seed,
                    )
                )
                trained.append(
                    Trained(guide, kind, value, utility_weight, seed, result.generator_path)
                )
            print(
                f"seed {seed} trained ({time.perf_counter() - started:.0f} s so far, load "
                f"{load_average()})",
                flush=True,
            )
        attacker = ReidConfig(
            data=data,
            model=args.model,
            width=args.model_width,
            image_size=size,
            epochs=args.attack_epochs,
            pairs_per_epoch=args.attack_pairs,
        )
        curve = evaluate_curve(
            [t.path for t in trained],
            data,
            runs=args.runs,
            reid=attacker,
            classifier_epochs=args.judge_epochs,
        )
        if args.report is not None:
            write_anonymization_report(curve, args.report)
        _table(curve, trained, by_weight=bool(args.search_weights))
    print(
        f"{os.cpu_count()} CPUs, load {load_average()}; other programs used "
        f"{_share(watch.foreign_share())} of the CPUs meanwhile; "
        f"{time.perf_counter() - started:.0f} s in all"
    )
    return 0


def _table(curve: AnonymizerCurve, trained: list[Trained], *, by_weight: bool) -> None:
    """One row per generator setting: the mean ± std over training seeds of the linkage
    AUROC (each seed's mean over its attacks) and of the classification AUROC."""
    baseline = curve.baseline.auroc.value
    original = curve.original
    judged = ", ".join(
        f"{name} {original.overall.estimate('auroc', name).value:.3f}"
        for name in original.label_names
    )
    print(
        f"unanonymized: re-id AUROC {baseline:.3f}; classification AUROC "
        f"{original.overall.estimate('auroc').value:.3f} ({judged})",
        flush=True,
    )
    print(
        "| generator | re-id AUROC real → anonymized (mean ± std over seeds) | fall | "
        "class. AUROC orig → anon (mean ± std) | change (P per seed) | goal |\n"
        "| --- | --- | --- | --- | --- | --- |"
    )
    rows: dict[tuple[str, str, float, float], list[int]] = {}
    for index, t in enumerate(trained):
        rows.setdefault((t.guide, t.kind, t.value, t.weight), []).append(index)
    before = original.overall.estimate("auroc").value
    for (*_, weight), indices in rows.items():
        points = [curve.points[i] for i in indices]
        linkage = np.array([p.linkage_auroc[0] for p in points])
        classified = np.array([p.classification_auroc for p in points])
        changes = [p.utility.groups["all"].as_dict()["auroc"]["mean"] for p in points]
        fall = baseline - linkage.mean()
        change = classified.mean() - before
        met = fall >= GOAL_FALL and change >= -GOAL_LOSS
        p_values = ", ".join(
            "n/a" if c["p_value"] is None else f"{c['p_value']:.3f}" for c in changes
        )
        label = points[0].label + (f", w_u = {weight:g}" if by_weight else "")
        print(
            f"| {label} | {baseline:.3f} → {linkage.mean():.3f} ± {_std(linkage):.3f} | "
            f"{fall:+.3f} | {before:.3f} → {classified.mean():.3f} ± {_std(classified):.3f} | "
            f"{change:+.3f} ({p_values}) | {'met' if met else 'not met'} |",
            flush=True,
        )


def _std(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _share(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.0%}"


if __name__ == "__main__":
    sys.exit(main())
