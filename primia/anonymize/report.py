"""The anonymization evaluation's files: ``evaluation.json``, ``curve.png`` and
``report.html`` (from ``templates/anonymization.html``, autoescaped, the shared
``report.css``; the curve is ``curve.png`` beside the page, shown by the reports' shared
``figure`` macro like every report's pictures).

The curve plots, per generator, the retrained attacker's linkage AUROC (x, mean ± std
over runs as a horizontal bar) against the classification AUROC on anonymized images (y),
beside the unanonymized point and PriCheXy-Net's published linkage AUROCs (dashed
verticals: another dataset, so only the x axis compares). Drawn with Pillow, no plotting
library.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from primia import __version__
from primia.anonymize.evaluation import PRICHEXY_NET, AnonymizerCurve, weak_measures
from primia.files import atomic_write_bytes
from primia.reports import render

WIDTH, HEIGHT, MARGIN = 640, 440, 60
CURVE_FILENAME = "curve.png"
COLOURS = {"none": (31, 119, 180), "masks": (44, 160, 44), "segmenter": (44, 160, 44)}
NOISE_COLOUR = (214, 39, 40)

NOT_ANONYMITY = (
    "A lower AUROC of this attacker is not anonymity: it says what one verifier, retrained "
    "on anonymized images, still links. A stronger attacker, another architecture, more "
    "images per patient or side information (age, sex, site, dates) may link more; the "
    "images are pseudonymized data, not anonymous data."
)


@dataclass(frozen=True)
class AnonymizationFiles:
    json: Path
    png: Path
    html: Path


def write_anonymization_report(curve: AnonymizerCurve, out: Path) -> AnonymizationFiles:
    """Write the three files into ``out`` (atomically each)."""
    out.mkdir(parents=True, exist_ok=True)
    document = {"primia": __version__, **curve.as_dict(), "caution": NOT_ANONYMITY}
    json_path = out / "evaluation.json"
    atomic_write_bytes(json_path, (json.dumps(document, indent=2) + "\n").encode())
    png = curve_png(curve)
    png_path = out / CURVE_FILENAME
    atomic_write_bytes(png_path, png)
    html_path = out / "report.html"
    atomic_write_bytes(html_path, page(curve).encode())
    return AnonymizationFiles(json=json_path, png=png_path, html=html_path)


def verdict(curve: AnonymizerCurve) -> str:
    """What the curve shows, never "anonymous" or "safe" (:data:`NOT_ANONYMITY`)."""
    baseline = curve.baseline.auroc.value
    best = min(curve.points, key=lambda p: p.linkage_auroc[0])
    mean, std = best.linkage_auroc
    original = curve.original.overall.estimate("auroc").value
    loss = original - best.classification_auroc
    cautions = "".join(f"; {caution}" for caution in weak_measures(baseline, original))
    return (
        f"the retrained attacker's AUROC falls from {baseline:.3f} to {mean:.3f} ± {std:.3f} "
        f"at best ({best.label}), at a classification AUROC loss of {loss:+.3f}; this "
        f"attacker links less, which does not make the images anonymous{cautions}"
    )


def page(curve: AnonymizerCurve) -> str:
    original = curve.original.overall.estimate("auroc")
    rows = []
    for point in curve.points:
        mean, std = point.linkage_auroc
        difference = point.utility.groups["all"].as_dict()["auroc"]["mean"]
        rows.append(
            {
                "label": point.label,
                "linkage": f"{mean:.3f} ± {std:.3f}",
                "fall": f"{curve.baseline.auroc.value - mean:+.3f}",
                "classification": f"{point.classification_auroc:.3f}",
                "difference": f"{difference['difference']:+.3f}",
                "p_value": "n/a"
                if difference["p_value"] is None
                else f"{difference['p_value']:.3f}",
                "runs": len(point.linkage),
            }
        )
    return render(
        "anonymization.html",
        version=__version__,
        verdict=verdict(curve),
        caution=NOT_ANONYMITY,
        baseline=f"{curve.baseline.auroc.value:.3f}",
        original=f"{original.value:.3f}",
        rows=rows,
        reference=PRICHEXY_NET,
        curve_src=CURVE_FILENAME,
    )


def curve_png(curve: AnonymizerCurve) -> bytes:
    """The curve as a PNG (module docstring)."""
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    original = curve.original.overall.estimate("auroc").value
    xs = [curve.baseline.auroc.value, *PRICHEXY_NET]
    ys = [original]
    for point in curve.points:
        mean, std = point.linkage_auroc
        xs += [mean - std, mean + std]
        ys.append(point.classification_auroc)
    x_low, x_high = min(0.5, *xs) - 0.02, max(xs) + 0.02
    y_low, y_high = min(ys) - 0.03, max(ys) + 0.03

    def place(x: float, y: float) -> tuple[float, float]:
        px = MARGIN + (x - x_low) / (x_high - x_low) * (WIDTH - 2 * MARGIN)
        py = HEIGHT - MARGIN - (y - y_low) / (y_high - y_low) * (HEIGHT - 2 * MARGIN)
        return px, py

    left, bottom = place(x_low, y_low)
    right, top = place(x_high, y_high)
    draw.rectangle([left, top, right, bottom], outline="black")
    for tick in range(6):
        x = x_low + tick * (x_high - x_low) / 5
        y = y_low + tick * (y_high - y_low) / 5
        px, _ = place(x, y_low)
        _, py = place(x_low, y)
        draw.line([px, bottom, px, bottom + 4], fill="black")
        draw.text((px - 12, bottom + 6), f"{x:.2f}", fill="black")
        draw.line([left - 4, py, left, py], fill="black")
        draw.text((left - 40, py - 6), f"{y:.2f}", fill="black")
    draw.text(
        (left, bottom + 22),
        "linkage AUROC of the retrained attacker (lower: links less)",
        fill="black",
    )
    draw.text((left, 8), "classification AUROC on anonymized images (y)", fill="black")
    for value, name in zip(
        PRICHEXY_NET, ("PriCheXy-Net before", "PriCheXy-Net after"), strict=True
    ):
        px, _ = place(value, y_low)
        for y in range(int(top), int(bottom), 8):
            draw.line([px, y, px, y + 4], fill="grey")
        # labels near the right edge go left of their line, so they stay in the picture
        text_x = px + 3 if px < WIDTH - 150 else px - 3 - draw.textlength(name)
        draw.text((text_x, top + 4 + 14 * name.endswith("after")), name, fill="grey")
    bx, by = place(curve.baseline.auroc.value, original)
    draw.rectangle([bx - 5, by - 5, bx + 5, by + 5], fill="black")
    draw.text((bx - 80, by + 8), "unanonymized", fill="black")
    for point in curve.points:
        mean, std = point.linkage_auroc
        colour = NOISE_COLOUR if point.kind == "noise" else COLOURS[point.guide]
        px, py = place(mean, point.classification_auroc)
        low, _ = place(mean - std, point.classification_auroc)
        high, _ = place(mean + std, point.classification_auroc)
        draw.line([low, py, high, py], fill=colour, width=2)
        draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=colour)
        draw.text((px + 6, py - 12), point.label.replace("μ", "mu"), fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
