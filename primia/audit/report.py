"""The gradient-inversion audit's report, for the person who decides whether a hospital's
model updates may leave the hospital.

:func:`write_report` writes, into one folder::

    report.json          every number the audits measured (strict JSON: ∞ and NaN as null)
    grid-<label>.png     per audit: originals on top, their reconstructions below, the prior
                         (the dataset's mean image) at the right of both rows
    report.html          one self-contained page: what was simulated, each audit's verdict,
                         metrics, grid and per-image scores, and how to read them

``<label>`` is the audit's defense (``settings["defense"]``), or its index without one;
a label used twice gets ``-2``, ``-3``, ... appended so no grid overwrites another.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from primia import __version__
from primia.audit.results import (
    CAVEAT,
    LEAKAGE_THRESHOLD,
    PSNR_MARGIN_DB,
    REID_ALPHA,
    AttackOutcome,
    ImageScore,
    InversionAudit,
)
from primia.files import atomic_write_bytes
from primia.reports import render

MAX_GRID_IMAGES = 16
"""A grid shows at most this many originals (the HTML says when more were attacked)."""
MIN_TILE_PX = 96
"""Tiles are upscaled by a whole factor to at least this width, so 32-px images stay
legible on screen."""
TILE_GAP = 2
"""White pixels between neighbouring tiles."""
PRIOR_GAP = 10
"""White pixels between the last reconstruction and the prior column, to set it apart."""


@dataclass(frozen=True)
class ReportFiles:
    """The paths :func:`write_report` wrote; ``grids`` in the order of the audits."""

    json: Path
    html: Path
    grids: list[Path]


def write_report(audits: Sequence[InversionAudit], out_dir: Path) -> ReportFiles:
    """Write ``report.json``, one grid PNG per audit and ``report.html`` into ``out_dir``
    (created if missing)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    created = datetime.now(UTC)
    labels = _grid_labels(audits)

    json_path = out_dir / "report.json"
    payload = json.dumps(_report_document(audits, created), indent=2, allow_nan=False) + "\n"
    atomic_write_bytes(json_path, payload.encode())

    grids = []
    for audit, label in zip(audits, labels, strict=True):
        grid_path = out_dir / f"grid-{label}.png"
        buffer = io.BytesIO()
        Image.fromarray(_grid(audit)).save(buffer, format="PNG")
        atomic_write_bytes(grid_path, buffer.getvalue())
        grids.append(grid_path)

    html_path = out_dir / "report.html"
    atomic_write_bytes(html_path, _html_page(audits, grids, created).encode())
    return ReportFiles(json=json_path, html=html_path, grids=grids)


# --- report.json ------------------------------------------------------------------------


def _report_document(audits: Sequence[InversionAudit], created: datetime) -> dict[str, Any]:
    document = {
        "primia_version": __version__,
        "created": created.isoformat(timespec="seconds"),
        "thresholds": {"leakage": LEAKAGE_THRESHOLD, "psnr_margin_db": PSNR_MARGIN_DB},
        "caveat": CAVEAT,
        "audits": [
            {
                "settings": audit.settings,
                "epsilon": audit.epsilon,
                "notes": audit.notes,
                "refusal": audit.refusal,
                "summary": asdict(audit.summary),
                "images": [
                    asdict(score)
                    | {
                        "reconstructed": score.reconstructed,
                        "reidentified": score.reidentified,
                        "leaked": score.leaked,
                    }
                    for score in _scores(audit)
                ],
                "attacks": [
                    {
                        "seconds": outcome.seconds,
                        "attack_loss": outcome.attack_loss,
                        "images": len(outcome.scores),
                    }
                    for outcome in audit.outcomes
                ],
            }
            for audit in audits
        ],
    }
    return _json_safe(document)


