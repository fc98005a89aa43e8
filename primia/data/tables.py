"""The pieces every public-collection reader shares: its CSV tables, label names, subgroups.

A collection's CSV is read into :class:`Table` rows that remember their line number, so a
bad cell is reported as ``FILE row N, column C: ...; FIX``. Labels from every collection
are mapped onto one naming (:func:`label_name`): lower case with underscores, and one name
for one finding whatever a collection calls it (NIH's ``Effusion``, CheXpert's ``Pleural
Effusion`` and VinDr's ``Pleural effusion`` are all ``effusion``), the naming the synthetic
generator uses. Sex, age and view are normalised the same way (:func:`sex_code`,
:func:`age_years`, :func:`view_code`) so subgroup and cross-site code reads one spelling.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from primia.errors import DataError

# Findings that collections spell differently; everything else is just lower-cased.
_SYNONYMS = {
    "pleural_effusion": "effusion",
    "pulmonary_fibrosis": "fibrosis",
    "other_diseases": "other_disease",
    "lung_opacity_pneumonia": "pneumonia",
}

FRONTAL_VIEWS = frozenset({"PA", "AP"})
"""Views kept unless every view is asked for (``views="all"``)."""


def label_name(raw: str) -> str:
    """A collection's finding name in primia's naming: ``"Pleural Effusion"`` → ``effusion``,
    ``"Nodule/Mass"`` → ``nodule_mass``, ``"No Finding"`` → ``no_finding``."""
    name = re.sub(r"[^a-z0-9]+", "_", raw.strip().lower()).strip("_")
    return _SYNONYMS.get(name, name)


def sex_code(raw: str) -> str:
    """``M``, ``F`` or ``""`` (unknown) from ``Male``, ``female``, ``M``, ``O``, ...."""
    value = raw.strip().upper()
    if value in {"M", "MALE"}:
        return "M"
    if value in {"F", "FEMALE"}:
        return "F"
    return ""


_DICOM_AGE = re.compile(r"^(\d{1,3})\s*([DWMY]?)$")


def age_years(raw: str) -> str:
    """Age in whole years as text, ``""`` when unknown or 130 and over: ``"58"``, ``"58.0"``,
    and the DICOM age string ``"058Y"``, ``"006M"`` (→ ``"0"``), ``"010W"``, ``"003D"``."""
    value = raw.strip().upper()
    if not value:
        return ""
    match = _DICOM_AGE.match(value)
    if match:
        number, unit = int(match.group(1)), match.group(2) or "Y"
        days_per_unit = {"D": 1, "W": 7, "M": 30.4375, "Y": 365.25}[unit]
        years = number * days_per_unit / 365.25
    else:
        try:
            years = float(value)
        except ValueError:
            return ""
    # NIH's table holds a few impossible ages (148 Y, 414 Y): unknown rather than wrong.
    return str(int(years)) if 0 <= years < 130 else ""


def view_code(raw: str) -> str:
    """``PA``, ``AP``, ``LATERAL``, or the value upper-cased: CheXpert's ``Lateral`` and
    MIMIC's ``LL`` (left lateral) and ``LATERAL`` are all ``LATERAL``."""
    value = raw.strip().upper()
    if value in {"LATERAL", "LL", "RL", "LAT"}:
        return "LATERAL"
    return value


def stable_fraction(key: str) -> float:
    """A number in [0, 1) fixed by ``key``: the same patient lands on the same side of a
    split on every machine and in every row order (SHA-256, not Python's salted hash)."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) / 16**12


def hold_out(patients: Sequence[str], fraction: float) -> set[str]:
    """``fraction`` of ``patients`` (rounded, at least one when there are two or more),
    the ones with the lowest :func:`stable_fraction`: a validation set carved out of an
    official training split, the same on every run."""
    unique = sorted(set(patients), key=stable_fraction)
    if len(unique) < 2:
        return set()
    count = min(len(unique) - 1, max(1, round(len(unique) * fraction)))
    return set(unique[:count])


@dataclass(frozen=True)
class Row:
    """One CSV row: its line number (header = 1) and its cells by column name."""

    number: int
    cells: dict[str, str]


class Table:
    """A collection's CSV (plain or ``.gz``) with the columns it must have.

    Raises:
        DataError: the file is missing, not UTF-8 CSV, empty, or lacks a required column
            (the message names the file, the missing columns and the columns it has).
    """

    def __init__(self, path: Path, required: Sequence[str], *, what: str) -> None:
        self.path = path
        if not path.is_file():
            raise DataError(f"{what} not found: {path}; check the folder, or pass --format")
        try:
            with _open_text(path) as handle:
                reader = csv.reader(handle)
                header = next(reader, None)
                if header is None:
                    raise DataError(f"{path} is empty; it should be the {what} with a header row")
                self.columns = [name.strip() for name in header]
                # Trailing empty header fields (NIH's Data_Entry_2017.csv ends its header with
                # a comma) and short rows are tolerated: cells are read by name.
                self.rows = [
                    Row(
                        reader.line_num,
                        dict(zip(self.columns, (c.strip() for c in cells), strict=False)),
                    )
                    for cells in reader
                    if cells
                ]
        except UnicodeDecodeError as error:
            raise DataError(f"{path} is not UTF-8 text ({error}); is it the {what}?") from error
        except (csv.Error, OSError, EOFError) as error:
            raise DataError(f"{path} is not readable CSV ({error}); download it again") from error
        missing = [name for name in required if name not in self.columns]
        if missing:
            raise DataError(
                f"{path} has no column {', '.join(map(repr, missing))}; its columns are: "
                f"{', '.join(c for c in self.columns if c)}; is it the {what}? (pass the "
                "right --format, or the original file)"
            )

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows)

    def cell(self, row: Row, column: str) -> str:
        return row.cells.get(column, "")

    def error(self, row: Row, column: str, problem: str, fix: str) -> DataError:
        """``FILE row N, column C: PROBLEM; FIX`` as a :class:`DataError`."""
        return DataError(f"{self.path} row {row.number}, column {column!r}: {problem}; {fix}")


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


def find_table(root: Path, *names: str) -> Path | None:
    """The first of ``names`` (each also tried with ``.gz``) that exists in ``root``."""
    for name in names:
        for candidate in (root / name, root / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None
