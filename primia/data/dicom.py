"""Reading DICOM radiographs with pydicom, and the reader that picks DICOM or Pillow per file.

Pixels go through the steps a viewer applies, in DICOM's order (PS3.3 C.11, PS3.4 N.2):

1. the Modality LUT: a Modality LUT Sequence table when the file has one, else the rescale
   (RescaleSlope, RescaleIntercept);
2. the VOI LUT: a VOI LUT Sequence table (its first), else the window (WindowCenter,
   WindowWidth, VOILUTFunction; the first when several are stored), else min–max over the
   image's pixels;
3. MONOCHROME1 inversion, so that bone is always bright;
4. pixel padding (PixelPaddingValue, and PixelPaddingRangeLimit when given, in stored
   values): padded pixels, the area outside the collimated field that some CR and DX
   devices fill with a marker value, are left out of the min–max range and set to black.

Compressed transfer syntaxes (JPEG baseline and extended, JPEG lossless, JPEG-LS, JPEG 2000,
RLE) decode through the pylibjpeg plugins and pyjpegls, which pydicom finds by itself; they
are primia dependencies. Refused with a clear error: colour, multi-frame, and objects
without pixels (structured reports, presentation states, ...).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset as DicomDataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi

from primia.data.dataset import RadiographDataset, Task
from primia.data.images import fit_square, read_image
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


def _window(values: np.ndarray, dataset: DicomDataset, keep: np.ndarray) -> np.ndarray:
    """Modality values mapped onto [0, 1] by the VOI LUT or window, or min–max over the
    pixels in ``keep`` (the unpadded ones) without either."""
    if "VOILUTSequence" in dataset:
        return _voi_table(values, dataset)
    center, width = dataset.get("WindowCenter"), dataset.get("WindowWidth")
    if center is None or width is None or _first(width) < 1:
        # A missing or invalid (width < 1) window leaves nothing to apply; fall back to the
        # image's own range rather than guess a window.
        inside = values[keep] if keep.any() else values
        low, high = float(inside.min()), float(inside.max())
        if high <= low:
            return np.zeros(values.shape, dtype=np.float32)
        return np.clip((values - low) / (high - low), 0.0, 1.0).astype(np.float32)
    c, w = _first(center), _first(width)
    function = str(dataset.get("VOILUTFunction", "LINEAR")).upper()
    if function == "SIGMOID":
        return (1.0 / (1.0 + np.exp(-4.0 * (values - c) / w))).astype(np.float32)
    if function == "LINEAR_EXACT":
        return np.clip((values - c) / w + 0.5, 0.0, 1.0).astype(np.float32)
    # DICOM PS3.3 C.11.2.1.2.1 LINEAR; a width of exactly 1 is a threshold at c - 0.5.
    scaled = (values - (c - 0.5)) / max(w - 1.0, 1e-6) + 0.5
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def _voi_table(values: np.ndarray, dataset: DicomDataset) -> np.ndarray:
    """The first VOI LUT Sequence table applied, its output scaled onto [0, 1] by the
    table's bit depth (LUTDescriptor's third value: entries span 0 .. 2^bits − 1)."""
    item = dataset.VOILUTSequence[0]
    bits = int(item.LUTDescriptor[2]) if "LUTDescriptor" in item else 16
    mapped = apply_voi(np.rint(values).astype(np.int64), dataset, index=0)
    return np.clip(mapped.astype(np.float32) / float(2**bits - 1), 0.0, 1.0)


def _padding(stored: np.ndarray, dataset: DicomDataset) -> np.ndarray:
    """Where the stored values are pixel padding (PS3.3 C.7.5.1.1.2): equal to
    PixelPaddingValue, or between it and PixelPaddingRangeLimit inclusive."""
    value = dataset.get("PixelPaddingValue")
    if value is None:
        return np.zeros(stored.shape, dtype=bool)
    limit = dataset.get("PixelPaddingRangeLimit", value)
    low, high = sorted((int(value), int(limit)))
    return (stored >= low) & (stored <= high)


def read_dicom(path: Path, size: int) -> np.ndarray:
    """One single-frame greyscale DICOM file as ``uint8[size, size]``, bone bright.

    See the module docstring for the pixel steps; the resize and center crop are those of
    :func:`primia.data.images.fit_square`.

    Raises:
        DataError: the file is missing, not DICOM, holds no image, compressed with a codec
            that is not installed, colour, or multi-frame; the message names the file and
            the fix.
    """
    dataset = _open(path, pixels=True)
    if "PixelData" not in dataset and "FloatPixelData" not in dataset:
        kind = getattr(dataset.get("SOPClassUID"), "name", None) or "an object without pixels"
        raise DataError(
            f"{path} holds no image ({kind}, Modality {dataset.get('Modality', 'missing')}); "
            "leave it out of the dataset: primia reads radiographs"
        )
    photometric = str(dataset.get("PhotometricInterpretation", "")).upper()
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    if photometric not in {"MONOCHROME1", "MONOCHROME2"} or samples != 1:
        raise DataError(
            f"{path} has PhotometricInterpretation {photometric or 'missing'} with {samples} "
            "sample(s) per pixel; primia reads greyscale (MONOCHROME1 or MONOCHROME2, one "
            "sample) radiographs; convert it to greyscale"
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
        syntax = getattr(dataset.file_meta.get("TransferSyntaxUID"), "name", "unknown")
        raise DataError(
            f"cannot decode the pixels of {path} (transfer syntax {syntax}: {error}); "
            "reinstall primia's codecs (pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg, "
            "pylibjpeg-rle, pyjpegls) or re-export the file uncompressed"
        ) from error
    if stored.ndim != 2:
        raise DataError(
            f"{path} decodes to pixels of shape {stored.shape}; primia reads one greyscale "
            "frame; re-export it as a single-frame greyscale image"
        )
    padded = _padding(stored, dataset)
    if "ModalityLUTSequence" in dataset:
        values = apply_modality_lut(stored, dataset).astype(np.float64)
    else:
        slope = float(dataset.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(dataset.get("RescaleIntercept", 0.0) or 0.0)
        values = stored.astype(np.float64) * slope + intercept
    grey = _window(values, dataset, ~padded)
    if photometric == "MONOCHROME1":
        grey = 1.0 - grey
    grey[padded] = 0.0
    return fit_square(grey * 255.0, size)


HEADER_TAGS = ("PatientID", "PatientSex", "PatientAge", "ViewPosition", "Modality")
"""The tags :func:`dicom_header` reads: who, which subgroup, which view."""


def dicom_header(path: Path) -> dict[str, str]:
    """:data:`HEADER_TAGS` of a DICOM file (pixels not read), stripped; absent ones left out."""
    dataset = _open(path, pixels=False)
    with warnings.catch_warnings():
        # Collections store values off the standard (RSNA's PatientAge "51" for "051Y");
        # age_years reads both, so pydicom's per-file warning would only be noise.
        warnings.simplefilter("ignore", UserWarning)
        found = {tag: str(dataset.get(tag, "") or "").strip() for tag in HEADER_TAGS}
    return {tag: value for tag, value in found.items() if value}


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
