"""One model on one dataset: thresholds from validation, metrics with CIs on test, subgroups.

:func:`evaluate_scores` is the whole evaluation, free of models and files:

1. per label, the threshold maximising Youden's J on the **validation** split (so the
   operating point is not tuned on the data it is judged on);
2. on the **test** split, every metric of :data:`~primia.evaluate.metrics.METRICS` per
   label and averaged, with a percentile bootstrap interval (1,000 resamples by default);
3. the same per subgroup (:mod:`primia.evaluate.subgroups`), on the same resamples
   restricted to the subgroup's samples.

:func:`compare` turns two evaluations of different models on the same samples (same seed)
into differences with intervals and paired p-values (:func:`~primia.evaluate.bootstrap.
paired_p_value`).

>>> evaluation = evaluate_scores(validation_scores, test_scores)   # doctest: +SKIP
>>> evaluation.overall.estimate("auroc")                           # doctest: +SKIP
Estimate(value=0.91, lower=0.88, upper=0.94)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from primia.errors import DataError
from primia.evaluate.bootstrap import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RESAMPLES,
    interval,
    paired_p_value,
    resample_counts,
)
from primia.evaluate.metrics import (
    MEAN,
    METRICS,
    FloatArray,
    Scores,
    metric_table,
    youden_thresholds,
)
from primia.evaluate.subgroups import ALL, DEFAULT_AGE_EDGES, subgroup_masks

THRESHOLD_RULE = "Youden's J, maximised per label on the validation split"


@dataclass(frozen=True)
class Estimate:
    value: float
    lower: float
    upper: float

    def as_dict(self) -> dict[str, float | None]:
        return {key: finite_or_none(getattr(self, key)) for key in ("value", "lower", "upper")}


@dataclass(frozen=True)
class MetricTable:
    """Every metric (rows, :data:`METRICS`) per label and the mean (columns) of one group
    of samples, with the bootstrap replicates ``[resamples, metrics, columns]``."""

    columns: tuple[str, ...]
    values: FloatArray
    replicates: FloatArray
    num_examples: int
    positives: tuple[int, ...]
    """Positive samples per label (columns without the mean)."""
    confidence: float = DEFAULT_CONFIDENCE
    metrics: tuple[str, ...] = METRICS

    def __post_init__(self) -> None:
        shape = (len(self.metrics), len(self.columns))
        if self.values.shape != shape or self.replicates.shape[1:] != shape:
            raise DataError(
                f"a metric table of {shape} got values {self.values.shape} and replicates "
                f"{self.replicates.shape}"
            )

    def estimate(self, metric: str, column: str = MEAN) -> Estimate:
        row, col = self.metrics.index(metric), self.columns.index(column)
        lower, upper = interval(self.replicates[:, row, col], self.confidence)
        return Estimate(float(self.values[row, col]), float(lower), float(upper))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: examples, positives, and {metric: {column: value, lower, upper}}."""
        lower, upper = interval(self.replicates, self.confidence)
        return {
            "examples": self.num_examples,
            "positives": dict(zip(self.columns, self.positives, strict=False)),
            "metrics": {
                metric: {
                    column: {
                        "value": finite_or_none(self.values[m, c]),
                        "lower": finite_or_none(lower[m, c]),
                        "upper": finite_or_none(upper[m, c]),
                    }
                    for c, column in enumerate(self.columns)
                }
                for m, metric in enumerate(self.metrics)
            },
        }


@dataclass(frozen=True)
class Evaluation:
    """A model's metrics on one test split, overall and per subgroup."""

    task: str
    label_names: tuple[str, ...]
    thresholds: FloatArray
    """Per label (NaN for multiclass: the arg-max is the prediction)."""
    threshold_notes: tuple[str, ...]
    resamples: int
    groups: dict[str, MetricTable]
    """``"all"`` and one entry per subgroup (``"sex=F"``, ``"age=40-64"``, ...)."""
    threshold_rule: str = THRESHOLD_RULE
    confidence: float = DEFAULT_CONFIDENCE

    @property
    def overall(self) -> MetricTable:
        return self.groups[ALL]

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "labels": list(self.label_names),
            "threshold_rule": self.threshold_rule,
            "thresholds": {
                name: finite_or_none(value)
                for name, value in zip(self.label_names, self.thresholds, strict=True)
            },
            "threshold_notes": list(self.threshold_notes),
            "bootstrap": {"resamples": self.resamples, "confidence": self.confidence},
            "groups": {name: table.as_dict() for name, table in self.groups.items()},
        }


