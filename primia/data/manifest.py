"""Loading a CSV manifest: one row per image with its path, patient, site and labels.

Columns:

* ``path`` (required): the image, relative to the manifest's folder or absolute. ``.dcm``
  and ``.dicom`` files are read as DICOM, everything else with Pillow.
* ``patient_id`` (required): every image of one patient carries the same ID, so that splits
  keep a patient's images together. A DICOM row may leave it empty (or the column may be
  absent when every row is DICOM): it then takes the file's PatientID tag.
* ``site``, ``view``, ``sex``, ``age``, ``split`` (optional): ``site`` goes to
  :attr:`Record.site`, the others, and any column that is not a label, to
  :attr:`Record.extra` (empty cells left out).
* label columns; see :func:`load_manifest` for how they and the task are chosen.

Row numbers in messages are line numbers of the file, the header being row 1, as a
spreadsheet shows them.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from primia.data.dataset import RadiographDataset, Record, Task
from primia.data.dicom import dicom_patient_id, is_dicom_path, read_radiograph
from primia.errors import ConfigError, DataError

RESERVED_COLUMNS = frozenset({"path", "patient_id", "site", "view", "sex", "age", "split"})
"""Columns that are never taken as labels unless named in ``label_columns``."""

# Spreadsheets and pandas write 0/1 columns with gaps as floats; both spellings are 0/1.
_BINARY_VALUES = {"0": 0, "1": 1, "0.0": 0, "1.0": 1}
_MAX_LISTED = 5


@dataclass(frozen=True)
class _Row:
    number: int
    cells: dict[str, str]


def parse_task(task: Task | str | None) -> Task | None:
    """``task`` as a :class:`Task`, ``None`` staying ``None``; a :class:`ConfigError` if unknown."""
    if task is None:
        return None
    try:
        return Task(task)
    except ValueError:
        choices = ", ".join(member.value for member in Task)
        raise ConfigError(f"unknown task {task!r}; choose one of {choices}") from None


def _read_rows(csv_path: Path) -> tuple[list[str], list[_Row]]:
    if not csv_path.is_file():
        raise DataError(f"manifest not found: {csv_path}; check the path")
    try:
        # utf-8-sig: spreadsheets save CSV with a byte-order mark that would glue onto "path".
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise DataError(
                    f"{csv_path} is empty; a manifest needs a header row with path, "
                    "patient_id and label columns"
                )
            columns = [name.strip() for name in header]
            rows = [
                _parse_row(csv_path, columns, cells, reader.line_num)
                for cells in reader
                if cells  # blank lines
            ]
    except UnicodeDecodeError as error:
        raise DataError(f"{csv_path} is not UTF-8 text ({error}); save it as UTF-8 CSV") from error
    except csv.Error as error:
        raise DataError(f"{csv_path} is not valid CSV ({error}); check its quoting") from error
    duplicated = sorted({name for name in columns if columns.count(name) > 1})
    if duplicated:
        raise DataError(f"{csv_path} repeats the column(s) {', '.join(duplicated)}; rename them")
    if "path" not in columns:
        raise DataError(
            f"{csv_path} has no path column; its columns are: {', '.join(columns)}; "
            "add a path column naming each image file"
        )
    if not rows:
        raise DataError(f"{csv_path} has a header but no rows; add one row per image")
    return columns, rows


def _parse_row(csv_path: Path, columns: list[str], cells: list[str], number: int) -> _Row:
    if len(cells) != len(columns):
        raise DataError(
            f"{csv_path} row {number} has {len(cells)} fields but the header has "
            f"{len(columns)}; quote values that contain commas"
        )
    return _Row(number, {name: value.strip() for name, value in zip(columns, cells, strict=True)})


def _is_binary_column(name: str, rows: list[_Row]) -> bool:
    """Whether the column holds only 0/1 values, ignoring empty cells (reported later)."""
    values = {row.cells[name] for row in rows} - {""}
    return bool(values) and values <= _BINARY_VALUES.keys()


def _choose_labels(
    csv_path: Path,
    columns: list[str],
    rows: list[_Row],
    label_columns: Sequence[str] | None,
    task: Task | None,
) -> tuple[Task, list[str]]:
    """The task and the label columns, from the arguments or detected from the values."""
    if label_columns is not None:
        return _check_named_labels(csv_path, columns, rows, list(label_columns), task)
    if task is Task.MULTICLASS:
        if "label" not in columns:
            raise DataError(
                f"{csv_path} has no label column for a multiclass task; its columns are: "
                f"{', '.join(columns)}; name the class column with label_columns"
            )
        return task, ["label"]
    binary = [c for c in columns if c not in RESERVED_COLUMNS and _is_binary_column(c, rows)]
    if task is Task.BINARY and len(binary) > 1:
        raise ConfigError(
            f"{csv_path} has several 0/1 columns ({', '.join(binary)}) but the task is binary; "
            "name the one to predict with label_columns, or use the multilabel task"
        )
    if binary:
        return task or (Task.BINARY if len(binary) == 1 else Task.MULTILABEL), binary
    if task is None and "label" in columns:
        return Task.MULTICLASS, ["label"]
    raise DataError(
        f"{csv_path} has no label columns: no column besides {', '.join(sorted(RESERVED_COLUMNS))} "
        f"holds only 0/1 values and there is no multiclass 'label' column; its columns are: "
        f"{', '.join(columns)}; name the label columns with label_columns"
    )


def _check_named_labels(
    csv_path: Path, columns: list[str], rows: list[_Row], names: list[str], task: Task | None
) -> tuple[Task, list[str]]:
    if not names:
        raise ConfigError("label_columns is empty; name at least one column or leave it unset")
    if len(set(names)) != len(names):
        raise ConfigError(f"label_columns repeats a column: {', '.join(names)}")
    missing = [name for name in names if name not in columns]
    if missing:
        raise DataError(
            f"{csv_path} has no column {', '.join(map(repr, missing))}; "
            f"its columns are: {', '.join(columns)}"
        )
    if task is None:
        if len(names) > 1:
            task = Task.MULTILABEL
        else:
            task = Task.BINARY if _is_binary_column(names[0], rows) else Task.MULTICLASS
    if task in (Task.BINARY, Task.MULTICLASS) and len(names) != 1:
        raise ConfigError(
            f"a {task.value} task reads one label column, but label_columns names "
            f"{len(names)}: {', '.join(names)}; name one, or use the multilabel task"
        )
    return task, names


def _binary_labels(csv_path: Path, row: _Row, names: list[str]) -> tuple[int, ...]:
    labels = []
    for name in names:
        value = row.cells[name]
        if value not in _BINARY_VALUES:
            shown = "empty" if value == "" else repr(value)
            raise DataError(
                f"{csv_path} row {row.number}: column {name!r} is {shown}; binary and "
                "multilabel label columns hold 0 or 1 in every row"
            )
        labels.append(_BINARY_VALUES[value])
    return tuple(labels)


def _class_names(csv_path: Path, rows: list[_Row], name: str) -> list[str]:
    """The sorted class values of a multiclass column (numerically when all are integers)."""
    for row in rows:
        if row.cells[name] == "":
            raise DataError(
                f"{csv_path} row {row.number}: column {name!r} is empty; every row needs a class"
            )
    values = {row.cells[name] for row in rows}
    try:
        classes = sorted(values, key=int)
    except ValueError:
        classes = sorted(values)
    if len(classes) < 2:
        raise DataError(
            f"{csv_path} column {name!r} holds one class ({classes[0]}); a multiclass task "
            "needs at least 2"
        )
    return classes


def _image_path(csv_path: Path, row: _Row, base: Path) -> Path:
    raw = row.cells["path"]
    if not raw:
        raise DataError(f"{csv_path} row {row.number}: path is empty; name the image file")
    return (base / raw).resolve()


def _check_paths(csv_path: Path, rows: list[_Row], paths: list[Path], base: Path) -> None:
    """Duplicate paths, then every missing file (the first few listed with row numbers)."""
    first_row: dict[Path, int] = {}
    for row, path in zip(rows, paths, strict=True):
        if path in first_row:
            raise DataError(
                f"{csv_path} rows {first_row[path]} and {row.number} both name {path}; "
                "list each image once"
            )
        first_row[path] = row.number
    missing = [
        (row.number, path) for row, path in zip(rows, paths, strict=True) if not path.is_file()
    ]
    if missing:
        listed = "; ".join(f"row {number}: {path}" for number, path in missing[:_MAX_LISTED])
        raise DataError(
            f"{csv_path}: {len(missing)} of {len(rows)} image files do not exist ({listed}"
            f"{'; ...' if len(missing) > _MAX_LISTED else ''}); relative paths are resolved "
            f"against {base}"
        )


def _manifest_patient_id(csv_path: Path, row: _Row, path: Path) -> str:
    """The row's patient_id; ``""`` for a DICOM row without one (its tag is read later)."""
    patient = row.cells.get("patient_id", "")
    if patient or is_dicom_path(path):
        return patient
    if "patient_id" not in row.cells:
        raise DataError(
            f"{csv_path} has no patient_id column, which is required so that splits keep each "
            "patient's images together; add it (only DICOM rows may go without, taking their "
            f"PatientID tag, and row {row.number} is not DICOM)"
        )
    raise DataError(
        f"{csv_path} row {row.number}: patient_id is empty; every image needs its patient's ID"
    )


