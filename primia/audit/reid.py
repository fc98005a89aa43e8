"""The re-identification audit: how well does a radiograph identify its patient?

1. Split the dataset by patient (train / validation / test, disjoint patients).
2. Train a :class:`~primia.audit.verifier.SiameseVerifier` on balanced same/different
   patient pairs drawn afresh each epoch from the training patients; keep the epoch with
   the best validation AUROC.
3. On the **test patients** (never seen in training):

   * **verification AUROC** over every same-patient pair and (up to
     ``max_negative_pairs``) different-patient pairs, with a 95% interval from a
     patient-level (cluster) bootstrap: patients are resampled, and a pair weighs the
     product of its two patients' counts (a same-patient pair its patient's count);
   * **retrieval**: every test image queries all others, ranked by the verifier's score.
     Precision@1 is the share of queries whose best match is the same patient; mAP@R
     (Musgrave et al. 2020) averages, over queries, the precision at each same-patient
     image found within the top R, R being the query's number of other images of its
     patient. Queries whose patient has a single image are left out.

An AUROC near 0.5 means the images do not link back to their patients (for this
attacker); near 1, they do.

Given ``transform`` (e.g. an anonymizer, :mod:`primia.anonymize`), the first image of
every pair is transformed and the second kept: the **linkage attack**, in which the
attacker trains and is judged on (shared image, real image) pairs. The transform gets and
returns ``uint8[N, 1, S, S]`` images, as they would be shared.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from primia.audit.pairs import PatientIndex
from primia.audit.verifier import SiameseVerifier
from primia.data import load_splits
from primia.data.dataset import RadiographDataset
from primia.errors import ConfigError, DataError
from primia.evaluate.bootstrap import interval, resample_counts
from primia.evaluate.evaluation import Estimate
from primia.evaluate.metrics import weighted_auroc
from primia.train.local import resolve_device
from primia.train.loops import to_float

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, dict[str, float]], None]
"""Called after each epoch with (epoch, epochs, the epoch's figures)."""
ImageTransform = Callable[[torch.Tensor], torch.Tensor]
"""``uint8[N, 1, S, S]`` images to images of the same shape (an anonymizer)."""


@dataclass(frozen=True)
class ReidConfig:
    data: Path
    model: str = "resnet9"
    width: int | None = 16
    image_size: int = 64
    epochs: int = 10
    pairs_per_epoch: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    val_fraction: float = 0.15
    test_fraction: float = 0.3
    site: str | None = None
    max_negative_pairs: int = 20_000
    resamples: int = 1000
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("epochs", "pairs_per_epoch", "batch_size", "resamples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.pairs_per_epoch < 2:
            raise ConfigError("pairs_per_epoch must be at least 2 (one of each kind)")
        if not 0 < self.lr <= 1:
            raise ConfigError(f"lr must be in (0, 1], got {self.lr}")


LINKS_ABOVE = 0.6
"""The verdict's rule: the radiographs link back to their patients when the lower end of
the verification AUROC's 95% interval is above this (0.5 is chance)."""


@dataclass(frozen=True)
class ReidAudit:
    """What the audit found on the test patients."""

    auroc: Estimate
    precision_at_1: float
    chance_precision_at_1: float
    """Precision@1 of a random ranking: the mean over queries of the share of the other
    images that are the query's patient's."""
    map_at_r: float
    test_patients: int
    test_images: int
    positive_pairs: int
    negative_pairs: int
    history: list[dict[str, float]]
    best_epoch: int
    seconds_per_epoch: float
    settings: dict[str, Any] = field(default_factory=dict)
    examples: dict[str, tuple[np.ndarray, np.ndarray, float]] = field(default_factory=dict)
    """Example pairs for the report: (first image, second image, score) by kind."""

    @property
    def links(self) -> bool:
        """Whether the radiographs link back to their patients (:data:`LINKS_ABOVE`)."""
        return self.auroc.lower > LINKS_ABOVE

    @property
    def verdict(self) -> str:
        """The finding with its rule, for a clinician or privacy officer."""
        interval = f"[{self.auroc.lower:.3f}, {self.auroc.upper:.3f}]"
        if self.links:
            return (
                f"the radiographs link back to their patients: the verification AUROC's 95% "
                f"interval {interval} lies above {LINKS_ABOVE} (0.5 is chance)"
            )
        return (
            f"little sign that the radiographs link back to their patients: the "
            f"verification AUROC's 95% interval {interval} reaches {LINKS_ABOVE} or below "
            "(the rule: its lower end above 0.6; 0.5 is chance)"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "verification_auroc": self.auroc.as_dict(),
            "verdict": self.verdict,
            "links": self.links,
            "precision_at_1": self.precision_at_1,
            "chance_precision_at_1": self.chance_precision_at_1,
            "map_at_r": self.map_at_r,
            "test_patients": self.test_patients,
            "test_images": self.test_images,
            "pairs": {"same_patient": self.positive_pairs, "different": self.negative_pairs},
            "best_epoch": self.best_epoch,
            "seconds_per_epoch": self.seconds_per_epoch,
            "history": self.history,
            "settings": self.settings,
            "examples": {kind: score for kind, (_, _, score) in self.examples.items()},
        }


def run_reid_audit(
    config: ReidConfig,
    *,
    on_epoch: ProgressCallback | None = None,
    transform: ImageTransform | None = None,
) -> tuple[ReidAudit, SiameseVerifier]:
    """Train a verifier on ``config.data`` and audit the test patients; with
    ``transform``, the linkage attack on transformed images (module docstring)."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = resolve_device(config.device)
    splits = load_splits(
        config.data,
        image_size=config.image_size,
        site=config.site,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        seed=config.seed,
    )
    if splits.test is None:
        raise ConfigError("the audit needs test patients; set test_fraction above 0")
    train, validation, test = (
        _Split.of(splits.train, "training", transform),
        _Split.of(splits.val, "validation", transform),
        _Split.of(splits.test, "test", transform),
    )
    model = SiameseVerifier(config.model, width=config.width).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    history: list[dict[str, float]] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_auroc, best_epoch = -1.0, 0
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        loss = _train_epoch(model, optimizer, train, config, rng, device)
        auroc = _pair_auroc(model, validation, config, rng, device)
        record = {"epoch": float(epoch), "train_loss": loss, "val_auroc": auroc}
        history.append(record)
        log.info("epoch %d/%d: loss %.4f, validation AUROC %.3f", epoch, config.epochs, loss, auroc)
        if on_epoch is not None:
            on_epoch(epoch, config.epochs, record)
        if auroc > best_auroc:
            best_auroc, best_epoch = auroc, epoch
            best_state = {name: t.detach().clone() for name, t in model.state_dict().items()}
    seconds_per_epoch = (time.perf_counter() - started) / config.epochs
    assert best_state is not None
    model.load_state_dict(best_state)
    audit = _audit(model, test, config, rng, device)
    return (
        ReidAudit(
            **audit,
            history=history,
            best_epoch=best_epoch,
            seconds_per_epoch=seconds_per_epoch,
            settings={key: str(value) for key, value in asdict(config).items()},
        ),
        model,
    )


@dataclass(frozen=True)
class _Split:
    first_images: torch.Tensor
    """The images a pair's first member comes from (transformed, in the linkage attack)."""
    second_images: torch.Tensor
    index: PatientIndex

    @classmethod
    def of(cls, dataset: RadiographDataset, what: str, transform: ImageTransform | None) -> _Split:
        images = dataset.uint8_tensors()[0]
        index = PatientIndex.of(dataset, what=what)
        first = images if transform is None else transform(images)
        if first.shape != images.shape or first.dtype != images.dtype:
            raise ValueError(f"the transform changed the images to {first.shape} {first.dtype}")
        return cls(first, images, index)


def _train_epoch(
    model: SiameseVerifier,
    optimizer: torch.optim.Optimizer,
    split: _Split,
    config: ReidConfig,
    rng: np.random.Generator,
    device: torch.device,
) -> float:
    model.train()
    first, second, same = split.index.sample(config.pairs_per_epoch, rng)
    criterion = nn.BCEWithLogitsLoss()
    losses = []
    for start in range(0, len(first), config.batch_size):
        batch = slice(start, start + config.batch_size)
        logits = model(
            to_float(split.first_images[first[batch]], device),
            to_float(split.second_images[second[batch]], device),
        )
        loss = criterion(logits, torch.from_numpy(same[batch]).float().to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return float(np.mean(losses))


@torch.no_grad()
def _embeddings(model: SiameseVerifier, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    model.eval()
    return torch.cat(
        [
            model.embed(to_float(images[start : start + 256], device))
            for start in range(0, len(images), 256)
        ]
    )


@torch.no_grad()
def _pair_auroc(
    model: SiameseVerifier,
    split: _Split,
    config: ReidConfig,
    rng: np.random.Generator,
    device: torch.device,
) -> float:
    pairs = _PairScores.of(model, split, config, rng, device)
    return float(weighted_auroc(pairs.scores, pairs.same, np.ones((1, len(pairs.same))))[0])


@dataclass(frozen=True)
class _PairScores:
    """The verifier's embeddings of a split and its logits on every listed pair."""

    first_embeddings: torch.Tensor
    second_embeddings: torch.Tensor
    first: np.ndarray
    second: np.ndarray
    same: np.ndarray
    scores: np.ndarray

    @classmethod
    def of(
        cls,
        model: SiameseVerifier,
        split: _Split,
        config: ReidConfig,
        rng: np.random.Generator,
        device: torch.device,
    ) -> _PairScores:
        first_embeddings = _embeddings(model, split.first_images, device)
        second_embeddings = _embeddings(model, split.second_images, device)
        first, second, same = split.index.all_pairs(
            max_negatives=config.max_negative_pairs, rng=rng
        )
        scores = model.compare(first_embeddings[first], second_embeddings[second])
        return cls(
            first_embeddings,
            second_embeddings,
            first,
            second,
            same,
            scores.cpu().double().numpy(),
        )


@torch.no_grad()
def _audit(
    model: SiameseVerifier,
    split: _Split,
    config: ReidConfig,
    rng: np.random.Generator,
    device: torch.device,
) -> dict[str, Any]:
    pairs = _PairScores.of(model, split, config, rng, device)
    first, second, same, scores = pairs.first, pairs.second, pairs.same, pairs.scores
    index = split.index
    value = float(weighted_auroc(scores, same, np.ones((1, len(same))))[0])
    # Cluster bootstrap: resample patients; a pair weighs its patients' counts.
    patients = len(index.images_of)
    counts = resample_counts(patients, config.resamples, seed=config.seed)
    p, q = index.patient_of[first], index.patient_of[second]
    weights = np.where(same[None, :], counts[:, p], counts[:, p] * counts[:, q])
    lower, upper = interval(weighted_auroc(scores, same, weights))
    precision_at_1, map_at_r = retrieval(
        model.score_matrix(pairs.first_embeddings, pairs.second_embeddings).cpu().numpy(),
        index.patient_of,
    )
    return {
        "auroc": Estimate(value, float(lower), float(upper)),
        "precision_at_1": precision_at_1,
        "chance_precision_at_1": chance_precision_at_1(index.patient_of),
        "map_at_r": map_at_r,
        "test_patients": patients,
        "test_images": len(index.patient_of),
        "positive_pairs": int(same.sum()),
        "negative_pairs": int((~same).sum()),
        "examples": _examples(split, first, second, same, scores),
    }


def chance_precision_at_1(patient_of: np.ndarray) -> float:
    """Expected precision@1 of a random ranking: for a query with r other images of its
    patient among the N − 1 others, r / (N − 1), averaged over the queries with r > 0 (those
    :func:`retrieval` counts)."""
    others = len(patient_of) - 1
    same = (patient_of[None, :] == patient_of[:, None]).sum(axis=1) - 1
    queries = same[same > 0]
    return float(queries.mean() / others) if len(queries) and others else 0.0


def retrieval(scores: np.ndarray, patient_of: np.ndarray) -> tuple[float, float]:
    """Precision@1 and mAP@R of the score matrix ``[N, N]`` (row: query, column: gallery;
    higher: more alike); a query's own image is ignored, as are queries without another
    image of their patient."""
    scores = np.array(scores, dtype=np.float64)
    np.fill_diagonal(scores, -np.inf)
    relevant = patient_of[None, :] == patient_of[:, None]
    np.fill_diagonal(relevant, False)
    counts = relevant.sum(axis=1)
    queries = np.flatnonzero(counts > 0)
    if len(queries) == 0:
        raise DataError("no test patient has two images; retrieval cannot be measured")
    order = np.argsort(-scores[queries], axis=1, kind="stable")
    ranked = np.take_along_axis(relevant[queries], order, axis=1)
    precision_at_1 = float(ranked[:, 0].mean())
    average_precisions = []
    for row, r in zip(ranked, counts[queries], strict=True):
        top = row[:r]
        hits = np.cumsum(top)
        average_precisions.append(float((hits / np.arange(1, r + 1) * top).sum() / r))
    return precision_at_1, float(np.mean(average_precisions))


def _examples(
    split: _Split,
    first: np.ndarray,
    second: np.ndarray,
    same: np.ndarray,
    scores: np.ndarray,
) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """The most and least alike same-patient pairs and the most alike different pair."""
    chosen = {}
    positives, negatives = np.flatnonzero(same), np.flatnonzero(~same)
    for kind, pool, pick in (
        ("same patient, most alike", positives, np.argmax),
        ("same patient, least alike", positives, np.argmin),
        ("different patients, most alike", negatives, np.argmax),
    ):
        if len(pool):
            k = pool[int(pick(scores[pool]))]
            chosen[kind] = (
                split.first_images[first[k], 0].numpy(),
                split.second_images[second[k], 0].numpy(),
                float(1 / (1 + np.exp(-scores[k]))),
            )
    return chosen
