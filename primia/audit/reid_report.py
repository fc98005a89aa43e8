"""The re-identification audit's files: ``report.json``, ``report.html`` and a PNG per
example pair (the two radiographs side by side, upscaled without smoothing)."""

from __future__ import annotations

import html
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
    auroc = audit.auroc
    figures = "".join(
        f"<figure><img src='{_e(path.name)}' alt='{_e(kind)}'><figcaption>{_e(kind)}: "
        f"same-patient probability {score:.3f}</figcaption></figure>"
        for path, (kind, (_, _, score)) in zip(pairs, audit.examples.items(), strict=True)
    )
    history = "".join(
        f"<tr><td>{int(r['epoch'])}</td><td>{r['train_loss']:.4f}</td>"
        f"<td>{r['val_auroc']:.3f}</td></tr>"
        for r in audit.history
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Re-identification audit</title>
<style>body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto;
padding: 0 1rem; }} table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc;
padding: 0.2rem 0.5rem; }} figure {{ display: inline-block; margin: 0.5rem; }}
img {{ image-rendering: pixelated; }}</style></head><body>
<h1>Re-identification audit</h1>
<p>primia {_e(__version__)} · a Siamese verifier ({_e(audit.settings.get("model", ""))})
trained on same/different-patient pairs of the training patients, judged on
{audit.test_patients} test patients it never saw ({audit.test_images} images).</p>
<h2>{_e(audit.verdict)}</h2>
<table>
<tr><th>verification AUROC (95% CI, patient bootstrap)</th><td>{auroc.value:.3f}
[{auroc.lower:.3f}, {auroc.upper:.3f}]</td></tr>
<tr><th>precision@1 (retrieval over the test images)</th><td>{audit.precision_at_1:.3f}
(chance {audit.chance_precision_at_1:.3f})</td></tr>
<tr><th>mAP@R</th><td>{audit.map_at_r:.3f}</td></tr>
<tr><th>pairs: same patient / different</th><td>{audit.positive_pairs} /
{audit.negative_pairs}</td></tr>
<tr><th>best epoch (validation AUROC)</th><td>{audit.best_epoch}</td></tr>
</table>
<p>AUROC 0.5: the verifier cannot tell same-patient pairs from others; 1.0: it always can.
The audit measures this attacker; a stronger one may do better.</p>
<h2>Example pairs</h2>{figures}
<h2>Training</h2><table><tr><th>epoch</th><th>loss</th><th>validation AUROC</th></tr>
{history}</table>
</body></html>
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)
