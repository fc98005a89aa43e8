"""Loading a folder of class folders, the layout of the paediatric pneumonia dataset.

Two layouts are understood::

    root/NORMAL/*.jpeg, root/PNEUMONIA/*.jpeg        one folder per class
    root/train/NORMAL/..., root/val/..., root/test/...  split folders, each with the same
                                                     class folders

In the second, every record carries ``extra["split"]`` ("train", "val" or "test"; a
"valid" or "validation" folder counts as "val"), which :func:`primia.data.splits.patient_split`
honours. Hidden files and folders (a leading dot) and ``__MACOSX`` folders are skipped, since
archives made on a Mac carry them.
"""

from __future__ import annotations

import re
from pathlib import Path

from primia.data.dataset import RadiographDataset, Record, Task
from primia.data.dicom import DICOM_SUFFIXES, dicom_patient_id, is_dicom_path, read_radiograph
from primia.data.images import IMAGE_SUFFIXES
from primia.data.splits import SPLIT_ALIASES
from primia.errors import DataError

FILE_SUFFIXES = IMAGE_SUFFIXES | DICOM_SUFFIXES
"""File extensions (lower case) found in class folders."""

# The paediatric set names files person<patient>_<bacteria|virus>_<image>.jpeg.
_PERSON = re.compile(r"^(person\d+)_", re.IGNORECASE)


def _skipped(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def subfolders(folder: Path) -> list[Path]:
    """The folder's subfolders, sorted by name, without hidden and ``__MACOSX`` ones."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _skipped(p.name))


def is_split_layout(root: Path) -> bool:
    """Whether every subfolder of ``root`` is a split folder (train, val, test, ...)."""
    folders = subfolders(root)
    return bool(folders) and all(p.name.lower() in SPLIT_ALIASES for p in folders)


def patient_id_for(path: Path) -> tuple[str, bool]:
    """The patient of one image file, and whether it is only the file's own name.

    ``person1234`` for the paediatric set's ``person1234_bacteria_5678.jpeg``; else a DICOM
    file's PatientID tag; else the file stem (one patient per image, flagged: nothing says
    which images share a patient, so patient-level DP cannot be claimed for them).
    """
    match = _PERSON.match(path.name)
    if match:
        return match.group(1), False
    if is_dicom_path(path) and (tagged := dicom_patient_id(path)):
        return tagged, False
    return path.stem, True


def _images(class_folder: Path) -> list[Path]:
    found = sorted(
        path
        for path in class_folder.rglob("*")
        if path.suffix.lower() in FILE_SUFFIXES
        and not any(_skipped(part) for part in path.relative_to(class_folder).parts)
        and path.is_file()
    )
    if not found:
        raise DataError(
            f"class folder {class_folder} holds no images; add some, or remove the folder "
            f"(looked for {', '.join(sorted(FILE_SUFFIXES))})"
        )
    return found


def _class_folders(folder: Path) -> dict[str, Path]:
    classes = {p.name: p for p in subfolders(folder)}
    if len(classes) < 2:
        found = ", ".join(classes) or "none"
        raise DataError(
            f"{folder} has fewer than 2 class folders (found: {found}); a class-folder dataset "
            "needs one subfolder per class, e.g. NORMAL/ and PNEUMONIA/"
        )
    return classes


def _layout(root: Path) -> dict[str, dict[str, Path]]:
    """Split name ("" for none) → class name → class folder."""
    folders = subfolders(root)
    if not folders:
        what = "is empty" if not any(root.iterdir()) else "has no class folders"
        raise DataError(
            f"{root} {what}; a class-folder dataset has one subfolder of images per class, "
            "optionally inside train/, val/ and test/"
        )
    if not is_split_layout(root):
        splits = [p.name for p in folders if p.name.lower() in SPLIT_ALIASES]
        if splits:
            raise DataError(
                f"{root} mixes split folders ({', '.join(splits)}) with other folders; put "
                "every class folder inside train/, val/ and test/, or use no split folders"
            )
        return {"": _class_folders(root)}
    layout = {SPLIT_ALIASES[p.name.lower()]: _class_folders(p) for p in folders}
    if len(layout) < len(folders):
        raise DataError(
            f"{root} has two folders for one split ({', '.join(p.name for p in folders)}); "
            "merge them"
        )
    names = {split: sorted(classes) for split, classes in layout.items()}
    if len({tuple(classes) for classes in names.values()}) > 1:
        listed = "; ".join(f"{split}: {', '.join(classes)}" for split, classes in names.items())
        raise DataError(
            f"the split folders of {root} hold different class folders ({listed}); "
            "give every split the same class folders"
        )
    return layout


def load_image_folder(root: Path | str, *, image_size: int) -> RadiographDataset:
    """A multiclass dataset from class folders (layouts in the module docstring).

    Class names are the folder names, sorted; images are found recursively by extension
    (PNG, JPEG, TIFF; ``.dcm`` through the DICOM reader). Patients: see :func:`patient_id_for`.

    Raises:
        DataError: the folder is missing or empty, has fewer than 2 class folders, a class
            folder has no images, or split folders disagree on the classes.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}; check the path")
    layout = _layout(root)
    class_names = sorted(next(iter(layout.values())))
    records = [
        Record(
            path=path,
            labels=(index,),
            patient_id=patient,
            source=str(path),
            extra={"split": split} if split else {},
            patient_from_file=from_file,
        )
        for split, classes in layout.items()
        for index, name in enumerate(class_names)
        for path in _images(classes[name])
        for patient, from_file in [patient_id_for(path)]
    ]
    return RadiographDataset(
        records,
        task=Task.MULTICLASS,
        label_names=class_names,
        image_size=image_size,
        read_image=read_radiograph,
    )
