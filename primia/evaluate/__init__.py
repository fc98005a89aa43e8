"""Evaluation statistics: classification metrics with bootstrap intervals, paired
comparisons and subgroups, on arrays of scores and labels (no models, no network).

* :mod:`~primia.evaluate.metrics` — metrics at a threshold (and AUROC), for many sample
  weightings at once; :mod:`~primia.evaluate.bootstrap` — resamples, intervals, paired
  p-values;
* :mod:`~primia.evaluate.evaluation` — one model's scores on one dataset (thresholds from
  validation, metrics on test, subgroups) and :func:`compare` of two models;
* :mod:`~primia.evaluate.subgroups` — subgroups by patient attributes;
  :mod:`~primia.evaluate.store` — an evaluation on disk.

Scores come from :mod:`primia.scoring`; the transfer matrix is :mod:`primia.transfer`.
"""

from primia.evaluate.evaluation import (
    Comparison,
    Estimate,
    Evaluation,
    MetricTable,
    compare,
    evaluate_scores,
)
from primia.evaluate.metrics import MEAN, METRICS, Scores

__all__ = [
    "MEAN",
    "METRICS",
    "Comparison",
    "Estimate",
    "Evaluation",
    "MetricTable",
    "Scores",
    "compare",
    "evaluate_scores",
]
