"""Reading DICOM radiographs with pydicom, and the reader that picks DICOM or Pillow per file.

Pixels go through the same steps a viewer applies, in DICOM's order: the modality rescale
(RescaleSlope, RescaleIntercept), the VOI window (WindowCenter, WindowWidth; the first one
when several are stored; min–max over the image when none is), then MONOCHROME1 inversion
so that bone is always bright. VOI LUT and Modality LUT *tables* are not applied; the
window tags, which CR and DX radiographs carry, are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset as DicomDataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from primia.data.dataset import RadiographDataset, Task
from primia.data.images import fit_square, min_max_scale, read_image
from primia.errors import DataError

DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
"""File extensions (lower case) read as DICOM; every other file goes to Pillow."""


def is_dicom_path(path: Path) -> bool:
    return path.suffix.lower() in DICOM_SUFFIXES


def _open(path: Path, *, pixels: bool) -> DicomDataset:
    if not path.is_file():
        raise DataError(f"DICOM file not found: {path}; check the path")
    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except (InvalidDicomError, OSError, ValueError) as error:
        raise DataError(
            f"{path} is not a DICOM file pydicom can read ({error}); re-export it as DICOM "
            "with a file meta header, or convert it to PNG"
        ) from error


def _first(value: Any) -> float:
    """A multi-valued window tag's first value, or a single value, as a float."""
    return float(value[0] if isinstance(value, MultiValue | list | tuple) else value)


def _window(values: np.ndarray, dataset: DicomDataset) -> np.ndarray:
    """Rescaled values mapped onto [0, 1] by the VOI window, or min–max without one."""
    center, width = dataset.get("WindowCenter"), dataset.get("WindowWidth")
    if center is None or width is None or _first(width) < 1:
        # A missing or invalid (width < 1) window leaves nothing to apply; fall back to the
        # image's own range rather than guess a window.
        return min_max_scale(values)
    c, w = _first(center), _first(width)
    function = str(dataset.get("VOILUTFunction", "LINEAR")).upper()
    if function == "SIGMOID":
        return (1.0 / (1.0 + np.exp(-4.0 * (values - c) / w))).astype(np.float32)
    if function == "LINEAR_EXACT":
        return np.clip((values - c) / w + 0.5, 0.0, 1.0).astype(np.float32)
    # DICOM PS3.3 C.11.2.1.2.1 LINEAR; a width of exactly 1 is a threshold at c - 0.5.
    scaled = (values - (c - 0.5)) / max(w - 1.0, 1e-6) + 0.5
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def read_dicom(path: Path, size: int) -> np.ndarray:
    """One single-frame greyscale DICOM file as ``uint8[size, size]``, bone bright.

    See the module docstring for the pixel steps; the resize and center crop are those of
    :func:`primia.data.images.fit_square`.

    Raises:
        DataError: the file is missing, not DICOM, compressed with a codec that is not
            installed, colour, or multi-frame; the message names the file and the fix.
    """
    dataset = _open(path, pixels=True)
    photometric = str(dataset.get("PhotometricInterpretation", "")).upper()
    if photometric not in {"MONOCHROME1", "MONOCHROME2"}:
        raise DataError(
            f"{path} has PhotometricInterpretation {photometric or 'missing'}; primia reads "
            "greyscale (MONOCHROME1 or MONOCHROME2) radiographs; convert it to greyscale"
        )
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DataError(
            f"{path} has {frames} frames; primia reads single-frame radiographs; "
            "export the frame you want as its own file"
        )
    try:
        stored = dataset.pixel_array
    except (AttributeError, NotImplementedError, RuntimeError, ValueError) as error:
        raise DataError(
            f"cannot decode the pixels of {path} ({error}); if it is compressed, install the "
            "codec pydicom names (pylibjpeg, gdcm) or re-export it uncompressed"
        ) from error
    slope = float(dataset.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(dataset.get("RescaleIntercept", 0.0) or 0.0)
    values = stored.astype(np.float64) * slope + intercept
    grey = _window(values, dataset)
    if photometric == "MONOCHROME1":
        grey = 1.0 - grey
    return fit_square(grey * 255.0, size)


def dicom_patient_id(path: Path) -> str:
    """The PatientID tag of a DICOM file, stripped; ``""`` when absent or empty."""
    return str(_open(path, pixels=False).get("PatientID", "") or "").strip()


def read_radiograph(path: Path, size: int) -> np.ndarray:
    """The :data:`~primia.data.dataset.ImageReader` for any supported file.

    ``.dcm``/``.dicom`` files go to :func:`read_dicom`, everything else to
    :func:`primia.data.images.read_image`.
    """
    return read_dicom(path, size) if is_dicom_path(path) else read_image(path, size)


def load_dicom_folder(
    root: Path,
    *,
    image_size: int,
    labels_csv: Path | None = None,
    label_columns: list[str] | None = None,
    task: Task | str | None = None,
) -> RadiographDataset:
    """A folder of DICOM files labelled by a CSV manifest.

    ``labels_csv`` defaults to ``root / "manifest.csv"``; its ``path`` column is resolved
    against ``root`` and may name ``.dcm`` files (and other images). Everything else is
    :func:`primia.data.manifest.load_manifest`, including its rule that DICOM rows without a
    ``patient_id`` take the file's PatientID tag. Files in ``root`` that the CSV does not
    list are not loaded.
    """
    # Imported here because the manifest loader imports this module for its reader.
    from primia.data.manifest import load_manifest

    csv_path = root / "manifest.csv" if labels_csv is None else labels_csv
    if not csv_path.is_file():
        raise DataError(
            f"no labels CSV at {csv_path}; a DICOM folder needs one with path, patient_id and "
            "label columns (pass labels_csv= when it lives elsewhere)"
        )
    return load_manifest(
        csv_path, image_size=image_size, label_columns=label_columns, task=task, image_root=root
    )
