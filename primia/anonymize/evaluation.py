"""How well an anonymizer works: what an attacker still links, what a classifier still reads.

* **Linkage attack** (PriCheXy-Net's evaluation): a verifier is trained *from scratch*
  on (anonymized image, real image) pairs of the training patients and judged on those of
  unseen test patients (:func:`primia.audit.reid.run_reid_audit` with the generator as
  its transform), ``runs`` times with different seeds; the verification AUROC is
  reported as mean ± standard deviation, beside the same attack on real images (the
  baseline the anonymizer must bring down).
* **Utility**: a classifier trained on the real training images (non-private, the fixed
  judge) scores the original and the anonymized test images; both evaluations use the
  same resamples, so their difference has a paired p-value (:mod:`primia.evaluate`).
* **The curve** (:func:`evaluate_curve`): both for several generators (strengths) against
  one baseline attack and one judge — linkage AUROC (mean ± std over runs) against
  classification AUROC on anonymized images, with the unanonymized point and
  PriCheXy-Net's published linkage AUROCs (:data:`PRICHEXY_NET`) as references.

A fall of this attacker's AUROC is not anonymity: it bounds what one trained verifier
links, not what a stronger attacker, another model or side information may link.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from primia.anonymize.apply import anonymize_images
from primia.anonymize.checkpoint import GeneratorSpec, load_generator
from primia.audit.reid import ImageTransform, ReidAudit, ReidConfig, run_reid_audit
from primia.data import load_splits, only_site, open_dataset
from primia.data.dataset import RadiographDataset
from primia.evaluate.evaluation import (
    Comparison,
    Evaluation,
    compare,
    evaluate_scores,
    finite_or_none,
)
from primia.evaluate.subgroups import attributes_of
from primia.models.checkpoint import ModelSpec
from primia.scoring.predict import predict_images
from primia.segment.masks import dataset_masks
from primia.train.local import fit, resolve_device
from primia.train.train_config import DPConfig, TrainConfig

PRICHEXY_NET = (0.818, 0.577)
"""PriCheXy-Net's published verification AUROC before and after anonymization (the
retrained attacker; 256 px ChestX-ray14, Packhäuser et al. 2023): a reference for the
linkage axis only, on other data and at another resolution."""


STRONG = 0.8
"""Below this AUROC on real images the attacker or the judge is too weak for its axis to
mean much: a weak attacker makes any anonymizer look good, and a judge that barely reads
the findings cannot show that anonymization costs them (a "loss ≤ 0.03" of a judge at
0.6 says nothing about diagnosis)."""


def weak_measures(attacker_auroc: float, judge_auroc: float) -> list[str]:
    """The cautions a curve needs when its attacker (linkage AUROC on real images) or its
    judge (classification AUROC on the original images) is below :data:`STRONG`."""
    cautions = []
    if attacker_auroc < STRONG:
        cautions.append(
            f"the attacker is weak (AUROC {attacker_auroc:.3f} on real images, below "
            f"{STRONG:g}): a stronger one (more epochs, pairs or a larger backbone) may "
            "link more of the anonymized images"
        )
    if judge_auroc < STRONG:
        cautions.append(
            f"the judge is weak (classification AUROC {judge_auroc:.3f} on the original "
            f"images, below {STRONG:g}): a small classification loss says little about "
            "what anonymization costs diagnosis (train it longer or on a larger backbone)"
        )
    return cautions


def linkage_spread(linkage: list[ReidAudit]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one run) of the runs' linkage AUROC."""
    values = [audit.auroc.value for audit in linkage]
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


@dataclass(frozen=True)
class CurvePoint:
    """One generator on the privacy–utility curve."""

    label: str
    kind: str
    guide: str
    strength: float
    """μ of a flow field, s of the noise generator."""
    linkage: list[ReidAudit]
    """The attack on anonymized images, one per run."""
    anonymized: Evaluation
    utility: Comparison
    """Anonymized minus original, per metric, with paired p-values."""

    @property
    def linkage_auroc(self) -> tuple[float, float]:
        """Mean and standard deviation of the linkage AUROC over the runs."""
        return linkage_spread(self.linkage)

    @property
    def classification_auroc(self) -> float:
        return self.anonymized.overall.estimate("auroc").value

    def as_dict(self) -> dict[str, Any]:
        mean, std = self.linkage_auroc
        return {
            "label": self.label,
            "kind": self.kind,
            "guide": self.guide,
            "strength": self.strength,
            "linkage_auroc": {
                "mean": mean,
                "std": std,
                "runs": [a.auroc.as_dict() for a in self.linkage],
            },
            "classification_auroc": self.anonymized.overall.estimate("auroc").as_dict(),
            "classification_difference": self.utility.groups["all"].as_dict()["auroc"]["mean"],
        }


