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
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from primia.anonymize.apply import anonymize_images
from primia.anonymize.checkpoint import load_generator
from primia.audit.reid import ImageTransform, ReidAudit, ReidConfig, run_reid_audit
from primia.data import load_splits
from primia.evaluate.evaluation import Comparison, Evaluation, compare, evaluate_scores
from primia.evaluate.subgroups import attributes_of
from primia.models.checkpoint import ModelSpec
from primia.scoring.predict import predict_images
from primia.train.local import fit, resolve_device
from primia.train.train_config import DPConfig, TrainConfig


@dataclass(frozen=True)
class AnonymizerEvaluation:
    baseline: ReidAudit
    """The attack on real images."""
    linkage: list[ReidAudit]
    """The attack on anonymized images, one per run."""
    original: Evaluation
    anonymized: Evaluation
    utility: Comparison
    """Anonymized minus original, per metric, with paired p-values."""

    @property
    def linkage_auroc(self) -> tuple[float, float]:
        """Mean and standard deviation of the linkage AUROC over the runs."""
        values = [audit.auroc.value for audit in self.linkage]
        return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0

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
    if runs < 1:
        raise ValueError(f"runs must be at least 1, got {runs}")
    generator, spec = load_generator(generator_path)
    torch_device = resolve_device(device)
    attacker = dataclasses.replace(
        reid or ReidConfig(data=data), data=data, image_size=spec.image_size, site=site
    )

    def transform(images: torch.Tensor) -> torch.Tensor:
        return anonymize_images(generator, images, torch_device)

    baseline, _ = run_reid_audit(dataclasses.replace(attacker, seed=seed))
    linkage = [
        run_reid_audit(dataclasses.replace(attacker, seed=seed + run), transform=transform)[0]
        for run in range(runs)
    ]
    original, anonymized = _utility(
        data, spec.image_size, transform, attacker, classifier_epochs, site, torch_device, seed
    )
    return AnonymizerEvaluation(
        baseline=baseline,
        linkage=linkage,
        original=original,
        anonymized=anonymized,
        utility=compare(anonymized, original),
    )


def _utility(
    data: Path,
    image_size: int,
    transform: ImageTransform,
    attacker: ReidConfig,
    epochs: int,
    site: str | None,
    device: torch.device,
    seed: int,
) -> tuple[Evaluation, Evaluation]:
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
        spec.build(), splits.train, config=config, device=device, description="the utility judge"
    ).model
    evaluations = []
    for change in (None, transform):
        scored = []
        for split in (splits.val, splits.test):
            images, targets = split.uint8_tensors()
            if change is not None:
                images = change(images)
            scored.append(
                predict_images(
                    classifier,
                    images,
                    targets,
                    task=split.task,
                    label_names=split.label_names,
                    attributes=attributes_of(split),
                    device=device,
                )
            )
        evaluations.append(evaluate_scores(*scored, resamples=attacker.resamples, seed=seed))
    return evaluations[0], evaluations[1]
