"""Which layout a dataset path holds, named by ``--format`` or detected where unambiguous.

=========  =================================================================================
format     what marks it
=========  =================================================================================
manifest   a ``.csv`` file, or a folder holding ``manifest.csv`` (primia's own manifest)
folder     class folders (``NORMAL/``, ``PNEUMONIA/``), optionally inside train/val/test
nih        ``Data_Entry_2017.csv`` (or ``Data_Entry_2017_v2020.csv``)
chexpert   ``train.csv`` with a ``Frontal/Lateral`` column, here or in ``CheXpert-v1.0*/``
mimic      ``mimic-cxr-2.0.0-metadata.csv`` (or ``.csv.gz``)
vindr      ``image_labels_train.csv``
rsna       ``stage_2_train_labels.csv``
=========  =================================================================================

Detection looks for these marks; a folder with the marks of two formats is refused with a
message naming both, and ``--format`` settles it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from primia.data.collections import (
    MIMIC_TABLES,
    RSNA_LABELS_CSV,
    VINDR_TABLES,
    Collection,
    ReadOptions,
    chexpert_folder,
    nih_entries_csv,
    read_chexpert,
    read_mimic,
    read_nih,
    read_rsna,
    read_vindr,
)
from primia.data.dataset import Task
from primia.data.folder import load_image_folder, subfolders
from primia.data.manifest import load_manifest, parse_task
from primia.data.tables import find_table
from primia.errors import ConfigError, DataError

COLLECTIONS: dict[str, Callable[..., Collection]] = {
    "nih": read_nih,
    "chexpert": read_chexpert,
    "mimic": read_mimic,
    "vindr": read_vindr,
    "rsna": read_rsna,
}
"""The public collections' readers by format name."""

FORMATS = ("manifest", "folder", *COLLECTIONS)
"""Every ``--format`` value."""

_MARKS: dict[str, Callable[[Path], bool]] = {
    "manifest": lambda root: (root / "manifest.csv").is_file(),
    "nih": lambda root: nih_entries_csv(root) is not None,
    "chexpert": lambda root: chexpert_folder(root) is not None,
    "mimic": lambda root: find_table(root, MIMIC_TABLES["metadata"]) is not None,
    "vindr": lambda root: (root / VINDR_TABLES["train"]).is_file(),
    "rsna": lambda root: (root / RSNA_LABELS_CSV).is_file(),
}

LAYOUTS = (
    "a CSV manifest (a .csv file, or a folder holding manifest.csv) with path, patient_id and "
    "label columns; a folder of class folders (NORMAL/, PNEUMONIA/, ...), optionally inside "
    "train/, val/ and test/; or a public collection as downloaded (NIH ChestX-ray14, "
    "CheXpert, MIMIC-CXR-JPG, VinDr-CXR, RSNA Pneumonia; --format nih, chexpert, mimic, "
    "vindr, rsna)"
)


def check_format(name: str | None) -> str | None:
    """``name`` if it is a format (or ``None``); a :class:`ConfigError` listing them if not."""
    if name is not None and name not in FORMATS:
        raise ConfigError(f"unknown dataset format {name!r}; choose one of {', '.join(FORMATS)}")
    return name


def detect_format(path: Path) -> str:
    """The format of the dataset at ``path`` (table in the module docstring).

    Raises:
        DataError: nothing there, no known layout, or the marks of several formats.
    """
    if path.is_file() and path.suffix.lower() == ".csv":
        return "manifest"
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a CSV file or a folder"
        raise DataError(f"dataset path {path} {what}; primia reads {LAYOUTS}")
    found = [name for name, marked in _MARKS.items() if marked(path)]
    if len(found) > 1:
        raise DataError(
            f"{path} looks like several dataset formats ({', '.join(found)}); name the one "
            "to read with --format (format= in the API)"
        )
    if found:
        return found[0]
    if subfolders(path):
        return "folder"
    raise DataError(
        f"{path} holds no manifest.csv and no class folders, nor a public collection's label "
        f"file; primia reads {LAYOUTS}"
    )


def open_collection(
    path: Path | str,
    *,
    image_size: int,
    format: str | None = None,
    options: ReadOptions | None = None,
    label_columns: Sequence[str] | None = None,
    task: Task | str | None = None,
) -> Collection:
    """The dataset at ``path`` read as ``format`` (detected when ``None``), with what its
    reader left out. ``options`` applies to the public collections only; ``label_columns``
    names the labels to keep (primia's naming for a collection), and ``task`` must agree
    with a collection's (binary for one label, multilabel for several).

    Raises:
        ConfigError: an unknown format, or arguments the format cannot honour.
        DataError: whatever detection or the reader raises.
    """
    path = Path(path)
    chosen = check_format(format) or detect_format(path)
    wanted = parse_task(task)
    if chosen == "manifest":
        csv_path = path if path.suffix.lower() == ".csv" else path / "manifest.csv"
        dataset = load_manifest(
            csv_path, image_size=image_size, label_columns=label_columns, task=wanted
        )
        return Collection(dataset, chosen)
    if chosen == "folder":
        if label_columns is not None or wanted not in (None, Task.MULTICLASS):
            raise ConfigError(
                f"{path} is a class-folder dataset: its labels are the folder names and its "
                "task is multiclass; leave label_columns and task unset, or use a CSV manifest"
            )
        return Collection(load_image_folder(path, image_size=image_size), chosen)
    if not path.is_dir():
        raise DataError(f"{path} is not a folder; a {chosen} dataset is the folder it unpacks to")
    collection = COLLECTIONS[chosen](
        path.resolve(), image_size=image_size, options=options, label_columns=label_columns
    )
    if wanted is not None and wanted is not collection.dataset.task:
        count = len(collection.dataset.label_names)
        raise ConfigError(
            f"a {chosen} dataset with {count} label(s) is a {collection.dataset.task.value} "
            f"task, not {wanted.value}; name one label in label_columns for a binary task"
        )
    return collection
