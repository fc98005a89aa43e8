"""The re-identification audit's files: ``report.json``, ``report.html`` and a PNG per
example pair (the two radiographs side by side, upscaled without smoothing)."""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from primia import __version__
from primia.audit.reid import ReidAudit
from primia.audit.verifier import SiameseVerifier, save_verifier
from primia.files import atomic_write_bytes
from primia.reports import line_chart, render

MIN_TILE_PX = 96
GAP_PX = 6


@dataclass(frozen=True)
class ReidFiles:
    json: Path
    html: Path
    pairs: list[Path]


def write_reid_report(
    audit: ReidAudit, out: Path, verifier: SiameseVerifier | None = None
) -> ReidFiles:
    """The report files; given ``verifier``, also ``verifier.safetensors`` (for the
    inversion audit's ``--verifier``)."""
    out.mkdir(parents=True, exist_ok=True)
    if verifier is not None:
        save_verifier(out / "verifier.safetensors", verifier, int(audit.settings["image_size"]))
    json_path = out / "report.json"
    document = {"primia": __version__, **audit.as_dict()}
    atomic_write_bytes(json_path, (json.dumps(document, indent=2) + "\n").encode())
    pairs = []
    for kind, (first, second) in ((k, (a, b)) for k, (a, b, _) in audit.examples.items()):
        path = out / f"pair-{re.sub(r'[^a-z]+', '-', kind).strip('-')}.png"
        buffer = io.BytesIO()
        Image.fromarray(_side_by_side(first, second)).save(buffer, format="PNG")
        atomic_write_bytes(path, buffer.getvalue())
        pairs.append(path)
    html_path = out / "report.html"
    atomic_write_bytes(html_path, _page(audit, pairs).encode())
    return ReidFiles(json=json_path, html=html_path, pairs=pairs)


def _side_by_side(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    scale = max(1, math.ceil(MIN_TILE_PX / first.shape[-1]))
    tiles = [
        np.kron(np.asarray(image, dtype=np.uint8), np.ones((scale, scale), np.uint8))
        for image in (first, second)
    ]
    gap = np.full((tiles[0].shape[0], GAP_PX), 255, dtype=np.uint8)
    return np.concatenate([tiles[0], gap, tiles[1]], axis=1)


def _page(audit: ReidAudit, pairs: list[Path]) -> str:
    """The page, from ``templates/reid.html``; validation AUROC per epoch as a chart."""
    figures = [
        {"src": path.name, "kind": kind, "score": score}
        for path, (kind, (_, _, score)) in zip(pairs, audit.examples.items(), strict=True)
    ]
    chart = line_chart(
        [(float(r["epoch"]), float(r["val_auroc"])) for r in audit.history],
        label="validation AUROC per epoch",
    )
    return render(
        "reid.html",
        version=__version__,
        model=audit.settings.get("model", ""),
        audit=audit,
        figures=figures,
        chart=chart,
    )
