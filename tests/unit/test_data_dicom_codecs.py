"""Compressed DICOM as PACS export it, and the pixel modules CR/DX files carry.

Round trips: an image encoded with each codec primia depends on (RLE, JPEG-LS and JPEG 2000
lossless through pydicom's encoders; 8-bit JPEG baseline through Pillow, encapsulated)
decodes to what the uncompressed file gives. JPEG lossless has no encoder in these packages,
so its fixture is pydicom-data's file (skipped where that package is absent).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)
from test_data_dicom import RAMP, write_dicom

from primia.data.dicom import read_dicom
from primia.errors import DataError

# A 12-bit image with detail in every row, so a codec that got anything wrong shows.
DETAILED = ((np.add.outer(np.arange(64), np.arange(64)) * 37) % 4096).astype(np.uint16)


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=str)
def test_lossless_codecs_round_trip_exactly(tmp_path: Path, syntax: str) -> None:
    plain = write_dicom(tmp_path / "plain.dcm", DETAILED)
    dataset = pydicom.dcmread(plain)
    dataset.compress(syntax)
    packed = tmp_path / "packed.dcm"
    dataset.save_as(packed)
    assert pydicom.dcmread(packed).file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(read_dicom(packed, 64), read_dicom(plain, 64))


def test_jpeg_baseline_decodes_close_to_the_original(tmp_path: Path) -> None:
    pixels = (np.add.outer(np.arange(64), np.arange(64)) * 2).astype(np.uint8)
    plain = tmp_path / "plain.dcm"
    write_dicom(plain, pixels)
    dataset = pydicom.dcmread(plain)
    dataset.BitsAllocated = dataset.BitsStored = 8
    dataset.HighBit = 7
    encoded = io.BytesIO()
    Image.fromarray(pixels).save(encoded, format="JPEG", quality=95)
    dataset.PixelData = encapsulate([encoded.getvalue()])
    dataset["PixelData"].is_undefined_length = True
    dataset.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    packed = tmp_path / "baseline.dcm"
    dataset.save_as(packed)
    difference = read_dicom(packed, 64).astype(int) - read_dicom(plain, 64).astype(int)
    assert np.abs(difference).mean() < 2.0


def test_jpeg_lossless_fixture_decodes() -> None:
    data_store = pytest.importorskip("data_store", reason="pydicom-data is not installed")
    path = Path(data_store.__file__).parent / "data" / "JPEG-LL.dcm"
    out = read_dicom(path, 64)
    assert out.shape == (64, 64) and out.std() > 10


def _lut(descriptor: list[int], data: list[int]) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = descriptor
    # Explicit VR writes LUTData as OW: 16-bit words, whatever the table's bit depth.
    item.add_new(0x00283006, "OW", np.asarray(data, dtype="<u2").tobytes())
    return item


def test_modality_lut_table_is_applied(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "m.dcm")
    dataset = pydicom.dcmread(path)
    table = _lut([256, 0, 16], [255 - v for v in range(256)])
    table.ModalityLUTType = "US"
    dataset.ModalityLUTSequence = [table]
    dataset.save_as(path)
    # The table inverts 0..255; min–max (no window) then maps it back onto 0..255.
    np.testing.assert_array_equal(read_dicom(path, 256)[0], 255 - np.arange(256))


def test_voi_lut_table_wins_over_the_window(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "v.dcm", window=(128, 2))
    dataset = pydicom.dcmread(path)
    dataset.VOILUTSequence = [_lut([256, 0, 8], [v // 2 for v in range(256)])]
    dataset.save_as(path)
    # An 8-bit table's output v // 2 is divided by 255 and scaled back: v // 2 again.
    np.testing.assert_array_equal(read_dicom(path, 256)[0], np.arange(256) // 2)


def test_pixel_padding_is_black_and_outside_the_range(tmp_path: Path) -> None:
    pixels = RAMP.copy()
    pixels[:, :16] = 4000  # the device's padding marker outside the collimated field
    path = write_dicom(tmp_path / "p.dcm", pixels, photometric="MONOCHROME1")
    dataset = pydicom.dcmread(path)
    dataset.add_new(0x00280120, "US", 4000)  # PixelPaddingValue; unsigned pixels
    dataset.save_as(path)
    row = read_dicom(path, 256)[0].astype(int)
    assert np.all(row[:16] == 0)
    # MONOCHROME1 over the unpadded range 16..255: 16 is brightest, 255 black.
    assert row[16] == 255 and row[255] == 0


def test_padding_range_limit(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "r.dcm")
    dataset = pydicom.dcmread(path)
    dataset.add_new(0x00280120, "US", 250)  # PixelPaddingValue
    dataset.add_new(0x00280121, "US", 255)  # PixelPaddingRangeLimit
    dataset.save_as(path)
    row = read_dicom(path, 256)[0].astype(int)
    assert np.all(row[250:] == 0) and row[249] == 255


def test_structured_report_is_refused() -> None:
    report = Path(pydicom.data.get_testdata_file("test-SR.dcm"))
    with pytest.raises(DataError, match=r"test-SR\.dcm holds no image \(Comprehensive SR Storage"):
        read_dicom(report, 32)