@dataclass(frozen=True)
class AnonymizerCurve:
    """The privacy–utility curve: the unanonymized point and one point per generator."""

    baseline: ReidAudit
    """The attack on real images."""
    original: Evaluation
    """The classifier on the original test images."""
    points: list[CurvePoint]

    def as_dict(self) -> dict[str, Any]:
        return {
            "unanonymized": {
                "linkage_auroc": self.baseline.auroc.as_dict(),
                "classification_auroc": self.original.overall.estimate("auroc").as_dict(),
                "classification_auroc_per_finding": {
                    name: finite_or_none(self.original.overall.estimate("auroc", name).value)
                    for name in self.original.label_names
                },
            },
            "cautions": weak_measures(
                self.baseline.auroc.value, self.original.overall.estimate("auroc").value
            ),
            "points": [point.as_dict() for point in self.points],
            "reference_prichexy_net": {
                "linkage_auroc_before": PRICHEXY_NET[0],
                "linkage_auroc_after": PRICHEXY_NET[1],
            },
        }


@dataclass(frozen=True)
class AnonymizerEvaluation:
    """One generator's evaluation (the curve of a single point)."""

    baseline: ReidAudit
    linkage: list[ReidAudit]
    original: Evaluation
    anonymized: Evaluation
    utility: Comparison

    @property
    def linkage_auroc(self) -> tuple[float, float]:
        """Mean and standard deviation of the linkage AUROC over the runs."""
        return linkage_spread(self.linkage)

    def as_dict(self) -> dict[str, Any]:
        mean, std = self.linkage_auroc
        return {
            "baseline_auroc": self.baseline.auroc.as_dict(),
            "linkage_auroc": {
                "mean": mean,
                "std": std,
                "runs": [a.auroc.as_dict() for a in self.linkage],
            },
            "classification": {
                "original": self.original.overall.estimate("auroc").as_dict(),
                "anonymized": self.anonymized.overall.estimate("auroc").as_dict(),
                "difference": self.utility.groups["all"].as_dict()["auroc"]["mean"],
            },
        }


def evaluate_anonymizer(
    generator_path: Path,
    data: Path,
    *,
    runs: int = 3,
    reid: ReidConfig | None = None,
    classifier_epochs: int = 10,
    site: str | None = None,
    device: str = "auto",
    seed: int = 0,
) -> AnonymizerEvaluation:
    """Both halves of the evaluation (module docstring); ``reid`` sets the attacker."""
    curve = evaluate_curve(
        [generator_path],
        data,
        runs=runs,
        reid=reid,
        classifier_epochs=classifier_epochs,
        site=site,
        device=device,
        seed=seed,
    )
    point = curve.points[0]
    return AnonymizerEvaluation(
        baseline=curve.baseline,
        linkage=point.linkage,
        original=curve.original,
        anonymized=point.anonymized,
        utility=point.utility,
    )


