"""primia's HTML pages rendered from Jinja2 templates shipped in the package.

Every page (the reports and the dashboard) renders through :func:`render`, whose
environment escapes every substituted value (autoescape on): a node name or a device
string, which remote parties choose, is text in the page and never markup. One stylesheet
(``report.css``) is inlined into each page, so a report is one self-contained file.
Charts of data (AUROC per round, ε per node) are inline SVG drawn by :func:`line_chart`,
:func:`lines_chart` and :func:`bar_chart`; no script or font is fetched from anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup, escape

__all__ = ["Markup", "bar_chart", "line_chart", "lines_chart", "render", "stylesheet"]


@cache
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("primia.reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.globals["stylesheet"] = Markup(stylesheet())
    return environment


@cache
def stylesheet() -> str:
    """The shipped ``report.css``."""
    return (resources.files("primia.reports") / "report.css").read_text()


def render(template: str, **context: Any) -> str:
    """The page ``templates/<template>`` with ``context``; every value is escaped unless it
    is :class:`Markup` (already-safe HTML such as a chart or an escaped table)."""
    return _environment().get_template(template).render(**context)


def line_chart(
    points: Sequence[tuple[float, float | None]],
    *,
    label: str,
    width: int = 420,
    height: int = 160,
) -> Markup:
    """A polyline of ``(x, y)`` points as inline SVG; see :func:`lines_chart`."""
    return lines_chart({"": points}, label=label, width=width, height=height)


SERIES_CLASSES = 6
"""Distinct series colours in ``report.css`` (``s0`` … ``s5``); more series reuse them."""
MAX_DOTS = 40
"""A series of more points is drawn as its line alone: a dot with its tooltip per point
would make a long run's chart (polled every few seconds) many times larger."""


def lines_chart(
    series: Mapping[str, Sequence[tuple[float, float | None]]],
    *,
    label: str,
    width: int = 420,
    height: int = 160,
) -> Markup:
    """One polyline per named series of ``(x, y)`` points as inline SVG, all on one scale:
    y from the points' range (a flat set to a band of ±0.5 around it), x likewise. Points
    whose y is None or not finite are skipped; with no point left it draws "no data".
    Each point is a dot with its value as a tooltip, up to :data:`MAX_DOTS` a series.
    Named series get a legend line each (names escaped); a single unnamed one none."""
    kept = {
        name: [(x, y) for x, y in points if y is not None and math.isfinite(y)]
        for name, points in series.items()
    }
    finite = [point for points in kept.values() for point in points]
    if not finite:
        return _empty(label, width, height)
    xs = [x for x, _ in finite]
    ys = [y for _, y in finite]
    low, high = min(ys), max(ys)
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    left, right = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    pad = 28
    named = [name for name in kept if name]
    legend = 14 * len(named)
    height += legend

    def place(x: float, y: float) -> tuple[float, float]:
        px = pad + (x - left) / (right - left) * (width - 2 * pad)
        py = height - legend - pad - (y - low) / (high - low) * (height - legend - 2 * pad)
        return px, py

    parts = [
        f'<svg class="chart" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><title>{escape(label)}</title>'
        f'<text x="{pad}" y="14">{escape(label)}</text>'
        f'<text x="2" y="{pad + 4}">{high:.3g}</text>'
        f'<text x="2" y="{height - legend - pad}">{low:.3g}</text>'
    ]
    for index, (name, points) in enumerate(kept.items()):
        colour = f"s{index % SERIES_CLASSES}"
        placed = [place(x, y) for x, y in points]
        parts.append(
            f'<g class="{colour}"><polyline fill="none" points="'
            + " ".join(f"{px:.1f},{py:.1f}" for px, py in placed)
            + '"/>'
            + "".join(
                f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3"><title>'
                f"{escape(name + ' ' if name else '')}{x:g}: {y:.4f}</title></circle>"
                for (x, y), (px, py) in zip(points, placed, strict=True)
                if len(points) <= MAX_DOTS
            )
            + "</g>"
        )
    for row, name in enumerate(named):
        y = height - legend + 14 * row + 10
        index = list(kept).index(name) % SERIES_CLASSES
        parts.append(
            f'<g class="s{index}"><rect x="{pad}" y="{y - 8}" width="10" height="10"/>'
            f'<text x="{pad + 14}" y="{y + 1}">{escape(name)}</text></g>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_chart(
    bars: Sequence[tuple[str, float, float]],
    *,
    label: str,
    width: int = 420,
) -> Markup:
    """Horizontal bars of ``(name, value, limit)``: each bar's length is value/limit of
    the width (capped at the full width, and red when value exceeds limit)."""
    if not bars:
        return _empty(label, width, 60)
    row = 22
    height = 24 + row * len(bars)
    parts = [
        f'<svg class="chart" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><title>{escape(label)}</title>'
        f'<text x="0" y="14">{escape(label)}</text>'
    ]
    track = width - 160
    for index, (name, value, limit) in enumerate(bars):
        fraction = min(1.0, value / limit) if limit > 0 else 0.0
        y = 20 + index * row
        over = " over" if limit > 0 and value > limit else ""
        parts.append(
            f'<text x="0" y="{y + 14}">{escape(name)}</text>'
            f'<rect class="track" x="110" y="{y + 3}" width="{track}" height="14"/>'
            f'<rect class="bar{over}" x="110" y="{y + 3}" width="{fraction * track:.1f}" '
            f'height="14"/><text x="{114 + track}" y="{y + 14}">{value:.2f}/{limit:g}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _empty(label: str, width: int, height: int) -> Markup:
    return Markup(
        f'<svg class="chart" role="img" width="{width}" height="{height}"><title>'
        f'{escape(label)}</title><text x="0" y="14">{escape(label)}: no data</text></svg>'
    )
