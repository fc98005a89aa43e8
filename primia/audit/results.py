"""What an inversion audit produces: scores per image, per attack, and the summary.

These dataclasses are the contract between the audit (:mod:`primia.audit.inversion`), the
metrics (:mod:`primia.audit.metrics`) and the report writer (:mod:`primia.audit.report`).
Images are ``float32[S, S]`` arrays in [0, 1].
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Verdict = str
"""":data:`NO_LEAK` or "leaks: k of N images reconstructed or re-identified"."""

LEAKAGE_THRESHOLD = 0.10
"""An image counts as reconstructed when its leakage value (the SSIM gain over the prior,
as a fraction of the gain a perfect copy would have) reaches this ..."""
PSNR_MARGIN_DB = 1.0
"""... and its PSNR beats the prior's by at least this many decibels."""
REID_ALPHA = 0.05
"""A re-identification method's hits count only when chance alone would reach as many
with probability at most this (shared by the methods tested, Bonferroni; see
:func:`discount_chance`)."""
NO_LEAK = "no leak found by these attacks: inconclusive, not a proof of safety"
CAVEAT = (
    "An audit can show a leak, never its absence: a stronger attack, more iterations, other "
    "images or a coordinator that crafts its weights may recover what these attacks did not."
)


@dataclass(frozen=True)
class ImageScore:
    """One original image against the reconstruction matched to it.

    ``leakage`` is the relative data-leakage value (SSIM(rec) − SSIM(prior)) /
    (1 − SSIM(prior)): 0 when the reconstruction is as close as the dataset's mean image,
    1 for a perfect copy, negative when it is further than the mean image.
    ``nearest_image_correct``: the image of the node's dataset nearest to the
    reconstruction (in MSE) is the original; ``nearest_patient_correct``: that nearest
    image belongs to the original's patient. ``verifier_patient_correct``: a trained
    verifier's best match among the dataset's other images is the original's patient
    (:mod:`primia.audit.linking`; None when no verifier was given).
    ``feature_image_correct`` / ``feature_patient_correct``: the features the attack
    recovered from the update, compared with the dataset's features through the model the
    attacker sent (:func:`primia.audit.metrics.feature_matches`): the most similar image is
    the original / the most similar *other* image is the patient's (None for attacks that
    recover no features).
    ``gallery_size`` / ``patient_images``: the images of the attacker's gallery (the
    node's dataset) and those of them that are the original's patient's, the original
    included: they give each method's chance rate (None where unknown: hits then count
    unconditionally). ``chance_level``: the methods whose hits in this audit chance alone
    explains (:func:`discount_chance`); :attr:`reidentified` ignores them.
    """

    dataset_index: int
    patient_id: str
    mse: float
    psnr: float
    ssim: float
    prior_psnr: float
    prior_ssim: float
    leakage: float
    label_accuracy: float
    nearest_image_correct: bool
    nearest_patient_correct: bool
    verifier_patient_correct: bool | None = None
    labels_exact: bool | None = None
    """Every label (finding) of the image recovered exactly; None where not scored."""
    feature_image_correct: bool | None = None
    feature_patient_correct: bool | None = None
    gallery_size: int | None = None
    patient_images: int | None = None
    chance_level: tuple[str, ...] = ()

    def hits(self) -> dict[str, bool]:
        """Per re-identification method scored for this image, whether it hit."""
        found = {
            "pixels image": self.nearest_image_correct,
            "pixels patient": self.nearest_patient_correct,
            "features image": self.feature_image_correct,
            "features patient": self.feature_patient_correct,
            "verifier": self.verifier_patient_correct,
        }
        return {method: hit for method, hit in found.items() if hit is not None}

    def chance(self, method: str) -> float | None:
        """The probability that ``method`` hits by chance, when its match is a uniformly
        random gallery image: 1/G for the original (pixels or features), n/G for the
        patient by the nearest image (the original included), (n − 1)/(G − 1) for the
        patient with the original left out (features, verifier); G the gallery's images,
        n the patient's. None where G or n is unknown."""
        if self.gallery_size is None or self.patient_images is None:
            return None
        g, n = self.gallery_size, self.patient_images
        if method.endswith("image"):
            return 1 / g
        if method == "pixels patient":
            return n / g
        return (n - 1) / (g - 1) if g > 1 else 0.0

    @property
    def reconstructed(self) -> bool:
        """PSNR ≥ the prior's + :data:`PSNR_MARGIN_DB` and leakage ≥ :data:`LEAKAGE_THRESHOLD`."""
        return self.leakage >= LEAKAGE_THRESHOLD and self.psnr >= self.prior_psnr + PSNR_MARGIN_DB

    @property
    def reidentified(self) -> bool:
        """The nearest image (pixels or features) is the original or the patient's, or the
        verifier links it, by a method whose hits in this audit beat chance."""
        return any(hit and method not in self.chance_level for method, hit in self.hits().items())

    @property
    def leaked(self) -> bool:
        """The verdict's rule for one image: reconstructed or re-identified."""
        return self.reconstructed or self.reidentified