def _tag_patient_id(csv_path: Path, row: _Row, path: Path) -> str:
    patient = dicom_patient_id(path)
    if not patient:
        raise DataError(
            f"{csv_path} row {row.number}: no patient_id and {path} has no PatientID tag; "
            "fill in patient_id"
        )
    return patient


def load_manifest(
    csv_path: Path | str,
    *,
    image_size: int,
    label_columns: Sequence[str] | None = None,
    task: Task | str | None = None,
    image_root: Path | None = None,
) -> RadiographDataset:
    """The dataset a CSV manifest describes (columns in the module docstring).

    Labels: ``label_columns`` names them; by default they are every column outside
    :data:`RESERVED_COLUMNS` whose non-empty values are all 0/1, or, when there is none, a
    multiclass ``label`` column. The task, by default: binary for one 0/1 column,
    multilabel for several, multiclass for one column of other values (strings or
    integers; class names sorted, numerically when all are integers).

    ``image_root`` is the folder relative paths are resolved against (default: the CSV's).
    Every image file is checked to exist here; pixels are read on first use.

    Raises:
        DataError: the file, a column, a row or an image is wrong; the message names the file,
            the row and the column.
        ConfigError: ``task`` and ``label_columns`` contradict each other.
    """
    csv_path = Path(csv_path)
    columns, rows = _read_rows(csv_path)
    chosen_task, names = _choose_labels(csv_path, columns, rows, label_columns, parse_task(task))
    labels: list[tuple[int, ...]]
    if chosen_task is Task.MULTICLASS:
        label_names = _class_names(csv_path, rows, names[0])
        index = {name: position for position, name in enumerate(label_names)}
        labels = [(index[row.cells[names[0]]],) for row in rows]
    else:
        label_names = names
        labels = [_binary_labels(csv_path, row, names) for row in rows]
    base = (csv_path.parent if image_root is None else image_root).resolve()
    paths = [_image_path(csv_path, row, base) for row in rows]
    patients = [
        _manifest_patient_id(csv_path, row, path) for row, path in zip(rows, paths, strict=True)
    ]
    _check_paths(csv_path, rows, paths, base)

    not_extra = {"path", "patient_id", "site", *names}
    records = [
        Record(
            path=path,
            labels=row_labels,
            patient_id=patient or _tag_patient_id(csv_path, row, path),
            site=row.cells.get("site", ""),
            source=f"{csv_path} row {row.number}",
            extra={k: v for k, v in row.cells.items() if k not in not_extra and v},
        )
        for row, path, row_labels, patient in zip(rows, paths, labels, patients, strict=True)
    ]
    return RadiographDataset(
        records,
        task=chosen_task,
        label_names=label_names,
        image_size=image_size,
        read_image=read_radiograph,
    )