def _json_safe(value: Any) -> Any:
    """``value`` as strict JSON values: NaN and ±∞ (the PSNR of an exact copy) as null,
    numpy scalars as Python numbers, paths and other objects in settings as strings."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _scores(audit: InversionAudit) -> list[ImageScore]:
    """Every image's score, outcome after outcome: the order of the grid's columns."""
    return [score for outcome in audit.outcomes for score in outcome.scores]


# --- grids ------------------------------------------------------------------------------


def _grid_labels(audits: Sequence[InversionAudit]) -> list[str]:
    """Each audit's file label: its defense made safe for a file name (or its index), with
    ``-2``, ``-3``, ... appended to a label already taken."""
    labels: list[str] = []
    for index, audit in enumerate(audits):
        defense = re.sub(r"[^A-Za-z0-9._-]+", "-", str(audit.settings.get("defense", "")))
        base = defense.strip("-.") or str(index)
        label, copy = base, 1
        while label in labels:
            copy += 1
            label = f"{base}-{copy}"
        labels.append(label)
    return labels


def _grid(audit: InversionAudit) -> np.ndarray:
    """The grid as ``uint8[H, W]``: up to :data:`MAX_GRID_IMAGES` originals (leaked first)
    on the top row, their reconstructions below, the prior at the right of both rows."""
    originals = np.concatenate([outcome.originals for outcome in audit.outcomes])
    reconstructions = np.concatenate([outcome.reconstructions for outcome in audit.outcomes])
    # Leaked images first, so the grid shows what leaked even when it is cut.
    order = sorted(range(len(originals)), key=lambda i: not _scores(audit)[i].leaked)
    originals, reconstructions = originals[order], reconstructions[order]
    shown = min(len(originals), MAX_GRID_IMAGES)
    scale = _tile_scale(audit.prior.shape[-1])
    tile = audit.prior.shape[-1] * scale
    prior_x = shown * (tile + TILE_GAP) - TILE_GAP + PRIOR_GAP
    canvas = np.full((2 * tile + TILE_GAP, prior_x + tile), 255, dtype=np.uint8)
    for row, images in enumerate((originals, reconstructions)):
        y = row * (tile + TILE_GAP)
        for column in range(shown):
            x = column * (tile + TILE_GAP)
            canvas[y : y + tile, x : x + tile] = _tile(images[column], scale)
        canvas[y : y + tile, prior_x : prior_x + tile] = _tile(audit.prior, scale)
    return canvas


def _tile_scale(size: int) -> int:
    """The whole upscaling factor that makes a ``size``-px image at least
    :data:`MIN_TILE_PX` wide (32 px × 3, 64 px × 2, larger × 1)."""
    return max(1, math.ceil(MIN_TILE_PX / size))


def _tile(image: np.ndarray, scale: int) -> np.ndarray:
    """One image as grey levels, upscaled by nearest neighbour (no smoothing that would
    make a reconstruction look better or worse than it is)."""
    # An attack's optimiser can overshoot [0, 1] or diverge to NaN; show those as the
    # nearest grey level (NaN as black) rather than let the uint8 cast wrap around.
    grey = np.clip(np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0), 0.0, 1.0)
    levels = np.round(grey * 255).astype(np.uint8)
    return np.repeat(np.repeat(levels, scale, axis=0), scale, axis=1)


# --- report.html ------------------------------------------------------------------------

IMAGE_COLUMNS = (
    "leaked",
    "reconstructed",
    "re-identified",
    "attack",
    "dataset index",
    "patient",
    "PSNR (dB)",
    "prior PSNR (dB)",
    "SSIM",
    "prior SSIM",
    "leakage",
    "label accuracy",
    "re-identified image",
    "re-identified patient",
)
"""The columns of each audit's per-image table."""


def _html_page(audits: Sequence[InversionAudit], grids: list[Path], created: datetime) -> str:
    """The page, from ``templates/audit.html`` (every value escaped by the template)."""
    names = [_audit_name(index, audit) for index, audit in enumerate(audits)]
    keys = list(dict.fromkeys(key for audit in audits for key in audit.settings))
    return render(
        "audit.html",
        created=created.strftime("%Y-%m-%d %H:%M UTC"),
        version=__version__,
        explanation=_explanation(audits, names),
        names=names,
        settings=[
            (key, [_plain(audit.settings.get(key, "—")) for audit in audits]) for key in keys
        ],
        audits=[
            _audit_context(audit, name, grid)
            for audit, name, grid in zip(audits, names, grids, strict=True)
        ],
        caveat=CAVEAT,
        image_columns=IMAGE_COLUMNS,
        how_to_read=_how_to_read(),
    )


def _audit_name(index: int, audit: InversionAudit) -> str:
    defense = audit.settings.get("defense")
    # The same index as a grid's file label without a defense (grid-<index>.png).
    return f"defense: {defense}" if defense is not None else f"audit {index}"


