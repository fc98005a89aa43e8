"""The segmenter on a dataset on disk: what ``primia segment train|apply`` do.

* :func:`train_segmenter_on` reads a manifest with mask columns, trains the segmenter
  (:func:`~primia.segment.training.train_segmenter`, patients split into train and
  held-out sets) and writes ``OUT/segmenter.safetensors`` (weights and spec, atomically)
  and ``OUT/segmenter.json`` (held-out Dice per region beside the all-foreground mask's).
* :func:`apply_segmenter` predicts the masks of every image of any dataset primia reads
  (manifest, image folder, public collection) and writes them as 0/255 PNGs with a new
  manifest: the original rows (images by absolute path, patients, sites, demographics,
  labels) plus the mask columns, so the anonymizer's ``--guide masks`` can read it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from primia.data import only_site, open_dataset
from primia.data.dataset import Task
from primia.data.synth import MASK_COLUMNS
from primia.errors import ConfigError
from primia.files import atomic_write_bytes
from primia.segment.masks import SegmenterSpec, dataset_masks, load_segmenter, save_segmenter
from primia.segment.training import predict, train_segmenter
from primia.train.local import resolve_device

EXTRA_COLUMNS = ("view", "sex", "age", "split")


@dataclass(frozen=True)
class SegmentConfig:
    data: Path
    out: Path
    image_size: int = 64
    steps: int = 300
    batch_size: int = 32
    lr: float = 3e-3
    width: int = 8
    heldout_fraction: float = 0.3
    site: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "width"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.heldout_fraction < 1:
            raise ConfigError(
                f"heldout_fraction must be between 0 and 1, got {self.heldout_fraction}"
            )


@dataclass(frozen=True)
class TrainedSegmenter:
    path: Path
    regions: tuple[str, ...]
    dice: tuple[float, ...]
    """Held-out Dice per region."""
    dice_all_foreground: tuple[float, ...]
    heldout_patients: int
    images: int


@dataclass(frozen=True)
class AppliedSegmenter:
    manifest: Path
    images: int
    foreground: tuple[float, ...]
    """Mean share of pixels per region."""


def train_segmenter_on(
    config: SegmentConfig, *, on_step: Callable[[int, float], None] | None = None
) -> TrainedSegmenter:
    """Train on the masks of ``config.data`` and write the checkpoint (module docstring).

    Raises:
        DataError: the manifest has no mask columns (the message names the fix).
    """
    dataset = open_dataset(config.data, image_size=config.image_size)
    if config.site is not None:
        dataset = only_site(dataset, config.site)
    masks = dataset_masks(dataset, config.data).float()
    images = dataset.uint8_tensors()[0].float() / 255
    result = train_segmenter(
        images,
        masks,
        dataset.patient_ids,
        steps=config.steps,
        batch_size=config.batch_size,
        lr=config.lr,
        width=config.width,
        heldout_fraction=config.heldout_fraction,
        seed=config.seed,
        on_step=on_step,
    )
    spec = SegmenterSpec(width=config.width, image_size=config.image_size)
    config.out.mkdir(parents=True, exist_ok=True)
    path = config.out / "segmenter.safetensors"
    save_segmenter(path, result.model, spec)
    trained = TrainedSegmenter(
        path=path,
        regions=spec.regions,
        dice=result.dice,
        dice_all_foreground=result.dice_all_foreground,
        heldout_patients=result.heldout_patients,
        images=len(dataset),
    )
    summary = {
        "regions": list(spec.regions),
        "heldout_dice": dict(zip(spec.regions, result.dice, strict=True)),
        "all_foreground_dice": dict(zip(spec.regions, result.dice_all_foreground, strict=True)),
        "heldout_patients": result.heldout_patients,
        "images": len(dataset),
        "image_size": config.image_size,
        "steps": config.steps,
    }
    atomic_write_bytes(
        config.out / "segmenter.json", (json.dumps(summary, indent=2) + "\n").encode()
    )
    return trained


def apply_segmenter(
    segmenter: Path,
    data: Path,
    out: Path,
    *,
    site: str | None = None,
    device: str = "auto",
    overwrite: bool = False,
    format: str | None = None,
) -> AppliedSegmenter:
    """Predict the masks of every image of ``data`` into ``out`` (module docstring)."""
    model, spec = load_segmenter(segmenter)
    if (out / "manifest.csv").exists() and not overwrite:
        raise ConfigError(f"{out} already holds a manifest; choose another --out or --overwrite")
    dataset = open_dataset(data, image_size=spec.image_size, format=format)
    if site is not None:
        dataset = only_site(dataset, site)
    torch_device = resolve_device(device)
    model = model.to(torch_device)
    images, _ = dataset.uint8_tensors()
    predicted = torch.cat(
        [
            predict(model, images[start : start + 64].to(torch_device).float() / 255).cpu()
            for start in range(0, len(images), 64)
        ]
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    extras = [c for c in EXTRA_COLUMNS if any(c in r.extra for r in dataset.records)]
    multiclass = dataset.task is Task.MULTICLASS
    labels = ["label"] if multiclass else list(dataset.label_names)
    writer.writerow(["path", "patient_id", "site", *extras, *labels, *MASK_COLUMNS])
    (out / "masks").mkdir(parents=True, exist_ok=True)
    for k, record in enumerate(dataset.records):
        names = []
        for channel, region in enumerate(spec.regions):
            relative = Path("masks") / f"{k:06d}_{region}.png"
            png = io.BytesIO()
            pixels = (predicted[k, channel].numpy() * 255).astype(np.uint8)
            Image.fromarray(pixels).save(png, format="PNG")
            atomic_write_bytes(out / relative, png.getvalue())
            names.append(relative.as_posix())
        values = [dataset.label_names[record.labels[0]]] if multiclass else list(record.labels)
        writer.writerow(
            [
                str(record.path.resolve()),
                record.patient_id,
                record.site,
                *(record.extra.get(c, "") for c in extras),
                *values,
                *names,
            ]
        )
    manifest = out / "manifest.csv"
    atomic_write_bytes(manifest, buffer.getvalue().encode())
    foreground = tuple(float(v) for v in predicted.mean(dim=(0, 2, 3)))
    return AppliedSegmenter(manifest=manifest, images=len(dataset), foreground=foreground)
