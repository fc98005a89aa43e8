"""The transfer matrix's files: ``matrix.json``, ``matrix.csv``, a heatmap PNG per privacy
level and ``report.html`` that shows them.

* ``matrix.json``: the settings, every figure of :func:`primia.transfer.analysis.analyse`,
  and the timings;
* ``matrix.csv``: one row per cell (privacy level, trained at, tested at) with every
  metric's mean over labels and its interval;
* ``heatmap-<level>.png``: rows trained at, columns tested at, colour and text the mean
  AUROC (with its 95% interval), a colour legend; cells below 0.5 (worse than chance)
  marked, and listed as a warning in ``report.html`` (:func:`below_chance`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from primia import __version__
from primia.evaluate.evaluation import Evaluation
from primia.evaluate.metrics import MEAN, METRICS
from primia.files import atomic_write_bytes
from primia.reports import render
from primia.transfer.matrix import ModelPlan, level_name, level_tag


@dataclass(frozen=True)
class MatrixFiles:
    json: Path
    csv: Path
    heatmaps: list[Path]
    html: Path


def write_matrix_report(
    out: Path,
    *,
    summary: dict[str, Any],
    analysis: dict[str, Any],
    models: list[ModelPlan],
    cells: Mapping[tuple[str, str], Evaluation],
    timings: dict[str, float],
) -> MatrixFiles:
    out.mkdir(parents=True, exist_ok=True)
    document = {"primia": __version__, "settings": summary, **analysis, "timings": timings}
    json_path = out / "matrix.json"
    atomic_write_bytes(json_path, (json.dumps(document, indent=2) + "\n").encode())
    csv_path = out / "matrix.csv"
    atomic_write_bytes(csv_path, _csv(models, summary["sites"], cells).encode())
    heatmaps = []
    for epsilon in dict.fromkeys(m.epsilon for m in models):
        name = level_name(epsilon)
        path = out / f"heatmap-{level_tag(epsilon)}.png"
        buffer = io.BytesIO()
        heatmap(analysis["levels"][name]["matrix"], summary["sites"], title=name).save(
            buffer, format="PNG"
        )
        atomic_write_bytes(path, buffer.getvalue())
        heatmaps.append(path)
    html_path = out / "report.html"
    atomic_write_bytes(html_path, _html(document, heatmaps).encode())
    return MatrixFiles(json=json_path, csv=csv_path, heatmaps=heatmaps, html=html_path)


def _csv(
    models: list[ModelPlan], sites: list[str], cells: Mapping[tuple[str, str], Evaluation]
) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["level", "model", "trained_at", "tested_at", "examples"]
    for metric in METRICS:
        header += [metric, f"{metric}_lower", f"{metric}_upper"]
    writer.writerow(header)
    for model in models:
        for site in sites:
            evaluation = cells.get((model.model_id, site))
            if evaluation is None:
                continue
            table = evaluation.overall
            row: list[Any] = [
                level_name(model.epsilon),
                model.model_id,
                model.trained_at,
                site,
                table.num_examples,
            ]
            for metric in METRICS:
                estimate = table.estimate(metric, MEAN)
                row += [_cell(estimate.value), _cell(estimate.lower), _cell(estimate.upper)]
            writer.writerow(row)
    return buffer.getvalue()


def _cell(value: float) -> str:
    return "" if not np.isfinite(value) else f"{value:.4f}"


# --- heatmap ----------------------------------------------------------------------------

# A perceptually ordered ramp (dark blue → teal → yellow), sampled from low to high.
_RAMP = np.array(
    [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], dtype=float
)


def _colour(fraction: float) -> tuple[int, int, int]:
    position = float(np.clip(fraction, 0, 1)) * (len(_RAMP) - 1)
    low = int(np.floor(position))
    high = min(low + 1, len(_RAMP) - 1)
    mixed = _RAMP[low] + (_RAMP[high] - _RAMP[low]) * (position - low)
    return int(mixed[0]), int(mixed[1]), int(mixed[2])


CHANCE = 0.5
"""The AUROC of a model that ranks at random."""


def below_chance(analysis: Mapping[str, Any]) -> list[tuple[str, str, str, float]]:
    """The cells whose mean AUROC is below :data:`CHANCE`: (level, trained at, tested at,
    AUROC). Such a model ranks the other way round at that site: look for labels in
    another order, a site whose findings are coded differently, or too few test images."""
    return [
        (level, trained_at, site, float(estimate["value"]))
        for level, entry in analysis["levels"].items()
        for trained_at, row in entry["matrix"].items()
        for site, estimate in row.items()
        if estimate.get("value") is not None and estimate["value"] < CHANCE
    ]


def heatmap(
    matrix: Mapping[str, Mapping[str, Mapping[str, float | None]]],
    sites: list[str],
    *,
    title: str,
    low: float = 0.5,
    high: float = 1.0,
) -> Image.Image:
    """The matrix as an image: a row per model (trained at), a column per test site; the
    colour runs from ``low`` to ``high`` AUROC (the legend on the right); each cell shows
    the value and interval, and a cell below chance (0.5) says so."""
    rows = list(matrix)
    cell_w, cell_h, left, top = 150, 64, 130, 70
    legend_w = 110
    grid_right = left + cell_w * len(sites)
    width = grid_right + legend_w
    height = top + max(cell_h * len(rows), 150) + 20
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=14)
    small = ImageFont.load_default(size=11)
    # The default font has no Greek letters or arrows.
    draw.text((10, 8), f"mean AUROC, {title.replace('ε=', 'epsilon = ')}", fill="black", font=font)
    draw.text((left, 34), "tested at (columns)", fill="#555555", font=small)
    draw.text((10, top - 18), "trained at (rows)", fill="#555555", font=small)
    for j, site in enumerate(sites):
        draw.text((left + j * cell_w + 8, top - 18), site, fill="black", font=font)
    for i, row in enumerate(rows):
        y = top + i * cell_h
        draw.text((10, y + cell_h // 2 - 8), row, fill="black", font=font)
        for j, site in enumerate(sites):
            x = left + j * cell_w
            estimate = matrix[row].get(site, {})
            value = estimate.get("value")
            if value is None:
                draw.rectangle((x, y, x + cell_w - 2, y + cell_h - 2), fill="#dddddd")
                draw.text((x + 8, y + 8), "n/a", fill="black", font=font)
                continue
            fill = _colour((value - low) / (high - low))
            draw.rectangle((x, y, x + cell_w - 2, y + cell_h - 2), fill=fill)
            ink = "black" if sum(fill) > 380 else "white"
            draw.text((x + 8, y + 10), f"{value:.3f}", fill=ink, font=font)
            if value < CHANCE:
                draw.text((x + 70, y + 12), "< chance", fill=ink, font=small)
            lower, upper = estimate.get("lower"), estimate.get("upper")
            if lower is not None and upper is not None:
                draw.text((x + 8, y + 34), f"[{lower:.3f}, {upper:.3f}]", fill=ink, font=small)
            if row == site:
                draw.rectangle((x, y, x + cell_w - 2, y + cell_h - 2), outline="red", width=2)
    _legend(draw, grid_right + 20, top, low=low, high=high, font=small)
    return image


def _legend(
    draw: ImageDraw.ImageDraw,
    x: int,
    y: int,
    *,
    low: float,
    high: float,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
) -> None:
    """A vertical colour bar, ``high`` at the top, with its ends and middle labelled."""
    bar_w, bar_h = 16, 130
    for k in range(bar_h):
        draw.line((x, y + k, x + bar_w, y + k), fill=_colour(1 - k / (bar_h - 1)))
    draw.rectangle((x, y, x + bar_w, y + bar_h), outline="#555555")
    middle = (low + high) / 2
    for fraction, value in ((0.0, high), (0.5, middle), (1.0, low)):
        label = f"{value:.2f}" + (" or less" if value == low else "")
        draw.text((x + bar_w + 4, y + fraction * bar_h - 6), label, fill="black", font=font)
    draw.text((x, y + bar_h + 6), "AUROC", fill="#555555", font=font)


# --- report.html ------------------------------------------------------------------------


def _html(document: dict[str, Any], heatmaps: list[Path]) -> str:
    """The page, from ``templates/transfer.html`` (every value escaped by the template)."""
    settings = document["settings"]
    return render(
        "transfer.html",
        version=document["primia"],
        sites=", ".join(settings["sites"]),
        rounds=settings["rounds"],
        resamples=settings["resamples"],
        seconds=f"{document['timings'].get('total_seconds', 0):.0f}",
        summary=_summary_rows(document),
        below_chance=below_chance(document),
        chance=CHANCE,
        levels=[
            {
                "name": name,
                "heatmap": path.name,
                "drop": _drop_rows(level),
                "groups": _group_rows(level.get("vs_non_dp", {}).get("difference_by_group")),
            }
            for path, (name, level) in zip(heatmaps, document["levels"].items(), strict=True)
        ],
    )


def _summary_rows(document: dict[str, Any]) -> list[list[str]]:
    """Per privacy level: the mean drop, and its difference from the non-DP drop."""
    rows = []
    for name, level in document["levels"].items():
        drop = level.get("mean_drop", {})
        versus = level.get("vs_non_dp", {}).get("mean_drop_difference", {})
        rows.append(
            [
                name,
                f"{_fmt(drop.get('value'))} {_interval(drop)}",
                f"{_fmt(versus.get('difference'))} {_interval(versus)}",
                _fmt(versus.get("p_value")),
            ]
        )
    return rows


def _drop_rows(level: dict[str, Any]) -> list[list[str]]:
    """Per site's own model: on-site, mean cross-site AUROC and the drop."""
    return [
        [
            site,
            _fmt(figures["on_site"]["value"]),
            _fmt(figures["cross_site"]["value"]),
            f"{_fmt(figures['drop']['value'])} {_interval(figures['drop'])}",
        ]
        for site, figures in level["drop"].items()
    ]


def _group_rows(groups: dict[str, Any] | None) -> list[list[str]]:
    """Per patient group: the DP models' AUROC minus the non-DP models', with its P."""
    return [
        [group, f"{_fmt(d['difference'])} {_interval(d)}", _fmt(d["p_value"])]
        for group, d in (groups or {}).items()
    ]


def _interval(estimate: Mapping[str, Any]) -> str:
    lower, upper = estimate.get("lower"), estimate.get("upper")
    if lower is None or upper is None:
        return ""
    return f"[{lower:.3f}, {upper:.3f}]"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
