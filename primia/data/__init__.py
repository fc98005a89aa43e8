"""Radiograph datasets: loaders for the layouts primia understands, and patient-level splits.

:func:`open_dataset` picks the loader from what a path holds; every loader returns a
:class:`RadiographDataset`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from primia.data.dataset import RadiographDataset, Record, Task, only_site
from primia.data.dicom import load_dicom_folder, read_dicom
from primia.data.folder import load_image_folder, subfolders
from primia.data.images import read_image
from primia.data.manifest import load_manifest, parse_task
from primia.data.splits import Splits, patient_split
from primia.errors import ConfigError, DataError

__all__ = [
    "RadiographDataset",
    "Record",
    "Splits",
    "Task",
    "load_dicom_folder",
    "load_image_folder",
    "load_manifest",
    "load_splits",
    "only_site",
    "open_dataset",
    "patient_split",
    "read_dicom",
    "read_image",
]

LAYOUTS = (
    "a CSV manifest (a .csv file, or a folder holding manifest.csv) with path, patient_id and "
    "label columns; or a folder of class folders (NORMAL/, PNEUMONIA/, ...), optionally inside "
    "train/, val/ and test/"
)


def open_dataset(
    path: Path | str,
    *,
    image_size: int,
    label_columns: Sequence[str] | None = None,
    task: Task | str | None = None,
) -> RadiographDataset:
    """The dataset at ``path``, its layout detected.

    * a ``.csv`` file: :func:`load_manifest`;
    * a folder holding ``manifest.csv``: :func:`load_manifest` on it (DICOM rows included);
    * a folder with subfolders: :func:`load_image_folder` (class folders, optionally in split
      folders); ``label_columns`` does not apply and the task can only be multiclass.

    Raises:
        DataError: nothing at ``path``, or a layout not listed above (the message lists them),
            or whatever the chosen loader raises.
        ConfigError: ``label_columns`` or ``task`` given for a class-folder dataset that
            cannot honour them.
    """
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return load_manifest(path, image_size=image_size, label_columns=label_columns, task=task)
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a CSV file or a folder"
        raise DataError(f"dataset path {path} {what}; primia reads {LAYOUTS}")
    if (path / "manifest.csv").is_file():
        return load_manifest(
            path / "manifest.csv", image_size=image_size, label_columns=label_columns, task=task
        )
    if not subfolders(path):
        raise DataError(
            f"{path} holds no manifest.csv and no class folders; primia reads {LAYOUTS}"
        )
    if label_columns is not None or parse_task(task) not in (None, Task.MULTICLASS):
        raise ConfigError(
            f"{path} is a class-folder dataset: its labels are the folder names and its task "
            "is multiclass; leave label_columns and task unset, or use a CSV manifest"
        )
    return load_image_folder(path, image_size=image_size)


def load_splits(
    path: Path | str,
    *,
    image_size: int,
    site: str | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    label_columns: Sequence[str] | None = None,
) -> Splits:
    """The dataset at ``path`` (only ``site``'s images, if given), split by patient: what
    the audits, the anonymizer and ``primia evaluate`` start from."""
    dataset = open_dataset(path, image_size=image_size, label_columns=label_columns)
    if site is not None:
        dataset = only_site(dataset, site)
    return patient_split(dataset, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
