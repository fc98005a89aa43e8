"""A real radiograph through primia's data path: every encoding decodes to the same image,
it loads at 224 px, and ``primia data inspect`` reads it (see real_radiograph.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from real_radiograph import rg1, rg1_dataset

from primia.data import inspect_dataset, read_dicom

# Measured between RG1_J2KI and RG1_UNCR: 54.3 dB over the 15-bit range.
LOSSY_PSNR_DB = 50.0


def _psnr(reference: np.ndarray, other: np.ndarray, peak: float) -> float:
    mse = float(np.mean((reference.astype(np.float64) - other.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def test_lossless_encoding_decodes_to_the_same_pixels() -> None:
    original = pydicom.dcmread(rg1("UNCR")).pixel_array
    np.testing.assert_array_equal(pydicom.dcmread(rg1("J2KR")).pixel_array, original)
    np.testing.assert_array_equal(read_dicom(rg1("J2KR"), 224), read_dicom(rg1("UNCR"), 224))


def test_lossy_encoding_is_within_the_stated_psnr() -> None:
    original = pydicom.dcmread(rg1("UNCR")).pixel_array
    lossy = pydicom.dcmread(rg1("J2KI")).pixel_array
    assert _psnr(original, lossy, 2**15 - 1) >= LOSSY_PSNR_DB
    # UNCI is J2KI decoded and stored plain: the decoder must give exactly those pixels.
    np.testing.assert_array_equal(lossy, pydicom.dcmread(rg1("UNCI")).pixel_array)
    at_224 = _psnr(read_dicom(rg1("UNCR"), 224), read_dicom(rg1("J2KI"), 224), 255)
    assert at_224 >= 40.0


def test_loads_at_224_pixels_lungs_dark_bone_bright() -> None:
    image = read_dicom(rg1("J2KR"), 224)
    assert image.shape == (224, 224) and image.dtype == np.uint8
    # MONOCHROME1 inverted: the mediastinum (centre column) is brighter than the lung fields.
    centre = image[60:160, 100:124].mean()
    lungs = (image[60:160, 40:70].mean() + image[60:160, 154:184].mean()) / 2
    assert centre > lungs + 20


def test_inspect_reads_it(tmp_path: Path) -> None:
    found = inspect_dataset(rg1_dataset(tmp_path / "rg1"))
    assert (found.format, found.images, found.patients, found.unreadable) == ("manifest", 4, 4, 0)
    assert found.prevalence == {"pneumonia": 0.5}
