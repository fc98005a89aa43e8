"""Radiograph datasets: loaders for the layouts primia understands, and patient-level splits.

:func:`open_dataset` picks the loader from what a path holds (or from ``format``); every
loader returns a :class:`RadiographDataset`. Public collections (NIH ChestX-ray14, CheXpert,
MIMIC-CXR-JPG, VinDr-CXR, RSNA Pneumonia) are read in the layout they are downloaded in.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from primia.data.collections import Collection, ReadOptions
from primia.data.dataset import RadiographDataset, Record, Task, only_site
from primia.data.dicom import load_dicom_folder, read_dicom
from primia.data.folder import load_image_folder
from primia.data.formats import FORMATS, check_format, detect_format, open_collection
from primia.data.images import read_image
from primia.data.inspect import Inspection, inspect_dataset
from primia.data.manifest import load_manifest
from primia.data.splits import Splits, patient_split

__all__ = [
    "FORMATS",
    "Collection",
    "Inspection",
    "RadiographDataset",
    "ReadOptions",
    "Record",
    "Splits",
    "Task",
    "check_format",
    "detect_format",
    "inspect_dataset",
    "load_dicom_folder",
    "load_image_folder",
    "load_manifest",
    "load_splits",
    "only_site",
    "open_collection",
    "open_dataset",
    "patient_split",
    "read_dicom",
    "read_image",
]


def open_dataset(
    path: Path | str,
    *,
    image_size: int,
    label_columns: Sequence[str] | None = None,
    task: Task | str | None = None,
    format: str | None = None,
    options: ReadOptions | None = None,
) -> RadiographDataset:
    """The dataset at ``path``, read as ``format`` or its layout detected
    (:mod:`primia.data.formats` lists them):

    * a ``.csv`` file, or a folder holding ``manifest.csv``: :func:`load_manifest`;
    * a public collection as downloaded (NIH ChestX-ray14, CheXpert, MIMIC-CXR-JPG,
      VinDr-CXR, RSNA Pneumonia): its reader in :mod:`primia.data.collections`, with
      ``options`` (uncertainty policy, vote rule, views, missing images);
    * a folder with subfolders: :func:`load_image_folder` (class folders, optionally in split
      folders); ``label_columns`` does not apply and the task can only be multiclass.

    Raises:
        DataError: nothing at ``path``, or a layout not listed above (the message lists them),
            or whatever the chosen loader raises.
        ConfigError: an unknown format, or ``label_columns`` or ``task`` the layout cannot
            honour.
    """
    return open_collection(
        path,
        image_size=image_size,
        format=format,
        options=options,
        label_columns=label_columns,
        task=task,
    ).dataset


def load_splits(
    path: Path | str,
    *,
    image_size: int,
    site: str | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    label_columns: Sequence[str] | None = None,
    format: str | None = None,
    options: ReadOptions | None = None,
) -> Splits:
    """The dataset at ``path`` (only ``site``'s images, if given), split by patient: what
    the audits, the anonymizer and ``primia evaluate`` start from."""
    dataset = open_dataset(
        path, image_size=image_size, label_columns=label_columns, format=format, options=options
    )
    if site is not None:
        dataset = only_site(dataset, site)
    return patient_split(dataset, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
