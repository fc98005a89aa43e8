"""Evaluation: classification metrics with bootstrap intervals, paired comparisons,
subgroups, and the domain-transfer matrix across a consortium's sites.

* :mod:`~primia.evaluate.metrics` — metrics at a threshold, for many sample weightings
  at once; :mod:`~primia.evaluate.bootstrap` — resamples, intervals, paired p-values;
* :mod:`~primia.evaluate.evaluation` — one model on one dataset (thresholds from
  validation, metrics on test, subgroups) and :func:`compare` of two models;
* :mod:`~primia.evaluate.local` — the same from a checkpoint and a data folder
  (``primia evaluate``);
* :mod:`~primia.evaluate.matrix` — the domain-transfer matrix over real nodes
  (``primia transfer-matrix``), :mod:`~primia.evaluate.analysis` its figures and
  :mod:`~primia.evaluate.report` its files.
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