@dataclass(frozen=True)
class AttackOutcome:
    """One attack on one observed update: the originals behind the update, the
    reconstructions in matched order (``reconstructions[i]`` is matched to
    ``originals[i]``), the scores, and what the attack cost."""

    originals: np.ndarray
    reconstructions: np.ndarray
    scores: list[ImageScore]
    seconds: float
    attack_loss: float


@dataclass(frozen=True)
class Summary:
    """Means over every attacked image, and the verdict they give."""

    images: int
    mse: float
    psnr: float
    ssim: float
    prior_psnr: float
    prior_ssim: float
    leakage: float
    label_accuracy: float
    reidentified_images: float
    reidentified_patients: float
    seconds_per_attack: float
    verdict: Verdict
    reidentified_by_verifier: float | None = None
    leaked_images: int = 0
    reconstructed_images: int = 0
    reidentified_any: int = 0
    labels_exact_images: int = 0
    reidentified_by_features: float | None = None
    """The share of images whose recovered features' nearest image is the original (None
    for attacks that recover no features) ..."""
    linked_by_features: float | None = None
    """... and whose nearest other image, the original left out, is the patient's."""
    chance_level: tuple[str, ...] = ()
    """Re-identification methods that hit, but no more often than chance explains: their
    hits are shown and not counted (:func:`discount_chance`)."""


@dataclass(frozen=True)
class InversionAudit:
    """Everything an audit measured. ``settings`` are the audit's options as plain values
    (attack, defense, batch size, ...); ``epsilon`` is the ε the observed DP update costs
    (None without DP); ``prior`` is the dataset's mean image."""

    settings: dict[str, Any]
    prior: np.ndarray
    outcomes: list[AttackOutcome]
    summary: Summary
    epsilon: float | None = None
    notes: list[str] = field(default_factory=list)
    refusal: str | None = None
    """Why primia's nodes refuse what the coordinator sent (their own model-consistency
    check, run by :func:`primia.audit.consistency.consistency_refusal`; secure rounds
    only); None when nothing refuses it. The scores then say what would leak without it."""


def verdict(leaked: int, images: int) -> Verdict:
    """The verdict over ``images`` attacked images of which ``leaked`` met the per-image
    rule (:attr:`ImageScore.leaked`)."""
    if leaked:
        return f"leaks: {leaked} of {images} images reconstructed or re-identified"
    return NO_LEAK


def chance_tail(chances: Sequence[float], hits: int) -> float:
    """P(X ≥ hits) for X = Σ_i Bernoulli(p_i), the p_i independent (Poisson-binomial):
    the exact distribution by convolution, one image at a time."""
    distribution = [1.0]
    for p in chances:
        distribution = [
            (distribution[k] if k < len(distribution) else 0.0) * (1 - p)
            + (distribution[k - 1] * p if k else 0.0)
            for k in range(len(distribution) + 1)
        ]
    return math.fsum(distribution[hits:])


