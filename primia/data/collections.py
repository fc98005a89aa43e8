"""Public chest-radiograph collections read in the layout they are distributed in.

One reader per collection; each returns a :class:`Collection`: a :class:`RadiographDataset`
whose labels use primia's naming (:func:`primia.data.tables.label_name`), whose records
carry ``site`` and ``extra["sex"]`` (``M``/``F``), ``extra["age"]`` (whole years),
``extra["view"]`` (``PA``, ``AP``, ``LATERAL``, ...) and, where the collection has an
official split, ``extra["split"]``; plus what was left out and why.

Rules every reader follows (:class:`ReadOptions` changes them):

* **Frontal views only** (PA and AP); ``views="all"`` keeps laterals too. A record whose
  view is unknown is kept.
* **Patients stay together**: the patient comes from the collection's own patient column
  (or path), and where a collection's official split has no validation part (NIH, VinDr),
  ``val_fraction`` of the training patients are held out by a hash of the patient ID, so
  one patient is never in two splits and the split is the same on every machine.
* **Uncertain labels** (CheXpert, MIMIC-CXR: −1) follow ``uncertain``: ``ones`` (U-Ones,
  −1 → 1), ``zeros`` (U-Zeros, −1 → 0) or ``ignore`` (an image with −1 in any chosen label
  is left out, since a record holds no per-label mask). A blank cell is 0, "not mentioned".
* **Several readers** (VinDr-CXR's three radiologists per training image) follow ``vote``:
  ``majority`` (positive when more than half of the image's readers mark the finding) or
  ``any`` (when at least one does).
* **A missing image** is an error naming the file and row, unless ``skip_missing`` (then it
  is counted in :attr:`Collection.skipped`): partial downloads are common.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from primia.data.dataset import RadiographDataset, Record, Task
from primia.data.dicom import dicom_header, read_radiograph
from primia.data.tables import (
    FRONTAL_VIEWS,
    Row,
    Table,
    age_years,
    find_table,
    hold_out,
    label_name,
    sex_code,
    view_code,
)
from primia.errors import ConfigError, DataError


class Uncertain(StrEnum):
    ONES = "ones"
    ZEROS = "zeros"
    IGNORE = "ignore"


class Vote(StrEnum):
    MAJORITY = "majority"
    ANY = "any"


class Views(StrEnum):
    FRONTAL = "frontal"
    ALL = "all"


class NamesReadOptions(Protocol):
    """A configuration that carries the reading options as plain fields (a node's
    ``[data]`` table, a training run's config)."""

    @property
    def uncertain(self) -> str: ...
    @property
    def vote(self) -> str: ...
    @property
    def views(self) -> str: ...
    @property
    def skip_missing(self) -> bool: ...


@dataclass(frozen=True)
class ReadOptions:
    """How a collection's labels, views, readers and gaps are read (module docstring)."""

    uncertain: Uncertain | str = Uncertain.ONES
    vote: Vote | str = Vote.MAJORITY
    views: Views | str = Views.FRONTAL
    skip_missing: bool = False
    val_fraction: float = 0.1
    site: str | None = None

    def __post_init__(self) -> None:
        for name, kind in (("uncertain", Uncertain), ("vote", Vote), ("views", Views)):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, kind(value))
            except ValueError:
                choices = ", ".join(member.value for member in kind)
                raise ConfigError(f"unknown {name} {value!r}; choose one of {choices}") from None
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in (0, 1); got {self.val_fraction}")

    @classmethod
    def of(cls, settings: NamesReadOptions) -> ReadOptions:
        """The options a configuration names (checked: unknown values raise ConfigError)."""
        return cls(
            uncertain=settings.uncertain,
            vote=settings.vote,
            views=settings.views,
            skip_missing=settings.skip_missing,
        )


@dataclass(frozen=True)
class Collection:
    """A collection as read: the dataset, its format, and counts of what was left out."""

    dataset: RadiographDataset
    format: str
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass
class _Entry:
    """One image before the filters: labels as 1, 0 or -1 (uncertain) by primia name."""

    path: Path
    labels: dict[str, int]
    patient: str
    source: str
    view: str = ""
    sex: str = ""
    age: str = ""
    split: str = ""


