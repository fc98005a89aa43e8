"""Classification metrics at a threshold, computed for many sample weightings at once.

Every metric here is a function of per-sample weights ``w`` (``[R, N]``: R weightings of
the N samples). Row ``w = 1`` gives the metric of the data; a bootstrap resample is the
row of how often each sample was drawn (:mod:`primia.evaluate.bootstrap`). Computing all
rows in one pass is what makes 1,000 resamples of 10,000 samples take a second.

For each label, with ŷ = score ≥ threshold and the weighted counts
TP = Σ w·[ŷ ∧ y], FP = Σ w·[ŷ ∧ ¬y], FN = Σ w·[¬ŷ ∧ y], TN = Σ w·[¬ŷ ∧ ¬y]:

* accuracy = (TP + TN) / Σ w, sensitivity = TP / (TP + FN), specificity = TN / (TN + FP),
  precision = TP / (TP + FP), F1 = 2·TP / (2·TP + FP + FN);
* AUROC = P(score of a positive > score of a negative) + ½·P(equal), i.e. the
  Mann–Whitney U statistic, weighted: Σ_{i pos} Σ_{j neg} w_i w_j ([s_j < s_i] + ½[s_j = s_i])
  / (Σ_{pos} w · Σ_{neg} w).

A metric whose denominator is zero (no positives, say) is NaN. The ``mean`` column is the
macro average over the labels where the metric is defined on the data. A bootstrap row
averages the same labels, and is NaN where one of them is undefined in its resample (a
rare label with no positives drawn): averaging only the labels a resample happens to
define would mix different quantities, and with a rare label whose AUROC differs from the
others the replicates would sit on one side of the estimate (an estimate of 0.5 from
AUROCs 1.0 and 0.0 had the interval [0.5, 1.0], its lower end pinned at the estimate).
Multiclass outputs are scored one-vs-rest per class, with the arg-max as the prediction
(no threshold).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from primia.data.dataset import Task
from primia.errors import DataError

METRICS = ("auroc", "accuracy", "sensitivity", "specificity", "precision", "f1")
"""The rows of every metric table, in this order."""
MEAN = "mean"
"""The column after the labels: the macro average over labels."""

FloatArray = npt.NDArray[np.floating]


@dataclass(frozen=True)
class Scores:
    """A model's outputs on one split, with what the metrics need to know of each sample.

    ``probabilities`` is ``float64[N, L]`` (sigmoid per label; softmax per class for
    multiclass), ``targets`` ``bool[N, L]`` (one-hot for multiclass). ``attributes`` holds
    per-sample columns for subgroups (``sex``: str, ``age``: float, NaN when unknown).
    """

    probabilities: FloatArray
    targets: npt.NDArray[np.bool_]
    task: Task
    label_names: tuple[str, ...]
    attributes: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.probabilities.shape != self.targets.shape:
            raise DataError(
                f"scores have shape {self.probabilities.shape}, targets {self.targets.shape}"
            )
        if self.probabilities.ndim != 2 or self.probabilities.shape[1] != len(self.label_names):
            raise DataError(
                f"scores must be [samples, {len(self.label_names)} labels], got "
                f"{self.probabilities.shape}"
            )
        if not np.isfinite(self.probabilities).all():
            raise DataError("the model produced NaN or infinite scores; check the checkpoint")

    def __len__(self) -> int:
        return int(self.probabilities.shape[0])

    def subset(self, mask: npt.NDArray[np.bool_]) -> Scores:
        return Scores(
            probabilities=self.probabilities[mask],
            targets=self.targets[mask],
            task=self.task,
            label_names=self.label_names,
            attributes={name: values[mask] for name, values in self.attributes.items()},
        )

    def predictions(self, thresholds: FloatArray) -> npt.NDArray[np.bool_]:
        """``bool[N, L]``: score ≥ threshold per label; for multiclass the arg-max class."""
        if self.task is Task.MULTICLASS:
            predicted = np.zeros_like(self.targets)
            predicted[np.arange(len(self)), self.probabilities.argmax(axis=1)] = True
            return predicted
        return self.probabilities >= thresholds[None, :]


def youden_thresholds(scores: Scores) -> tuple[FloatArray, list[str]]:
    """Per label, the score threshold that maximises Youden's J = sensitivity +
    specificity − 1 on ``scores`` (meant for the validation split), and a note per label
    where the rule could not apply (0.5 is used then; NaN for multiclass, which predicts
    the arg-max). Of equally good thresholds the highest is taken."""
    thresholds = np.full(len(scores.label_names), np.nan)
    notes: list[str] = []
    if scores.task is Task.MULTICLASS:
        return thresholds, ["multiclass: the predicted class is the arg-max, no threshold"]
    for k, name in enumerate(scores.label_names):
        positive = scores.targets[:, k]
        positives = int(positive.sum())
        negatives = len(positive) - positives
        if positives == 0 or negatives == 0:
            thresholds[k] = 0.5
            notes.append(f"{name}: the validation split has one class only; threshold 0.5")
            continue
        order = np.argsort(-scores.probabilities[:, k], kind="stable")
        sorted_scores = scores.probabilities[order, k]
        true_positive_rate = np.cumsum(positive[order]) / positives
        false_positive_rate = np.cumsum(~positive[order]) / negatives
        # Only the last sample of a run of equal scores is a threshold one can choose.
        last_of_run = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
        youden = np.where(last_of_run, true_positive_rate - false_positive_rate, -np.inf)
        thresholds[k] = sorted_scores[int(np.argmax(youden))]
    return thresholds, notes


def metric_table(
    scores: Scores,
    predictions: npt.NDArray[np.bool_],
    weights: FloatArray,
    *,
    mean_over: npt.NDArray[np.bool_] | None = None,
) -> FloatArray:
    """``float64[R, len(METRICS), L + 1]``: every metric per label, then the mean, for each
    of the R rows of ``weights`` (``[R, N]``); see the module docstring.

    ``mean_over`` (``bool[len(METRICS), L]``, the labels each metric is defined for on the
    data): the mean of a row averages exactly these labels, NaN where one is undefined;
    ``None``: the labels defined in that row."""
    weights = np.asarray(weights, dtype=np.float32)
    if weights.ndim != 2 or weights.shape[1] != len(scores):
        raise ValueError(f"weights must be [rows, {len(scores)}], got {weights.shape}")
    targets = scores.targets
    counts = {
        name: (weights @ mask.astype(np.float32)).astype(np.float64)
        for name, mask in (
            ("tp", predictions & targets),
            ("fp", predictions & ~targets),
            ("fn", ~predictions & targets),
            ("tn", ~predictions & ~targets),
        )
    }
    tp, fp, fn, tn = counts["tp"], counts["fp"], counts["fn"], counts["tn"]
    labels = len(scores.label_names)
    table = np.empty((weights.shape[0], len(METRICS), labels + 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        table[:, 0, :labels] = np.stack(
            [
                weighted_auroc(scores.probabilities[:, k], targets[:, k], weights)
                for k in range(labels)
            ],
            axis=1,
        )
        table[:, 1, :labels] = (tp + tn) / (tp + tn + fp + fn)
        table[:, 2, :labels] = tp / (tp + fn)
        table[:, 3, :labels] = tn / (tn + fp)
        table[:, 4, :labels] = tp / (tp + fp)
        table[:, 5, :labels] = 2 * tp / (2 * tp + fp + fn)
    per_label = table[:, :, :labels]
    if mean_over is None:
        table[:, :, labels] = _nanmean(per_label)
    else:
        required = np.asarray(mean_over, dtype=bool)[np.newaxis]
        complete = (np.isfinite(per_label) | ~required).all(axis=-1)
        averaged = _nanmean(np.where(required, per_label, np.nan))
        table[:, :, labels] = np.where(complete, averaged, np.nan)
    return table


def auroc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float | None:
    """Area under the ROC curve of ``scores`` for binary ``labels``; None if undefined
    (one class only). The unweighted case of :func:`weighted_auroc`: the Mann–Whitney U
    statistic over P·N positive–negative pairs, ties counting one half.

    >>> auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.75
    """
    positive = np.asarray(labels).astype(bool).ravel()
    if positive.all() or not positive.any():
        return None
    values = np.asarray(scores, dtype=np.float64).ravel()
    return float(weighted_auroc(values, positive, np.ones((1, values.size)))[0])


def weighted_auroc(
    scores: FloatArray, positive: npt.NDArray[np.bool_], weights: FloatArray
) -> FloatArray:
    """``float64[R]``: the weighted AUROC of ``scores`` for each row of ``weights``.

    The negatives are sorted by score once and their weights summed cumulatively along
    that order (per row); for each positive i, binary search gives the negatives below
    its score (ℓ_i) and up to it (u_i), so with C the cumulative negative weight,
    AUROC = Σ_{i pos} w_i · (C[ℓ_i] + C[u_i]) / 2 / (Σ_{pos} w · Σ_{neg} w):
    each negative below counts 1, each tied one ½.
    """
    positive = np.asarray(positive, dtype=bool)
    negatives = np.flatnonzero(~positive)
    positives = np.flatnonzero(positive)
    order = negatives[np.argsort(scores[negatives], kind="stable")]
    negative_scores = scores[order]
    below = np.searchsorted(negative_scores, scores[positives], side="left")
    up_to = np.searchsorted(negative_scores, scores[positives], side="right")
    cumulative = np.zeros((weights.shape[0], len(order) + 1), dtype=np.float64)
    np.cumsum(weights[:, order], axis=1, out=cumulative[:, 1:])
    positive_weights = weights[:, positives].astype(np.float64)
    pairs = 0.5 * np.einsum(
        "ij,ij->i", positive_weights, cumulative[:, below] + cumulative[:, up_to]
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        area = pairs / (cumulative[:, -1] * positive_weights.sum(axis=1))
    return np.where(np.isfinite(area), area, np.nan)


def _nanmean(values: FloatArray) -> FloatArray:
    """Mean over the last axis of the finite values; NaN where there are none."""
    finite = np.isfinite(values)
    count = finite.sum(axis=-1)
    total = np.where(finite, values, 0.0).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)
