"""Anonymize a dataset: every image through a trained generator, a manifest beside them.

The copy is a manifest folder (``manifest.csv`` and ``images/``) that every primia loader
reads: the labels, the anonymized pixels at the generator's image size, each patient under
a keyed pseudonym instead of the original ID, and the demographics that
:class:`~primia.anonymize.pseudonyms.Deidentification` keeps (coarsened or dropped on
request); ``anonymization.json`` beside the manifest says what is kept. Binary and
multilabel datasets only (their labels are 0/1 columns).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from primia.anonymize.checkpoint import load_generator
from primia.anonymize.pseudonyms import Deidentification, load_or_create_key, pseudonyms
from primia.data import only_site, open_dataset
from primia.data.dataset import Task
from primia.errors import ConfigError, DataError
from primia.files import atomic_write_bytes
from primia.segment.masks import dataset_masks
from primia.train.local import resolve_device
from primia.train.loops import to_float

ATTRIBUTES = ("view", "sex", "age", "split")


@dataclass(frozen=True)
class AppliedAnonymizer:
    out: Path
    images: int
    image_size: int
    key: Path
    """The pseudonymization key, kept at the hospital."""
    columns: dict[str, str]
    """Column → what the copy holds (also in ``OUT/anonymization.json``)."""


@torch.no_grad()
def anonymize_images(
    generator: torch.nn.Module,
    images: torch.Tensor,
    device: torch.device,
    batch_size: int = 64,
    masks: torch.Tensor | None = None,
) -> torch.Tensor:
    """``uint8[N, 1, S, S]`` through ``generator``, rounded back to ``uint8``; ``masks``
    (``[N, R, S, S]`` 0/1) for a generator guided by given masks."""
    generator = generator.to(device).eval()
    parts = []
    for start in range(0, len(images), batch_size):
        batch = to_float(images[start : start + batch_size], device)
        if masks is None:
            anonymized = generator(batch)
        else:
            anonymized = generator(batch, masks[start : start + batch_size].to(device).float())
        parts.append((anonymized * 255.0).round().clamp(0, 255).to(torch.uint8).cpu())
    return torch.cat(parts) if parts else images.clone()


def apply_anonymizer(
    generator_path: Path,
    data: Path,
    out: Path,
    *,
    site: str | None = None,
    device: str = "auto",
    overwrite: bool = False,
    deidentification: Deidentification | None = None,
) -> AppliedAnonymizer:
    """Write the anonymized copy of ``data`` (only ``site``'s images, if given) to ``out``.

    Guarantee: no original ``patient_id`` and no source file name reaches ``out``; patients
    keep one pseudonym each (so per-patient splits still hold), see
    :mod:`primia.anonymize.pseudonyms`.
    """
    deidentification = deidentification or Deidentification()
    key_path = deidentification.key_path(out)
    generator, spec = load_generator(generator_path)
    dataset = open_dataset(data, image_size=spec.image_size)
    if site is not None:
        dataset = only_site(dataset, site)
    if dataset.task is Task.MULTICLASS:
        raise DataError(
            "apply writes binary and multilabel manifests; a multiclass dataset is not "
            "supported yet"
        )
    if (out / "manifest.csv").exists() and not overwrite:
        raise ConfigError(f"{out} already holds a manifest; choose another --out or --overwrite")
    ids = pseudonyms(load_or_create_key(key_path), dataset.patient_ids)
    images, _ = dataset.uint8_tensors()
    masks = dataset_masks(dataset, data) if spec.guide == "masks" else None
    anonymized = anonymize_images(generator, images, resolve_device(device), masks=masks)
    (out / "images").mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    present = [a for a in ATTRIBUTES if any(a in record.extra for record in dataset.records)]
    attributes = [a for a in present if a not in deidentification.drop]
    keep_site = "site" not in deidentification.drop
    writer.writerow(
        ["path", "patient_id", *(["site"] if keep_site else []), *attributes, *dataset.label_names]
    )
    for k, record in enumerate(dataset.records):
        relative = Path("images") / f"{k:06d}.png"
        png = io.BytesIO()
        Image.fromarray(anonymized[k, 0].numpy().astype(np.uint8)).save(png, format="PNG")
        atomic_write_bytes(out / relative, png.getvalue())
        writer.writerow(
            [
                relative.as_posix(),
                ids[record.patient_id],
                *([record.site] if keep_site else []),
                *(_attribute(deidentification, record.extra, name) for name in attributes),
                *record.labels,
            ]
        )
    atomic_write_bytes(out / "manifest.csv", buffer.getvalue().encode())
    sites = ["site"] if any(dataset.sites) else []
    columns = deidentification.describe([*sites, *present])
    report = {"images": len(dataset), "image_size": spec.image_size, "columns": columns}
    atomic_write_bytes(out / "anonymization.json", (json.dumps(report, indent=2) + "\n").encode())
    return AppliedAnonymizer(
        out=out, images=len(dataset), image_size=spec.image_size, key=key_path, columns=columns
    )


def _attribute(deidentification: Deidentification, extra: dict[str, str], name: str) -> str:
    value = extra.get(name, "")
    return deidentification.age(value) if name == "age" else value