# Cells of CheXpert-style label columns: 1 positive, 0 negative, -1 uncertain, blank unmentioned.
_TRISTATE = {"1": 1, "1.0": 1, "0": 0, "0.0": 0, "-1": -1, "-1.0": -1, "": 0}


def _tristate(table: Table, row: Row, column: str) -> int:
    value = table.cell(row, column)
    if value not in _TRISTATE:
        raise table.error(
            row, column, f"{value!r} is not a label", "labels are 1, 0, -1 (uncertain) or blank"
        )
    return _TRISTATE[value]


def _build(
    entries: Iterable[_Entry],
    *,
    fmt: str,
    all_labels: Sequence[str],
    site: str,
    options: ReadOptions,
    label_columns: Sequence[str] | None,
    image_size: int,
    skipped: dict[str, int] | None = None,
) -> Collection:
    """Apply the view, label, uncertainty and missing-file rules; make the dataset."""
    skipped = dict(skipped or {})
    names = list(all_labels) if label_columns is None else [label_name(c) for c in label_columns]
    unknown = [name for name in names if name not in all_labels]
    if unknown or not names:
        raise ConfigError(
            f"{fmt} has no label {', '.join(map(repr, unknown)) or '(none named)'}; its labels "
            f"are: {', '.join(all_labels)}"
        )
    records: list[Record] = []
    for entry in entries:
        if options.views is Views.FRONTAL and entry.view and entry.view not in FRONTAL_VIEWS:
            skipped["non-frontal view"] = skipped.get("non-frontal view", 0) + 1
            continue
        values = [entry.labels.get(name, 0) for name in names]
        if -1 in values:
            if options.uncertain is Uncertain.IGNORE:
                skipped["uncertain label"] = skipped.get("uncertain label", 0) + 1
                continue
            values = [
                (1 if options.uncertain is Uncertain.ONES else 0) if v < 0 else v for v in values
            ]
        if not entry.path.is_file():
            if not options.skip_missing:
                raise DataError(
                    f"{entry.source}: image {entry.path} does not exist; download it, or pass "
                    "--skip-missing ([data] skip_missing = true on a node) to leave such rows out"
                )
            skipped["missing image"] = skipped.get("missing image", 0) + 1
            continue
        extra = {"sex": entry.sex, "age": entry.age, "view": entry.view, "split": entry.split}
        records.append(
            Record(
                path=entry.path,
                labels=tuple(values),
                patient_id=entry.patient,
                site=site,
                source=entry.source,
                extra={key: value for key, value in extra.items() if value},
            )
        )
    if not records:
        left_out = ", ".join(f"{count} {why}" for why, count in skipped.items()) or "none"
        raise DataError(
            f"no {fmt} images left to read (left out: {left_out}); check the folder, or use "
            "--views all / --skip-missing / another --uncertain policy"
        )
    dataset = RadiographDataset(
        records,
        task=Task.BINARY if len(names) == 1 else Task.MULTILABEL,
        label_names=names,
        image_size=image_size,
        read_image=read_radiograph,
    )
    return Collection(dataset, fmt, skipped)


# ---------------------------------------------------------------------------- NIH ChestX-ray14

NIH_FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening",
    "Hernia", "No Finding",
)  # fmt: skip
"""The 14 findings of ``Data_Entry_2017.csv`` and its ``No Finding``, as spelled there."""


def nih_entries_csv(root: Path) -> Path | None:
    return find_table(root, "Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")