def evaluate_scores(
    validation: Scores,
    test: Scores,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int | bytes = 0,
    subgroups: bool = True,
    age_edges: tuple[float, ...] = DEFAULT_AGE_EDGES,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Evaluation:
    """Evaluate test scores at thresholds chosen on validation scores (module docstring)."""
    if validation.label_names != test.label_names or validation.task != test.task:
        raise DataError("validation and test scores are of different labels or tasks")
    if len(test) == 0:
        raise DataError("the test split is empty; set a test fraction above 0")
    thresholds, notes = youden_thresholds(validation)
    predictions = test.predictions(thresholds)
    counts = resample_counts(len(test), resamples, seed)
    observed = np.ones((1, len(test)), dtype=np.float32)
    masks = subgroup_masks(test.attributes, age_edges) if subgroups else {}
    masks = {ALL: np.ones(len(test), dtype=bool), **masks}
    groups = {}
    for name, mask in masks.items():
        if mask.sum() < 2:
            continue
        part = test.subset(mask)
        values = metric_table(part, predictions[mask], observed[:, mask])[0]
        defined = np.isfinite(values[:, :-1])  # the labels the mean covers, per metric
        replicates = metric_table(part, predictions[mask], counts[:, mask], mean_over=defined)
        groups[name] = MetricTable(
            columns=(*test.label_names, MEAN),
            values=values,
            replicates=replicates.astype(np.float32),
            num_examples=int(mask.sum()),
            positives=tuple(int(v) for v in part.targets.sum(axis=0)),
            confidence=confidence,
        )
    return Evaluation(
        task=str(test.task),
        label_names=test.label_names,
        thresholds=thresholds,
        threshold_notes=tuple(notes),
        resamples=resamples,
        groups=groups,
        confidence=confidence,
    )


@dataclass(frozen=True)
class Difference:
    """m_A − m_B per metric and column of one group, with interval and paired p-value."""

    columns: tuple[str, ...]
    values: FloatArray
    lower: FloatArray
    upper: FloatArray
    p_values: FloatArray
    metrics: tuple[str, ...] = METRICS

    def as_dict(self) -> dict[str, Any]:
        return {
            metric: {
                column: {
                    "difference": finite_or_none(self.values[m, c]),
                    "lower": finite_or_none(self.lower[m, c]),
                    "upper": finite_or_none(self.upper[m, c]),
                    "p_value": finite_or_none(self.p_values[m, c]),
                }
                for c, column in enumerate(self.columns)
            }
            for m, metric in enumerate(self.metrics)
        }


@dataclass(frozen=True)
class Comparison:
    """Model A against model B on the same samples, per group both evaluations have."""

    groups: dict[str, Difference] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {name: difference.as_dict() for name, difference in self.groups.items()}


def difference(a: MetricTable, b: MetricTable) -> Difference:
    """A − B of two tables of the same samples and resamples."""
    if a.columns != b.columns or a.metrics != b.metrics:
        raise DataError("the two evaluations are of different labels or metrics")
    if a.num_examples != b.num_examples or a.replicates.shape != b.replicates.shape:
        raise DataError(
            "the two evaluations are not of the same samples and resamples "
            f"({a.num_examples} vs {b.num_examples} examples, {a.replicates.shape[0]} vs "
            f"{b.replicates.shape[0]} resamples); evaluate both on the same data with the "
            "same seed"
        )
    replicate_differences = a.replicates.astype(np.float64) - b.replicates.astype(np.float64)
    lower, upper = interval(replicate_differences, a.confidence)
    return Difference(
        columns=a.columns,
        values=a.values - b.values,
        lower=lower,
        upper=upper,
        p_values=paired_p_value(a.values, b.values, a.replicates, b.replicates),
        metrics=a.metrics,
    )


def compare(a: Evaluation, b: Evaluation) -> Comparison:
    """Differences A − B with paired p-values, for each group both evaluated."""
    if a.label_names != b.label_names:
        raise DataError(
            f"the models predict different labels ({list(a.label_names)} vs {list(b.label_names)})"
        )
    return Comparison(
        groups={
            name: difference(a.groups[name], b.groups[name])
            for name in a.groups
            if name in b.groups
        }
    )


def finite_or_none(value: float) -> float | None:
    """``value`` as a float for JSON, None when it is NaN or infinite (undefined)."""
    value = float(value)
    return value if math.isfinite(value) else None


__all__ = [
    "Comparison",
    "Difference",
    "Estimate",
    "Evaluation",
    "MetricTable",
    "compare",
    "difference",
    "evaluate_scores",
]
