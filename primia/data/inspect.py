"""What a dataset folder holds, before anything trains on it: ``primia data inspect``.

:func:`inspect_dataset` reads a dataset the way training would (same format detection, same
:class:`~primia.data.collections.ReadOptions`, except that missing images are counted rather
than fatal) and reports images, patients, images per patient, label prevalence, views,
sexes, ages, sites, splits, what the reader left out, and which files cannot be decoded.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from primia.data.collections import ReadOptions
from primia.data.dicom import read_radiograph
from primia.data.formats import open_collection
from primia.errors import DataError

_MAX_UNREADABLE = 20
"""Unreadable files listed by name (all are counted)."""


@dataclass(frozen=True)
class Inspection:
    """A dataset's summary; :meth:`to_dict` is the JSON ``primia data inspect`` writes."""

    path: str
    format: str
    task: str
    images: int
    patients: int
    images_per_patient: dict[str, float]
    prevalence: dict[str, float]
    positives: dict[str, int]
    views: dict[str, int]
    sexes: dict[str, int]
    ages: dict[str, float | int]
    sites: dict[str, int]
    splits: dict[str, int]
    skipped: dict[str, int]
    decoded: bool
    unreadable: int
    unreadable_files: list[dict[str, str]]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _counts(values: list[str]) -> dict[str, int]:
    """Value → count, most common first; ``""`` reported as ``unknown``."""
    return {value or "unknown": n for value, n in Counter(values).most_common()}


def inspect_dataset(
    path: Path | str,
    *,
    format: str | None = None,
    options: ReadOptions | None = None,
    decode: bool = True,
    image_size: int = 32,
) -> Inspection:
    """The summary of the dataset at ``path`` (module docstring).

    ``decode`` reads every image at ``image_size`` pixels to find the unreadable ones
    (the slow part: one decode per file); without it only the tables are read.

    Raises:
        DataError, ConfigError: what :func:`primia.data.open_collection` raises, except for
            missing images of a public collection, which are counted under ``skipped``.
    """
    options = dataclasses.replace(options or ReadOptions(), skip_missing=True)
    collection = open_collection(path, image_size=image_size, format=format, options=options)
    dataset = collection.dataset
    records = dataset.records
    per_patient = list(Counter(dataset.patient_ids).values())
    targets = dataset.targets()
    if targets.ndim == 1:  # multiclass: one class index per image
        positives = {name: int((targets == i).sum()) for i, name in enumerate(dataset.label_names)}
    else:
        positives = {name: int(targets[:, i].sum()) for i, name in enumerate(dataset.label_names)}
    ages = [int(r.extra["age"]) for r in records if r.extra.get("age", "").isdigit()]
    unreadable: list[dict[str, str]] = []
    count = 0
    if decode:
        for record in records:
            try:
                read_radiograph(record.path, image_size)
            except DataError as error:
                count += 1
                if len(unreadable) < _MAX_UNREADABLE:
                    unreadable.append({"path": str(record.path), "error": str(error)})
    return Inspection(
        path=str(path),
        format=collection.format,
        task=dataset.task.value,
        images=len(records),
        patients=len(per_patient),
        images_per_patient={
            "min": min(per_patient),
            "median": float(statistics.median(per_patient)),
            "mean": round(len(records) / len(per_patient), 3),
            "max": max(per_patient),
        },
        prevalence={name: round(n / len(records), 4) for name, n in positives.items()},
        positives=positives,
        views=_counts([r.extra.get("view", "") for r in records]),
        sexes=_counts([r.extra.get("sex", "") for r in records]),
        ages=(
            {
                "known": len(ages),
                "min": min(ages),
                "median": float(statistics.median(ages)),
                "max": max(ages),
            }
            if ages
            else {"known": 0}
        ),
        sites=_counts(dataset.sites),
        splits=_counts([r.extra.get("split", "") for r in records]),
        skipped=dict(collection.skipped),
        decoded=decode,
        unreadable=count,
        unreadable_files=unreadable,
    )