def read_nih(
    root: Path,
    *,
    image_size: int,
    options: ReadOptions | None = None,
    label_columns: Sequence[str] | None = None,
) -> Collection:
    """NIH ChestX-ray14: ``Data_Entry_2017.csv`` (or ``_v2020``), images anywhere under
    ``images*/`` folders by file name, and the official ``train_val_list.txt`` /
    ``test_list.txt`` split when present (validation: ``val_fraction`` of the train_val
    patients). Labels: the 14 findings and ``no_finding``, from ``Finding Labels`` (``|``
    separated). Patient: ``Patient ID``."""
    options = options or ReadOptions()
    csv_path = nih_entries_csv(root)
    if csv_path is None:
        raise DataError(f"{root} has no Data_Entry_2017.csv; is it the NIH ChestX-ray14 folder?")
    table = Table(csv_path, ["Image Index", "Finding Labels", "Patient ID"], what="NIH label file")
    images = {p.name: p for folder in sorted(root.glob("images*")) for p in folder.rglob("*.png")}
    known = {name.lower(): label_name(name) for name in NIH_FINDINGS}
    official = _nih_split(root)
    entries = []
    for row in table:
        name = table.cell(row, "Image Index")
        patient = table.cell(row, "Patient ID")
        if not name or not patient:
            column = "Image Index" if not name else "Patient ID"
            raise table.error(row, column, "is empty", "every row names its image and patient")
        labels = {}
        for finding in table.cell(row, "Finding Labels").split("|"):
            key = known.get(finding.strip().lower())
            if key is None:
                raise table.error(
                    row,
                    "Finding Labels",
                    f"unknown finding {finding!r}",
                    f"findings are {', '.join(NIH_FINDINGS)}, separated by |",
                )
            labels[key] = 1
        split = ""
        if official:
            split = official.get(name, "")
            if not split:
                raise table.error(
                    row,
                    "Image Index",
                    f"{name} is in neither train_val_list.txt nor test_list.txt",
                    "restore the official lists, or remove both",
                )
        entries.append(
            _Entry(
                path=images.get(name, root / "images" / name),
                labels=labels,
                patient=patient,
                source=f"{csv_path} row {row.number}",
                view=view_code(table.cell(row, "View Position")),
                sex=sex_code(table.cell(row, "Patient Gender")),
                age=age_years(table.cell(row, "Patient Age")),
                split=split,
            )
        )
    _hold_out_val(entries, options.val_fraction)
    return _build(
        entries,
        fmt="nih",
        all_labels=list(known.values()),
        site=options.site or "nih",
        options=options,
        label_columns=label_columns,
        image_size=image_size,
    )


def _nih_split(root: Path) -> dict[str, str]:
    """Image name → "train" or "test" from the official lists; empty without them."""
    lists = {"train": root / "train_val_list.txt", "test": root / "test_list.txt"}
    present = [path.is_file() for path in lists.values()]
    if not any(present):
        return {}
    if not all(present):
        missing = next(path for path in lists.values() if not path.is_file())
        raise DataError(
            f"{missing} is missing but its partner list is there; restore it, or remove both "
            "to split by patient at random"
        )
    return {
        line.strip(): split
        for split, path in lists.items()
        for line in path.read_text().splitlines()
        if line.strip()
    }


def _hold_out_val(entries: list[_Entry], fraction: float) -> None:
    """Move ``fraction`` of the training patients to ``val`` (when a split is given)."""
    train = [entry.patient for entry in entries if entry.split == "train"]
    held = hold_out(train, fraction)
    for entry in entries:
        if entry.split == "train" and entry.patient in held:
            entry.split = "val"


# ------------------------------------------------------------------------ CheXpert, MIMIC-CXR

CHEXPERT_OBSERVATIONS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices",
)  # fmt: skip
"""The 14 observations of the CheXpert labeler, in CheXpert's column order and spelling;
MIMIC-CXR-JPG's ``-chexpert.csv`` has the same columns."""

_CHEXPERT_PATIENT = re.compile(r"(patient\d+)")
_CHEXPERT_SPLITS = {"train.csv": "train", "valid.csv": "val", "test.csv": "test"}


def chexpert_folder(root: Path) -> Path | None:
    """The folder holding CheXpert's ``train.csv``: ``root`` or a ``CheXpert-v1.0*`` in it."""
    for folder in [root, *sorted(root.glob("CheXpert-v1.0*"))]:
        train = folder / "train.csv"
        if train.is_file() and "Frontal/Lateral" in _first_line(train):
            return folder
    return None


def _first_line(path: Path) -> str:
    with path.open(encoding="utf-8-sig", errors="replace") as handle:
        return handle.readline()