def evaluate_curve(
    generator_paths: Sequence[Path],
    data: Path,
    *,
    runs: int = 3,
    reid: ReidConfig | None = None,
    classifier_epochs: int = 10,
    site: str | None = None,
    device: str = "auto",
    seed: int = 0,
) -> AnonymizerCurve:
    """The curve of several generators (e.g. one per strength), trained at one image size:
    the attack on real images and the classifier of the findings are trained once and
    shared, so every point is measured against the same baseline and the same judge."""
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    if not generator_paths:
        raise ValueError("give at least one generator")
    loaded = [load_generator(path) for path in generator_paths]
    sizes = {spec.image_size for _, spec in loaded}
    if len(sizes) > 1:
        raise ValueError(
            f"the generators were trained at different sizes ({sorted(sizes)} px); a curve "
            "compares generators of one size"
        )
    image_size = sizes.pop()
    torch_device = resolve_device(device)
    attacker = dataclasses.replace(
        reid or ReidConfig(data=data), data=data, image_size=image_size, site=site
    )
    baseline, _ = run_reid_audit(dataclasses.replace(attacker, seed=seed))
    judge = _Judge.fit(data, image_size, attacker, classifier_epochs, site, torch_device, seed)
    original = judge.evaluate(None)
    points = []
    for generator, spec in loaded:
        masks_of = mask_lookup(data, image_size, site) if spec.guide == "masks" else None

        def transform(
            images: torch.Tensor,
            generator: torch.nn.Module = generator,
            masks_of: Callable[[torch.Tensor], torch.Tensor] | None = masks_of,
        ) -> torch.Tensor:
            masks = None if masks_of is None else masks_of(images)
            return anonymize_images(generator, images, torch_device, masks=masks)

        linkage = [
            run_reid_audit(dataclasses.replace(attacker, seed=seed + run), transform=transform)[0]
            for run in range(runs)
        ]
        anonymized = judge.evaluate(transform)
        strength = spec.mu if spec.kind == "flow" else spec.noise_strength
        points.append(
            CurvePoint(
                label=describe(spec),
                kind=spec.kind,
                guide=spec.guide,
                strength=strength,
                linkage=linkage,
                anonymized=anonymized,
                utility=compare(anonymized, original),
            )
        )
    return AnonymizerCurve(baseline=baseline, original=original, points=points)


def describe(spec: GeneratorSpec) -> str:
    """A generator's short name: "seg-guided flow μ=0.2", "noise s=0.3"."""
    guide = {"none": "", "masks": "mask-guided ", "segmenter": "seg-guided "}[spec.guide]
    strength = f"μ={spec.mu:g}" if spec.kind == "flow" else f"s={spec.noise_strength:g}"
    return f"{guide}{spec.kind} {strength}"


def mask_lookup(
    data: Path, image_size: int, site: str | None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Each image's masks from the manifest, found by the image's pixels (the attack and
    the utility judge draw their own splits, so images arrive without their rows)."""
    dataset = open_dataset(data, image_size=image_size)
    if site is not None:
        dataset = only_site(dataset, site)
    images, _ = dataset.uint8_tensors()
    masks = dataset_masks(dataset, data)
    table = {image.numpy().tobytes(): mask for image, mask in zip(images, masks, strict=True)}

    def masks_of(batch: torch.Tensor) -> torch.Tensor:
        return torch.stack([table[image.numpy().tobytes()] for image in batch])

    return masks_of


@dataclass(frozen=True)
class _Judge:
    """A classifier trained on the real training images, and the splits it scores."""

    classifier: torch.nn.Module
    val: RadiographDataset
    test: RadiographDataset
    resamples: int
    device: torch.device
    seed: int

    @classmethod
    def fit(
        cls,
        data: Path,
        image_size: int,
        attacker: ReidConfig,
        epochs: int,
        site: str | None,
        device: torch.device,
        seed: int,
    ) -> _Judge:
        splits = load_splits(
            data,
            image_size=image_size,
            site=site,
            val_fraction=attacker.val_fraction,
            test_fraction=attacker.test_fraction,
            seed=seed,
        )
        dataset = splits.train
        assert splits.test is not None
        torch.manual_seed(seed)
        spec = ModelSpec(
            attacker.model,
            dataset.num_outputs,
            attacker.width,
            1,
            image_size,
            str(dataset.task),
            dataset.label_names,
        )
        config = TrainConfig(
            data=data,
            out=Path("."),
            model=attacker.model,
            width=attacker.width,
            image_size=image_size,
            epochs=epochs,
            batch_size=64,
            lr=1e-3,
            progress=False,
            dp=DPConfig(enabled=False),
        )
        classifier = fit(
            spec.build(),
            splits.train,
            config=config,
            device=device,
            description="the utility judge",
        ).model
        return cls(classifier, splits.val, splits.test, attacker.resamples, device, seed)

    def evaluate(self, change: ImageTransform | None) -> Evaluation:
        """The classifier on the validation and test images, changed by ``change``; the
        same resamples for every ``change``, so differences are paired."""
        scored = []
        for split in (self.val, self.test):
            images, targets = split.uint8_tensors()
            if change is not None:
                images = change(images)
            scored.append(
                predict_images(
                    self.classifier,
                    images,
                    targets,
                    task=split.task,
                    label_names=split.label_names,
                    attributes=attributes_of(split),
                    device=self.device,
                )
            )
        return evaluate_scores(*scored, resamples=self.resamples, seed=self.seed)