def discount_chance(outcomes: Sequence[AttackOutcome]) -> list[AttackOutcome]:
    """``outcomes`` with each score's ``chance_level`` set: the re-identification methods
    whose hits, over all the audit's images, chance alone would reach too often.

    H₀ for a method: the attacker's match carries no information about the image, so its
    matched gallery image is as good as uniformly random and image i hits with its
    chance rate p_i (:meth:`ImageScore.chance`; the attacked images are drawn at random,
    so even a fixed match — every reconstruction nearest one "hub" image, as DP's noise
    is — hits with these rates over the draw). With k hits among N images, the method
    counts when P(X ≥ k) ≤ α / m for X Poisson-binomial(p_1..p_N), α = :data:`REID_ALPHA`
    and m the methods tested (Bonferroni): chance alone then reports a re-identification
    leak in at most α of audits. A method whose chance rates are unknown always counts.
    Reconstruction is never discounted. The rule spares real attacks: at batch 1
    undefended, features match the original in every image (k = N against p = 1/G; one
    hit alone in a gallery of G ≥ 100 counts, even at N = 1), while a single hit among 16
    at the patient level (p ≈ 1/60) is what chance gives one audit in four.
    """
    scores = [score for outcome in outcomes for score in outcome.scores]
    methods = sorted({method for score in scores for method in score.hits()})
    discounted = set()
    for method in methods:
        scored = [score for score in scores if method in score.hits()]
        chances = [score.chance(method) for score in scored]
        if any(p is None for p in chances):
            continue
        hits = sum(score.hits()[method] for score in scored)
        known = [p for p in chances if p is not None]
        if chance_tail(known, hits) > REID_ALPHA / len(methods):
            discounted.add(method)
    level = tuple(sorted(discounted))

    def replace(outcome: AttackOutcome) -> AttackOutcome:
        scored = [dataclasses.replace(score, chance_level=level) for score in outcome.scores]
        return dataclasses.replace(outcome, scores=scored)

    return [replace(outcome) for outcome in outcomes]


def summarize(outcomes: Sequence[AttackOutcome]) -> Summary:
    """The means over all images of all outcomes, and their verdict; the verdict's
    re-identifications are those beyond chance (:func:`discount_chance`, applied here
    too)."""
    scores = [score for outcome in discount_chance(outcomes) for score in outcome.scores]
    hit = {method for score in scores for method, found in score.hits().items() if found}
    at_chance = sorted(hit.intersection(scores[0].chance_level)) if scores else []
    if not scores:
        raise ValueError("an audit without scored images cannot be summarized")

    def mean(values: Sequence[float]) -> float:
        return float(np.mean(values))

    psnr = mean([min(s.psnr, 100.0) for s in scores])  # an exact copy has PSNR ∞
    prior_psnr = mean([min(s.prior_psnr, 100.0) for s in scores])
    leakage = mean([s.leakage for s in scores])
    linked = [s.verifier_patient_correct for s in scores]
    by_features = [s.feature_image_correct for s in scores]
    leaked = sum(s.leaked for s in scores)
    return Summary(
        images=len(scores),
        mse=mean([s.mse for s in scores]),
        psnr=psnr,
        ssim=mean([s.ssim for s in scores]),
        prior_psnr=prior_psnr,
        prior_ssim=mean([s.prior_ssim for s in scores]),
        leakage=leakage,
        label_accuracy=mean([s.label_accuracy for s in scores]),
        reidentified_images=mean([float(s.nearest_image_correct) for s in scores]),
        reidentified_patients=mean([float(s.nearest_patient_correct) for s in scores]),
        seconds_per_attack=mean([o.seconds for o in outcomes]),
        verdict=verdict(leaked, len(scores)),
        reidentified_by_verifier=None
        if None in linked
        else mean([float(correct) for correct in linked if correct is not None]),
        leaked_images=leaked,
        reconstructed_images=sum(s.reconstructed for s in scores),
        reidentified_any=sum(s.reidentified for s in scores),
        labels_exact_images=sum(s.labels_exact is True for s in scores),
        reidentified_by_features=None
        if None in by_features
        else mean([float(s.feature_image_correct is True) for s in scores]),
        linked_by_features=None
        if None in by_features
        else mean([float(s.feature_patient_correct is True) for s in scores]),
        chance_level=tuple(at_chance),
    )