def read_chexpert(
    root: Path,
    *,
    image_size: int,
    options: ReadOptions | None = None,
    label_columns: Sequence[str] | None = None,
) -> Collection:
    """CheXpert: ``train.csv`` (split ``train``, less ``val_fraction`` of its patients
    when there is no ``valid.csv``), ``valid.csv`` (``val``) and ``test.csv`` (``test``)
    if present. ``Path`` is resolved against the CSV's folder's parent (where the download
    unpacks), else the CSV's folder. Patient: the ``patientNNNNN`` part of ``Path``; view:
    ``AP/PA``, or ``LATERAL`` when ``Frontal/Lateral`` says so."""
    options = options or ReadOptions()
    folder = chexpert_folder(root)
    if folder is None:
        raise DataError(f"{root} has no CheXpert train.csv (with a Frontal/Lateral column)")
    entries: list[_Entry] = []
    for csv_name, split in _CHEXPERT_SPLITS.items():
        if csv_name != "train.csv" and not (folder / csv_name).is_file():
            continue
        table = Table(folder / csv_name, ["Path", *CHEXPERT_OBSERVATIONS], what="CheXpert CSV")
        for row in table:
            raw = table.cell(row, "Path")
            match = _CHEXPERT_PATIENT.search(raw)
            if match is None:
                raise table.error(
                    row,
                    "Path",
                    f"{raw!r} has no patientNNNNN folder",
                    "CheXpert paths look like CheXpert-v1.0/train/patient00001/study1/"
                    "view1_frontal.jpg",
                )
            frontal = table.cell(row, "Frontal/Lateral").lower()
            lateral = frontal == "lateral" or (not frontal and "lateral" in raw.lower())
            entries.append(
                _Entry(
                    path=_chexpert_path(folder, raw),
                    labels={label_name(c): _tristate(table, row, c) for c in CHEXPERT_OBSERVATIONS},
                    patient=match.group(1),
                    source=f"{table.path} row {row.number}",
                    view="LATERAL" if lateral else view_code(table.cell(row, "AP/PA")),
                    sex=sex_code(table.cell(row, "Sex")),
                    age=age_years(table.cell(row, "Age")),
                    split=split,
                )
            )
    if not (folder / "valid.csv").is_file():
        _hold_out_val(entries, options.val_fraction)
    return _build(
        entries,
        fmt="chexpert",
        all_labels=[label_name(c) for c in CHEXPERT_OBSERVATIONS],
        site=options.site or "chexpert",
        options=options,
        label_columns=label_columns,
        image_size=image_size,
    )


def _chexpert_path(folder: Path, raw: str) -> Path:
    relative = Path(raw)
    candidates = [folder.parent / relative, folder / relative]
    if len(relative.parts) > 1:
        candidates.append(folder / Path(*relative.parts[1:]))
    return next((path for path in candidates if path.is_file()), candidates[0])


MIMIC_TABLES = {
    "metadata": "mimic-cxr-2.0.0-metadata.csv",
    "labels": "mimic-cxr-2.0.0-chexpert.csv",
    "split": "mimic-cxr-2.0.0-split.csv",
}
_MIMIC_SPLITS = {"train": "train", "validate": "val", "test": "test"}


