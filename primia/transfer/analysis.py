"""The transfer matrix's figures from its cells: pure arithmetic on metrics and replicates.

For a model trained at site s and one metric m (mean AUROC over labels by default):

* **cell** (s, t): m of the model on site t's test split, with its bootstrap interval;
* **drop** of s: m(s, s) − mean_{t≠s} m(s, t), the on-site minus the cross-site figure;
* **mean drop** of a privacy level: the mean of its site-local models' drops;
* **DP vs non-DP**: the mean drop at ε minus the mean drop without DP, with a paired
  bootstrap p-value; and per subgroup, the mean over all cells of m_ε − m_non-DP.

Every derived figure is computed on each bootstrap replicate too: the replicates of one
site are paired across models (the node resamples with the same secret seed), and those of
different sites are independent, so replicate b of a combination is the combination of
the replicates b (:mod:`primia.evaluate.bootstrap`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from primia.evaluate.bootstrap import interval, paired_p_value
from primia.evaluate.evaluation import Estimate, Evaluation, finite_or_none
from primia.evaluate.metrics import MEAN
from primia.evaluate.subgroups import ALL
from primia.transfer.matrix import FEDERATED, ModelPlan, level_name

Figure = tuple[float, np.ndarray]
"""A value and its bootstrap replicates."""


def analyse(
    models: Sequence[ModelPlan],
    sites: Sequence[str],
    cells: Mapping[tuple[str, str], Evaluation],
    *,
    metric: str = "auroc",
) -> dict[str, Any]:
    """Every figure of the matrix (module docstring), JSON-ready, by privacy level."""
    levels: list[float | None] = list(dict.fromkeys(m.epsilon for m in models))
    by_level: dict[str, Any] = {}
    has_baseline = None in levels
    for epsilon in levels:
        level_models = [m for m in models if m.epsilon == epsilon]
        local = [m for m in level_models if m.trained_at != FEDERATED]
        matrix = {
            m.trained_at: {
                t: _estimate(_figure(cells, m, t, metric))
                for t in sites
                if (m.model_id, t) in cells
            }
            for m in level_models
        }
        drops = {m.trained_at: _drop(cells, m, sites, metric) for m in local}
        entry: dict[str, Any] = {
            "matrix": matrix,
            "drop": {site: _drop_dict(figures) for site, figures in drops.items() if figures},
        }
        complete = [figures for figures in drops.values() if figures]
        if complete and len(complete) == len(local):
            entry["mean_drop"] = _estimate(_mean([f["drop"] for f in complete]))
        if epsilon is not None and has_baseline:
            entry["vs_non_dp"] = _versus_baseline(models, sites, cells, epsilon, metric)
        by_level[level_name(epsilon)] = entry
    return {"metric": f"{metric} ({MEAN} over labels)", "sites": list(sites), "levels": by_level}


def _versus_baseline(
    models: Sequence[ModelPlan],
    sites: Sequence[str],
    cells: Mapping[tuple[str, str], Evaluation],
    epsilon: float,
    metric: str,
) -> dict[str, Any]:
    private = {m.trained_at: m for m in models if m.epsilon == epsilon}
    baseline = {m.trained_at: m for m in models if m.epsilon is None}
    result: dict[str, Any] = {}
    drops_private, drops_baseline = [], []
    for site in sites:
        if site in private and site in baseline:
            drop_private = _drop(cells, private[site], sites, metric)
            drop_baseline = _drop(cells, baseline[site], sites, metric)
            if drop_private and drop_baseline:
                drops_private.append(drop_private["drop"])
                drops_baseline.append(drop_baseline["drop"])
    if drops_private and len(drops_private) == len([s for s in sites if s in private]):
        result["mean_drop_difference"] = _difference(_mean(drops_private), _mean(drops_baseline))
    pairs = [(private[name], baseline[name]) for name in private if name in baseline]
    groups = sorted({g for ev in cells.values() for g in ev.groups if g != ALL})
    subgroup_differences = {}
    for group in [ALL, *groups]:
        a_figures, b_figures = [], []
        for model_a, model_b in pairs:
            for site in sites:
                a = _figure(cells, model_a, site, metric, group)
                b = _figure(cells, model_b, site, metric, group)
                if a is not None and b is not None:
                    a_figures.append(a)
                    b_figures.append(b)
        if a_figures:
            subgroup_differences[group] = _difference(_mean(a_figures), _mean(b_figures))
    result["difference_by_group"] = subgroup_differences
    return result


def _figure(
    cells: Mapping[tuple[str, str], Evaluation],
    model: ModelPlan,
    site: str,
    metric: str,
    group: str = ALL,
) -> Figure | None:
    evaluation = cells.get((model.model_id, site))
    if evaluation is None or group not in evaluation.groups:
        return None
    table = evaluation.groups[group]
    row, column = table.metrics.index(metric), table.columns.index(MEAN)
    return float(table.values[row, column]), table.replicates[:, row, column].astype(np.float64)


def _drop(
    cells: Mapping[tuple[str, str], Evaluation],
    model: ModelPlan,
    sites: Sequence[str],
    metric: str,
) -> dict[str, Figure]:
    """On-site, cross-site and drop figures of a site-local model; {} until complete."""
    on_site = _figure(cells, model, model.trained_at, metric)
    cross = [_figure(cells, model, t, metric) for t in sites if t != model.trained_at]
    if on_site is None or not cross or any(c is None for c in cross):
        return {}
    cross_site = _mean([c for c in cross if c is not None])
    return {
        "on_site": on_site,
        "cross_site": cross_site,
        "drop": (on_site[0] - cross_site[0], on_site[1] - cross_site[1]),
    }


def _mean(figures: Sequence[Figure]) -> Figure:
    return (
        float(np.mean([value for value, _ in figures])),
        np.mean(np.stack([replicates for _, replicates in figures]), axis=0),
    )


def _estimate(figure: Figure | None) -> dict[str, float | None]:
    if figure is None:
        return {"value": None, "lower": None, "upper": None}
    value, replicates = figure
    lower, upper = interval(replicates)
    return Estimate(value, float(lower), float(upper)).as_dict()


def _drop_dict(figures: dict[str, Figure]) -> dict[str, Any]:
    return {name: _estimate(figure) for name, figure in figures.items()}


def _difference(a: Figure, b: Figure) -> dict[str, float | None]:
    lower, upper = interval(a[1] - b[1])
    p_value = paired_p_value(a[0], b[0], a[1], b[1])
    return {
        "difference": finite_or_none(a[0] - b[0]),
        "lower": finite_or_none(float(lower)),
        "upper": finite_or_none(float(upper)),
        "p_value": finite_or_none(float(p_value)),
    }
