"""primia's HTML pages rendered from Jinja2 templates shipped in the package.

Every page (the reports and the dashboard) renders through :func:`render`, whose
environment escapes every substituted value (autoescape on): a node name or a device
string, which remote parties choose, is text in the page and never markup. One stylesheet
(``report.css``) is inlined into each page, so a report is one self-contained file.
Charts of data (AUROC per round, ε per node) are inline SVG drawn by :func:`line_chart`
and :func:`bar_chart`; no script or font is fetched from anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup, escape

__all__ = ["Markup", "bar_chart", "line_chart", "render", "stylesheet"]


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
    """A polyline of ``(x, y)`` points as inline SVG, y scaled to the points' range (a
    flat series to a band of ±0.5 around it); points whose y is None or not finite are
    skipped. An empty series draws "no data"."""
    finite = [(x, y) for x, y in points if y is not None and math.isfinite(y)]
    if not finite:
        return _empty(label, width, height)
    xs = [x for x, _ in finite]
    ys = [y for _, y in finite]
    low, high = min(ys), max(ys)
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    left, right = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    pad = 28

    def place(x: float, y: float) -> str:
        px = pad + (x - left) / (right - left) * (width - 2 * pad)
        py = height - pad - (y - low) / (high - low) * (height - 2 * pad)
        return f"{px:.1f},{py:.1f}"

    dots = "".join(
        f'<circle cx="{place(x, y).split(",")[0]}" cy="{place(x, y).split(",")[1]}" r="3">'
        f"<title>{x:g}: {y:.4f}</title></circle>"
        for x, y in finite
    )
    return Markup(
        f'<svg class="chart" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><title>{escape(label)}</title>'
        f'<text x="{pad}" y="14">{escape(label)}</text>'
        f'<text x="2" y="{pad + 4}">{high:.3g}</text>'
        f'<text x="2" y="{height - pad}">{low:.3g}</text>'
        f'<polyline fill="none" points="{" ".join(place(x, y) for x, y in finite)}"/>'
        f"{dots}</svg>"
    )


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