def read_mimic(
    root: Path,
    *,
    image_size: int,
    options: ReadOptions | None = None,
    label_columns: Sequence[str] | None = None,
) -> Collection:
    """MIMIC-CXR-JPG: the metadata, CheXpert-label and split CSVs (each plain or ``.gz``)
    joined on ``subject_id`` + ``study_id`` (labels) and ``dicom_id`` (split); images at
    ``files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg``. An image whose study has no label row is
    left out (counted). Sex and age come from MIMIC-IV's ``patients.csv`` (``gender``,
    ``anchor_age``) when it is put beside them. Patient: ``subject_id``."""
    options = options or ReadOptions()
    paths: dict[str, Path] = {}
    for key, name in MIMIC_TABLES.items():
        found_path = find_table(root, name)
        if found_path is None:
            raise DataError(
                f"{root} has no {name} (or .gz); MIMIC-CXR-JPG needs the metadata, chexpert "
                "and split CSVs beside files/"
            )
        paths[key] = found_path
    required = {
        "metadata": ["dicom_id", "subject_id", "study_id", "ViewPosition"],
        "labels": ["subject_id", "study_id", *CHEXPERT_OBSERVATIONS],
        "split": ["dicom_id", "split"],
    }
    tables = {
        key: Table(paths[key], required[key], what=f"MIMIC-CXR {MIMIC_TABLES[key]}")
        for key in MIMIC_TABLES
    }
    labels_table = tables["labels"]
    labels = {
        (labels_table.cell(row, "subject_id"), labels_table.cell(row, "study_id")): {
            label_name(c): _tristate(labels_table, row, c) for c in CHEXPERT_OBSERVATIONS
        }
        for row in labels_table
    }
    split_table = tables["split"]
    splits = {}
    for row in split_table:
        value = split_table.cell(row, "split").lower()
        if value not in _MIMIC_SPLITS:
            raise split_table.error(
                row, "split", f"{value!r} is not a split", "splits are train, validate and test"
            )
        splits[split_table.cell(row, "dicom_id")] = _MIMIC_SPLITS[value]
    people = _mimic_patients(root)
    metadata = tables["metadata"]
    entries = []
    unlabelled = 0
    for row in metadata:
        dicom_id = metadata.cell(row, "dicom_id")
        subject, study = metadata.cell(row, "subject_id"), metadata.cell(row, "study_id")
        found = labels.get((subject, study))
        if found is None:
            unlabelled += 1
            continue
        sex, age = people.get(subject, ("", ""))
        entries.append(
            _Entry(
                path=root
                / "files"
                / f"p{subject[:2]}"
                / f"p{subject}"
                / f"s{study}"
                / f"{dicom_id}.jpg",
                labels=found,
                patient=subject,
                source=f"{metadata.path} row {row.number}",
                view=view_code(metadata.cell(row, "ViewPosition")),
                sex=sex,
                age=age,
                split=splits.get(dicom_id, ""),
            )
        )
    if any(entry.split for entry in entries) and not all(entry.split for entry in entries):
        lacking = next(entry for entry in entries if not entry.split)
        raise DataError(
            f"{lacking.source}: image {lacking.path.stem} has no row in {paths['split']}; "
            "use the split file of the same MIMIC-CXR-JPG release"
        )
    return _build(
        entries,
        fmt="mimic",
        all_labels=[label_name(c) for c in CHEXPERT_OBSERVATIONS],
        site=options.site or "mimic",
        options=options,
        label_columns=label_columns,
        image_size=image_size,
        skipped={"study without labels": unlabelled} if unlabelled else {},
    )


def _mimic_patients(root: Path) -> dict[str, tuple[str, str]]:
    path = find_table(root, "patients.csv")
    if path is None:
        return {}
    table = Table(path, ["subject_id", "gender", "anchor_age"], what="MIMIC-IV patients table")
    return {
        table.cell(row, "subject_id"): (
            sex_code(table.cell(row, "gender")),
            age_years(table.cell(row, "anchor_age")),
        )
        for row in table
    }


# ---------------------------------------------------------------------------- VinDr-CXR, RSNA

VINDR_TABLES = {"train": "image_labels_train.csv", "test": "image_labels_test.csv"}


