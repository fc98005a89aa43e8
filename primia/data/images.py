"""Reading PNG, JPEG and TIFF radiographs with Pillow into ``uint8[S, S]`` arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from primia.errors import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff"})
"""File extensions (lower case) that :func:`read_image` reads."""

# Pillow modes whose values are not already 0–255 grey levels: 16-bit PNGs and TIFFs open as
# I;16 (or I on older Pillow), float TIFFs as F.
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})


def min_max_scale(values: np.ndarray) -> np.ndarray:
    """``values`` mapped linearly onto [0, 1] as float32; a constant image maps to 0."""
    values = values.astype(np.float32)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def fit_square(grey: np.ndarray, size: int) -> np.ndarray:
    """Grey levels in [0, 255] (any float or integer dtype) as a ``uint8[size, size]`` image.

    The short side is resized to ``size`` (bilinear) and the long side center-cropped, so a
    non-square radiograph loses equal margins on both ends of its long axis and is never
    stretched.
    """
    image = Image.fromarray(np.asarray(grey, dtype=np.float32))
    fitted = ImageOps.fit(image, (size, size), method=Image.Resampling.BILINEAR)
    return np.clip(np.rint(np.asarray(fitted)), 0, 255).astype(np.uint8)


def read_image(path: Path, size: int) -> np.ndarray:
    """One PNG, JPEG or TIFF file as ``uint8[size, size]`` grey levels.

    Colour images are converted to grey. 16-bit and float images are scaled min–max onto
    0–255, because their stored range (12 bits, 14 bits, ...) differs between devices.
    Non-square images are resized on the short side and center-cropped (see
    :func:`fit_square`). A multi-page TIFF gives its first page.

    Raises:
        DataError: the file does not exist or Pillow cannot decode it; the message names it.
    """
    if not path.is_file():
        raise DataError(
            f"image file not found: {path}; check the path (a manifest's relative paths are "
            "resolved against the manifest's folder)"
        )
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in _HIGH_DEPTH_MODES:
                grey = min_max_scale(np.asarray(image)) * 255.0
            else:
                grey = np.asarray(image.convert("L"))
    except (OSError, Image.DecompressionBombError) as error:
        raise DataError(
            f"{path} is not an image Pillow can read ({error}); convert it to PNG, or give a "
            "DICOM file the .dcm extension"
        ) from error
    return fit_square(grey, size)