def _explanation(audits: Sequence[InversionAudit], names: list[str]) -> str:
    """What was simulated, in one paragraph (the settings table has every detail)."""
    described = []
    for key, phrase in (
        ("attack", "Attack"),
        ("iterations", "Attack iterations"),
        ("model", "Model"),
        ("image_size", "Image size (px)"),
        ("batch_size", "Batch size (images behind each update)"),
        ("local_steps", "Local training steps behind each update"),
    ):
        values = {_plain(audit.settings[key]) for audit in audits if key in audit.settings}
        if values:
            value = values.pop() if len(values) == 1 else "differs between audits (see table)"
            described.append(f"{phrase}: {value}. ")
    return (
        "This report plays the attacker. A hospital trains the shared model on its own "
        "radiographs and sends only a model update; whoever receives that update (the "
        "coordinating server, or anyone who intercepts it) tries to rebuild the radiographs "
        "from it by gradient inversion — searching for images whose update would look the "
        "same. "
        + "".join(described)
        + f"The report holds {len(audits)} audit{'' if len(audits) == 1 else 's'} "
        f"({'; '.join(names)}); each applies its defense to the update before the attacker "
        "sees it. Every reconstruction is "
        "compared with its original, and so is the dataset's mean image (the prior): an "
        "attacker can draw that average radiograph without any update, so a reconstruction "
        "only shows leakage where it is closer to the original than the prior is. All "
        "settings of the simulation are in the table below."
    )


def _audit_context(audit: InversionAudit, name: str, grid: Path) -> dict[str, Any]:
    """One audit's section of the page as plain values."""
    summary = audit.summary
    shown = min(summary.images, MAX_GRID_IMAGES)
    caption = (
        "top: originals (leaked images first); bottom: reconstructions; "
        "right: the prior (dataset mean image)"
    )
    if summary.images > shown:
        caption += f". The grid shows the first {shown} of the {summary.images} attacked images."
    return {
        "name": name,
        "leaks": summary.leaked_images > 0,
        "verdict": summary.verdict,
        "why": _why(audit),
        "findings": findings_line(audit),
        "refusal": refusal_line(audit) if audit.refusal is not None else None,
        "epsilon": _number(audit.epsilon) if audit.epsilon is not None else None,
        "metrics": _metrics(audit),
        "grid": grid.name,
        "caption": caption,
        "images": _image_rows(audit.outcomes),
        "notes": audit.notes,
    }


def _why(audit: InversionAudit) -> str:
    """The per-image rule and which images met it."""
    s = audit.summary
    leaked = [score for score in _scores(audit) if score.leaked]
    which = ", ".join(f"#{score.dataset_index} (patient {score.patient_id})" for score in leaked)
    return (
        f"An image leaks when it is reconstructed (its PSNR ≥ the prior's + {PSNR_MARGIN_DB} "
        f"dB and its leakage value ≥ {LEAKAGE_THRESHOLD}) or re-identified (its nearest image "
        "is the original or the patient's, or the verifier links it to the patient, by a "
        "method that beats chance over the audit's images). "
        f"Reconstructed: {s.reconstructed_images} of {s.images}; re-identified: "
        f"{s.reidentified_any} of {s.images}."
        + (f" Leaked: {which}." if leaked else "")
        + (
            f" Not counted, as chance alone reaches as many hits (p > {REID_ALPHA} / methods "
            f"tested): re-identification by {', '.join(s.chance_level)}."
            if s.chance_level
            else ""
        )
    )


def findings_line(audit: InversionAudit) -> str:
    """Label recovery as what it is: leakage of the patients' findings."""
    s = audit.summary
    return (
        f"Findings (labels) leaked: all findings recovered exactly for {s.labels_exact_images} "
        f"of {s.images} images ({_percent(s.label_accuracy)} of labels right); a diagnosis "
        "is patient data."
    )


def refusal_line(audit: InversionAudit) -> str:
    """What primia's checks do against this threat, beside what would leak without them."""
    return (
        f"{audit.refusal}. The verdict above is what leaks without that check; with it "
        "(primia's default), no update is sent."
    )