def read_vindr(
    root: Path,
    *,
    image_size: int,
    options: ReadOptions | None = None,
    label_columns: Sequence[str] | None = None,
) -> Collection:
    """VinDr-CXR: ``image_labels_train.csv`` (one row per radiologist, ``rad_id``, three per
    image; combined by ``vote``) and ``image_labels_test.csv`` (one consensus row per image)
    if present; images ``train/ID.dicom`` and ``test/ID.dicom``. Labels: every column but
    ``image_id`` and ``rad_id``. Patient, sex, age, view: the DICOM tags (the patient being
    the image ID where PatientID is blank, as in the de-identified release)."""
    options = options or ReadOptions()
    entries: list[_Entry] = []
    all_labels: list[str] = []
    for split, name in VINDR_TABLES.items():
        path = root / name
        if split == "test" and not path.is_file():
            continue
        table = Table(path, ["image_id"], what="VinDr-CXR image labels")
        findings = [c for c in table.columns if c and c not in {"image_id", "rad_id"}]
        names = [label_name(c) for c in findings]
        if all_labels and names != all_labels:
            raise DataError(
                f"{path} has other label columns than {VINDR_TABLES['train']}; "
                "use both files of one release"
            )
        all_labels = names
        votes: dict[str, list[list[int]]] = {}
        first_row: dict[str, int] = {}
        for row in table:
            image = table.cell(row, "image_id")
            if not image:
                raise table.error(row, "image_id", "is empty", "every row names its image")
            row_votes = []
            for column in findings:
                value = table.cell(row, column)
                if value not in {"0", "1", "0.0", "1.0"}:
                    raise table.error(
                        row, column, f"{value!r} is not a vote", "each radiologist's vote is 0 or 1"
                    )
                row_votes.append(int(float(value)))
            votes.setdefault(image, []).append(row_votes)
            first_row.setdefault(image, row.number)
        for image, readers in votes.items():
            combined = [
                _combine([vote[i] for vote in readers], options.vote) for i in range(len(findings))
            ]
            entries.append(
                _dicom_entry(
                    root / split / f"{image}.dicom",
                    labels=dict(zip(names, combined, strict=True)),
                    patient=image,
                    source=f"{path} row {first_row[image]}",
                    split=split,
                )
            )
    _hold_out_val(entries, options.val_fraction)
    return _build(
        entries,
        fmt="vindr",
        all_labels=all_labels,
        site=options.site or "vindr",
        options=options,
        label_columns=label_columns,
        image_size=image_size,
    )


def _combine(votes: list[int], rule: Vote | str) -> int:
    """One label from several readers' 0/1 votes: a strict majority, or any one."""
    if rule is Vote.ANY:
        return int(any(votes))
    return int(2 * sum(votes) > len(votes))


def _dicom_entry(
    path: Path, *, labels: dict[str, int], patient: str, source: str, split: str = ""
) -> _Entry:
    """An entry whose patient, sex, age and view come from the DICOM header, if readable."""
    tags = dicom_header(path) if path.is_file() else {}
    return _Entry(
        path=path,
        labels=labels,
        patient=tags.get("PatientID") or patient,
        source=source,
        view=view_code(tags.get("ViewPosition", "")),
        sex=sex_code(tags.get("PatientSex", "")),
        age=age_years(tags.get("PatientAge", "")),
        split=split,
    )


RSNA_LABELS_CSV = "stage_2_train_labels.csv"
RSNA_IMAGES = "stage_2_train_images"


def read_rsna(
    root: Path,
    *,
    image_size: int,
    options: ReadOptions | None = None,
    label_columns: Sequence[str] | None = None,
) -> Collection:
    """RSNA Pneumonia Detection: ``stage_2_train_labels.csv`` (``patientId``, a box,
    ``Target``; one row per box, so several rows per image) → one binary ``pneumonia``
    label per image, 1 when its rows say ``Target`` 1; images
    ``stage_2_train_images/ID.dcm``. No official split with labels: ``patient_split``
    splits by patient. Sex, age, view: the DICOM tags."""
    options = options or ReadOptions()
    path = root / RSNA_LABELS_CSV
    table = Table(path, ["patientId", "Target"], what="RSNA pneumonia labels")
    targets: dict[str, tuple[int, Row]] = {}
    for row in table:
        image = table.cell(row, "patientId")
        if not image:
            raise table.error(row, "patientId", "is empty", "every row names its image")
        value = table.cell(row, "Target")
        if value not in {"0", "1"}:
            raise table.error(row, "Target", f"{value!r} is not a label", "Target is 0 or 1")
        earlier = targets.get(image)
        if earlier is not None and earlier[0] != int(value):
            raise table.error(
                row,
                "Target",
                f"{image} is {value} here but {earlier[0]} in row {earlier[1].number}",
                "every box row of one image has the same Target",
            )
        targets.setdefault(image, (int(value), row))
    entries = [
        _dicom_entry(
            root / RSNA_IMAGES / f"{image}.dcm",
            labels={"pneumonia": target},
            patient=image,
            source=f"{path} row {row.number}",
        )
        for image, (target, row) in targets.items()
    ]
    return _build(
        entries,
        fmt="rsna",
        all_labels=["pneumonia"],
        site=options.site or "rsna",
        options=options,
        label_columns=label_columns,
        image_size=image_size,
    )
