"""``report.html`` of ``primia evaluate``: one page a clinician can read.

Per finding: the operating point (the threshold chosen on the validation split, Youden's
J), and at it, on the test split, sensitivity and specificity, with AUROC (which needs no
threshold); each with its 95% bootstrap interval. Then the mean over findings per patient
subgroup, and, given a second model, the paired differences with their P values.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from primia.evaluate.evaluation import Comparison, Estimate, Evaluation, MetricTable
from primia.evaluate.metrics import MEAN

FINDING_METRICS = ("auroc", "sensitivity", "specificity", "precision", "f1")
"""The columns of the per-finding table."""
GROUP_METRICS = ("auroc", "sensitivity", "specificity")
"""The columns of the subgroup and comparison tables (mean over findings)."""

CSS = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto;
       padding: 0 1rem; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: left; }
th { background: #f3f3f3; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #555; }
.warning { border-left: 4px solid #c60; padding-left: 0.6rem; }
"""
"""The style of primia's HTML reports (evaluation, transfer matrix)."""


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
    """The page (module docstring)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>Evaluation</title>',
        f"<style>{CSS}</style></head><body>",
        "<h1>Evaluation</h1>",
        f"<p class='note'>model {_e(model)} · data {_e(data)} · test split, "
        f"{evaluation.overall.num_examples} images · {evaluation.resamples} bootstrap "
        f"resamples, {evaluation.confidence:.0%} intervals</p>",
        f"<h2>Per finding, at the operating point</h2><p>Threshold: "
        f"{_e(evaluation.threshold_rule)}. Sensitivity, specificity, precision and F1 are "
        "at that threshold; AUROC needs none.</p>",
        _table(["finding", "positives", "threshold", *FINDING_METRICS], finding_rows(evaluation)),
        *(f"<p class='note'>note: {_e(note)}</p>" for note in evaluation.threshold_notes),
        "<h2>By patient group (mean over findings)</h2>",
        _table(["group", "images", *GROUP_METRICS], _group_rows(evaluation.groups)),
    ]
    if other is not None and comparison is not None:
        parts += [
            f"<h2>Compared with {_e(other_model)}</h2>",
            _table(["finding", "positives", "threshold", *FINDING_METRICS], finding_rows(other)),
            "<p>This model minus the other, on the same images and resamples: difference "
            "[95% interval] (paired bootstrap P).</p>",
            _table(["group", *GROUP_METRICS], comparison_rows(comparison)),
        ]
    parts += ["</body></html>", ""]
    return "\n".join(parts)


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


def html_table(header: Sequence[str], rows: list[list[str]]) -> str:
    """An HTML table of rows of already escaped cells; the cells after the first are
    numbers (right-aligned)."""
    head = "".join(f"<th>{_e(name)}</th>" for name in header)
    body = "".join(
        f"<tr><td>{row[0]}</td>"
        + "".join(f"<td class='number'>{c}</td>" for c in row[1:])
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _table(header: Sequence[str], rows: list[list[str]]) -> str:
    return html_table(header, [[_e(cell) for cell in row] for row in rows])


def _e(text: str) -> str:
    return html.escape(text, quote=True)
