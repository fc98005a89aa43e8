"""Classification metrics for the three tasks: loss, accuracy and AUROC per label.

AUROC is :func:`primia.evaluate.metrics.auroc` (the Mann–Whitney U statistic, ties count
one half). It is undefined when a label has only one class in the data; such labels report
``None`` and are left out of the mean.

* binary and multilabel: scores are the sigmoid of each logit, a prediction is
  ``score ≥ 0.5``, one AUROC per label;
* multiclass: scores are the softmax, a prediction is the arg-max, AUROC is one-vs-rest
  per class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from primia.data.dataset import Task
from primia.evaluate.metrics import auroc


@dataclass(frozen=True)
class Metrics:
    loss: float
    accuracy: float
    auroc: dict[str, float | None]

    @property
    def mean_auroc(self) -> float | None:
        defined = [value for value in self.auroc.values() if value is not None]
        return float(np.mean(defined)) if defined else None

    def as_dict(self, prefix: str = "") -> dict[str, float | None]:
        values: dict[str, float | None] = {
            f"{prefix}loss": self.loss,
            f"{prefix}accuracy": self.accuracy,
            f"{prefix}auroc_mean": self.mean_auroc,
        }
        values.update({f"{prefix}auroc/{name}": value for name, value in self.auroc.items()})
        return values


def classification_metrics(
    logits: np.ndarray,
    targets: np.ndarray,
    *,
    task: Task,
    label_names: Sequence[str],
    loss: float,
) -> Metrics:
    """Metrics of ``logits`` (``[N, outputs]``) against ``targets`` (see the dataset)."""
    if task is Task.MULTICLASS:
        shifted = logits - logits.max(axis=1, keepdims=True)
        probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
        accuracy = float((probabilities.argmax(axis=1) == targets).mean())
        per_label = {
            name: auroc(probabilities[:, k], targets == k) for k, name in enumerate(label_names)
        }
    else:
        probabilities = 1.0 / (1.0 + np.exp(-logits))
        binary = targets.reshape(probabilities.shape).astype(bool)
        accuracy = float(((probabilities >= 0.5) == binary).mean())
        per_label = {
            name: auroc(probabilities[:, k], binary[:, k]) for k, name in enumerate(label_names)
        }
    return Metrics(loss=loss, accuracy=accuracy, auroc=per_label)