def _metrics(audit: InversionAudit) -> list[tuple[str, str, str]]:
    """The summary table's rows: measure, value, what to compare it with."""
    s = audit.summary
    return [
        ("Mean PSNR", f"{_number(s.psnr)} dB", f"prior: {_number(s.prior_psnr)} dB"),
        ("Mean SSIM", _number(s.ssim), f"prior: {_number(s.prior_ssim)}"),
        ("Mean squared error", _number(s.mse, 4), ""),
        ("Leakage value", _number(s.leakage), f"threshold: {LEAKAGE_THRESHOLD}"),
        ("Label-recovery accuracy", _percent(s.label_accuracy), ""),
        ("Re-identified images", _percent(s.reidentified_images), "nearest image is the original"),
        (
            "Re-identified patients",
            _percent(s.reidentified_patients),
            "nearest image is the same patient's",
        ),
        *(
            [
                (
                    "Re-identified by the verifier",
                    _percent(s.reidentified_by_verifier),
                    "its best match among the other images is the same patient's",
                )
            ]
            if s.reidentified_by_verifier is not None
            else []
        ),
        ("Seconds per attack", _number(s.seconds_per_attack, 1), f"{len(audit.outcomes)} attacks"),
        ("Images attacked", str(s.images), ""),
    ]


def _image_rows(outcomes: Sequence[AttackOutcome]) -> list[tuple[str, ...]]:
    """The per-image table's rows (:data:`IMAGE_COLUMNS`), leaked images first."""
    rows: list[tuple[str, ...]] = []
    ordered = sorted(
        (
            (attack, score)
            for attack, outcome in enumerate(outcomes, start=1)
            for score in outcome.scores
        ),
        key=lambda pair: not pair[1].leaked,
    )
    for attack, score in ordered:
        rows.append(
            (
                "LEAKED" if score.leaked else "no leak found",
                "yes" if score.reconstructed else "no",
                "yes" if score.reidentified else "no",
                str(attack),
                str(score.dataset_index),
                score.patient_id,
                _number(score.psnr),
                _number(score.prior_psnr),
                _number(score.ssim),
                _number(score.prior_ssim),
                _number(score.leakage),
                _percent(score.label_accuracy),
                "yes" if score.nearest_image_correct else "no",
                "yes" if score.nearest_patient_correct else "no",
            )
        )
    return rows


def _how_to_read() -> list[str]:
    """The paragraphs of "How to read this"."""
    return [
        "The verdict counts images, not means: an image leaks when it is reconstructed (its "
        f"leakage value ≥ {LEAKAGE_THRESHOLD} and its PSNR ≥ its prior's + {PSNR_MARGIN_DB} "
        "dB) or re-identified (nearest image or patient, or the verifier, by a method whose "
        "hits beat chance: a one-sided test of the audit's hits against the rate a random "
        f"gallery image would give, at {REID_ALPHA} shared by the methods); the verdict says "
        "“leaks: k of N images reconstructed or re-identified”, or, when none did, “no leak "
        "found by these attacks: inconclusive, not a proof of safety”.",
        "The prior is the dataset's mean image: an attacker can produce it without seeing "
        "any update, so it is the baseline a reconstruction has to beat to show that the "
        "update leaked something about a particular radiograph.",
        "Leakage value: (SSIM of the reconstruction − SSIM of the prior) / (1 − SSIM of the "
        "prior). 0 means the reconstruction is no closer to the original than the prior, 1 a "
        "perfect copy; a negative value means it is further from the original than the prior.",
        "PSNR (peak signal-to-noise ratio, in dB) measures the pixel-wise difference between "
        "an original and its reconstruction: higher is closer, an exact copy has an infinite "
        "PSNR (means count it as 100 dB).",
        "SSIM (structural similarity, up to 1 for identical images) compares local "
        "brightness, contrast and structure, closer to how a person compares two images.",
        "Label-recovery accuracy: the share of the images' labels (findings) the attacker "
        "recovered from the update.",
        "Re-identified images: the share of reconstructions whose nearest image in the "
        "hospital's dataset is the original itself. Re-identified patients: the share whose "
        "nearest image belongs to the original's patient — a reconstruction can point to a "
        "patient without matching the exact radiograph.",
        "Caveat: " + CAVEAT,
    ]


def _plain(value: Any) -> str:
    """A settings value as text: lists without brackets, everything else as ``str``."""
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return str(value)


def _number(value: float, digits: int = 2) -> str:
    if math.isnan(value):
        return "—"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.{digits}f}"


def _percent(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.0%}"
