"""``report.html`` of ``primia evaluate``: one page a clinician can read.

Per finding: the operating point (the threshold chosen on the validation split, Youden's
J), and at it, on the test split, sensitivity and specificity, with AUROC (which needs no
threshold); each with its 95% bootstrap interval. Then the mean over findings per patient
subgroup, and, given a second model, the paired differences with their P values.
"""

from __future__ import annotations

import math

from primia.evaluate.evaluation import Comparison, Estimate, Evaluation, MetricTable
from primia.evaluate.metrics import MEAN
from primia.reports import render

FINDING_METRICS = ("auroc", "sensitivity", "specificity", "precision", "f1")
"""The columns of the per-finding table."""
GROUP_METRICS = ("auroc", "sensitivity", "specificity")
"""The columns of the subgroup and comparison tables (mean over findings)."""


def estimate_text(estimate: Estimate, separator: str = " ") -> str:
    """``0.812 [0.751, 0.870]``; ``n/a`` where undefined."""
    if not math.isfinite(estimate.value):
        return "n/a"
    if not (math.isfinite(estimate.lower) and math.isfinite(estimate.upper)):
        return f"{estimate.value:.3f}"
    return f"{estimate.value:.3f}{separator}[{estimate.lower:.3f}, {estimate.upper:.3f}]"


def finding_rows(evaluation: Evaluation) -> list[list[str]]:
    """Per finding and the mean: name, positives, threshold, then :data:`FINDING_METRICS`."""
    table = evaluation.overall
    rows = []
    for k, name in enumerate(evaluation.label_names):
        threshold = float(evaluation.thresholds[k])
        rows.append(
            [
                name,
                str(table.positives[k]) if k < len(table.positives) else "",
                "arg-max" if math.isnan(threshold) else f"{threshold:.3f}",
                *(estimate_text(table.estimate(metric, name)) for metric in FINDING_METRICS),
            ]
        )
    rows.append(
        ["mean", "", "", *(estimate_text(table.estimate(m, MEAN)) for m in FINDING_METRICS)]
    )
    return rows


def evaluation_html(
    evaluation: Evaluation,
    *,
    model: str,
    data: str,
    other: Evaluation | None = None,
    other_model: str = "",
    comparison: Comparison | None = None,
) -> str:
    """The page (module docstring), rendered from ``templates/evaluation.html``."""
    compared = other is not None and comparison is not None
    return render(
        "evaluation.html",
        model=model,
        data=data,
        examples=evaluation.overall.num_examples,
        resamples=evaluation.resamples,
        confidence=f"{evaluation.confidence:.0%}",
        threshold_rule=evaluation.threshold_rule,
        finding_header=["finding", "positives", "threshold", *FINDING_METRICS],
        findings=finding_rows(evaluation),
        notes=evaluation.threshold_notes,
        group_header=["group", "images", *GROUP_METRICS],
        groups=_group_rows(evaluation.groups),
        comparison_header=["group", *GROUP_METRICS],
        comparison=comparison_rows(comparison) if compared and comparison is not None else [],
        other_findings=finding_rows(other) if compared and other is not None else [],
        other_model=other_model,
    )


def comparison_rows(comparison: Comparison, separator: str = " ") -> list[list[str]]:
    """Per group: the mean-over-findings difference of each of :data:`GROUP_METRICS`."""
    rows = []
    for name, difference in comparison.groups.items():
        column = difference.columns.index(MEAN)
        cells = []
        for metric in GROUP_METRICS:
            m = difference.metrics.index(metric)
            cells.append(
                f"{difference.values[m, column]:+.3f}{separator}[{difference.lower[m, column]:+.3f}"
                f", {difference.upper[m, column]:+.3f}]{separator}"
                f"(P={difference.p_values[m, column]:.3f})"
            )
        rows.append([name, *cells])
    return rows


def _group_rows(groups: dict[str, MetricTable]) -> list[list[str]]:
    return [
        [name, str(table.num_examples), *(estimate_text(table.estimate(m)) for m in GROUP_METRICS)]
        for name, table in groups.items()
    ]
