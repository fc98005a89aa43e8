"""Reading PNG, JPEG and TIFF files into uint8 squares."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from primia.data.images import fit_square, read_image
from primia.errors import DataError


def _save(path: Path, pixels: np.ndarray, mode: str | None = None) -> Path:
    image = Image.fromarray(pixels)
    if mode is not None:
        image = image.convert(mode)
    image.save(path)
    return path


def test_grey_png_keeps_its_values(tmp_path: Path) -> None:
    pixels = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))
    out = read_image(_save(tmp_path / "a.png", pixels), 16)
    assert out.dtype == np.uint8
    assert out.shape == (16, 16)
    np.testing.assert_array_equal(out, pixels)


def test_colour_is_converted_to_grey(tmp_path: Path) -> None:
    red = np.zeros((16, 16, 3), dtype=np.uint8)
    red[..., 0] = 255
    out = read_image(_save(tmp_path / "red.png", red), 16)
    # ITU-R 601 luma, which Pillow's "L" conversion uses: 0.299 * 255.
    assert np.all(out == 76)


def test_16_bit_png_is_scaled_min_max(tmp_path: Path) -> None:
    pixels = np.tile(np.linspace(1000, 5000, 16).astype(np.uint16), (16, 1))
    path = _save(tmp_path / "deep.png", pixels)
    assert Image.open(path).mode.startswith("I")
    out = read_image(path, 16)
    assert out[:, 0].tolist() == [0] * 16
    assert out[:, -1].tolist() == [255] * 16
    assert np.all(np.diff(out[0].astype(int)) > 0)


def test_float_tiff_is_scaled_min_max(tmp_path: Path) -> None:
    pixels = np.tile(np.linspace(-1.0, 3.0, 16, dtype=np.float32), (16, 1))
    out = read_image(_save(tmp_path / "f.tif", pixels), 16)
    assert out[0, 0] == 0
    assert out[0, -1] == 255


@pytest.mark.parametrize("name", ["a.jpg", "a.jpeg", "a.tif", "a.tiff", "a.png"])
def test_each_format_is_read_and_resized(tmp_path: Path, name: str) -> None:
    pixels = np.full((32, 32), 200, dtype=np.uint8)
    out = read_image(_save(tmp_path / name, pixels), 16)
    assert out.shape == (16, 16)
    assert abs(int(out.mean()) - 200) <= 2


def test_wide_image_is_center_cropped_not_stretched(tmp_path: Path) -> None:
    # 16 high, 32 wide: black left quarter, grey middle half, white right quarter.
    pixels = np.full((16, 32), 128, dtype=np.uint8)
    pixels[:, :8] = 0
    pixels[:, 24:] = 255
    out = read_image(_save(tmp_path / "wide.png", pixels), 16)
    assert out.shape == (16, 16)
    assert np.all(out == 128)


def test_tall_image_is_center_cropped(tmp_path: Path) -> None:
    pixels = np.full((32, 16), 128, dtype=np.uint8)
    pixels[:8] = 0
    pixels[24:] = 255
    out = read_image(_save(tmp_path / "tall.png", pixels), 8)
    assert out.shape == (8, 8)
    # Downscaling filters across the crop edge, so the border rows blend a little; a stretch
    # would keep black and white rows.
    assert np.all(out[1:-1] == 128)
    assert out.min() > 100
    assert out.max() < 160


def test_fit_square_clips_and_rounds() -> None:
    out = fit_square(np.array([[-5.0, 300.0], [127.6, 0.4]]), 2)
    assert out.tolist() == [[0, 255], [128, 0]]


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not found: .*nope\.png"):
        read_image(tmp_path / "nope.png", 16)


def test_unreadable_file_names_the_file_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "text.png"
    path.write_text("not an image")
    with pytest.raises(DataError, match=r"text\.png is not an image Pillow can read.*convert"):
        read_image(path, 16)


def test_truncated_file_is_a_data_error(tmp_path: Path) -> None:
    path = _save(
        tmp_path / "cut.png", np.random.default_rng(0).integers(0, 255, (32, 32), np.uint8)
    )
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError, match=r"cut\.png"):
        read_image(path, 16)
