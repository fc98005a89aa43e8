"""What a data owner may send into a session, checked before any MPC starts.

A session's input shape is fixed when it opens (every party builds tensors of that shape),
so a wrong size or channel count must be caught here, with a message that says how to fix
it, not as a shape error deep inside CrypTen on three machines.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from primia.data.images import IMAGE_SUFFIXES, fit_square, min_max_scale
from primia.errors import DataError
from primia.models.checkpoint import ModelSpec


def check_input_shape(shape: Sequence[int], spec: ModelSpec, max_batch: int) -> None:
    """Raise :class:`DataError` unless ``shape`` is (N, C, S, S) as ``spec`` takes it."""
    expected = f"(N, {spec.in_channels}, {spec.image_size}, {spec.image_size})"
    if len(shape) != 4:
        # A request may list a million dimensions: name how many, not each (the refusal
        # is logged and returned).
        got = tuple(shape) if len(shape) <= 8 else f"{len(shape)} dimensions"
        raise DataError(f"images must have shape {expected}, got {got}")
    count, channels, height, width = (int(value) for value in shape)
    if not 1 <= count <= max_batch:
        raise DataError(
            f"a session takes 1 to {max_batch} images, got {count}; split them into batches"
        )
    if channels != spec.in_channels:
        raise DataError(
            f"the model takes {spec.in_channels}-channel images, got {channels} channels"
        )
    if (height, width) != (spec.image_size, spec.image_size):
        raise DataError(
            f"the model takes {spec.image_size}×{spec.image_size} images, got "
            f"{height}×{width}; resize them (`primia infer predict --fit` does it)"
        )


def check_images(images: torch.Tensor, spec: ModelSpec, max_batch: int) -> None:
    """:func:`check_input_shape` plus finite values in [0, 1], as the model was trained."""
    check_input_shape(tuple(images.shape), spec, max_batch)
    if not torch.isfinite(images).all():
        raise DataError("the images contain NaN or infinite values")
    if images.min() < 0 or images.max() > 1:
        raise DataError(
            "image values must lie in [0, 1] (grey levels / 255, as the model was trained), "
            f"got [{images.min().item():.3g}, {images.max().item():.3g}]"
        )


def load_images(paths: Sequence[Path], spec: ModelSpec, *, fit: bool = False) -> torch.Tensor:
    """Image files as a (N, 1, S, S) tensor in [0, 1], S the model's input size.

    Without ``fit`` an image must already be grey and S×S: a colour or wrongly sized file
    is refused with its name. With ``fit`` it is converted the way the training loaders do
    (grey, short side resized to S, long side center-cropped).
    """
    if spec.in_channels != 1:
        raise DataError(
            f"the model takes {spec.in_channels}-channel images; image files are read as "
            "grey radiographs (1 channel), so pass a tensor through the Python API"
        )
    return torch.stack([_load(path, spec.image_size, fit=fit) for path in paths])


def _load(path: Path, size: int, *, fit: bool) -> torch.Tensor:
    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(
            f"{path}: not a PNG, JPEG or TIFF file (extensions: "
            f"{', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    try:
        with Image.open(path) as image:
            image.load()
            mode, (width, height) = image.mode, image.size
            if mode in ("L", "P", "1") or mode.startswith("I") or mode == "F":
                pixels = np.asarray(image.convert("L") if mode in ("P", "1") else image)
            elif fit:
                pixels = np.asarray(image.convert("L"))
            else:
                raise DataError(
                    f"{path} is a colour image ({mode}); the model takes grey radiographs: "
                    "convert it, or pass --fit to convert it as the training loaders do"
                )
    except (OSError, Image.DecompressionBombError) as error:
        raise DataError(f"{path} is not an image Pillow can read: {error}") from error
    if not fit and (width, height) != (size, size):
        raise DataError(
            f"{path} is {width}×{height}; the model takes {size}×{size} images: resize it, or "
            "pass --fit to resize and center-crop it as the training loaders do"
        )
    grey = min_max_scale(pixels) * 255.0 if pixels.dtype != np.uint8 else pixels
    return torch.from_numpy(fit_square(grey, size)).float().div(255.0).unsqueeze(0)


def probabilities(logits: torch.Tensor, task: str) -> torch.Tensor:
    """Class probabilities: a softmax for multiclass, a sigmoid per label otherwise."""
    return logits.softmax(dim=1) if task == "multiclass" else logits.sigmoid()


def output_names(spec: ModelSpec) -> tuple[str, ...]:
    """The model's label names, or ``output-K`` for a model trained without them."""
    return spec.label_names or tuple(f"output-{k}" for k in range(spec.num_outputs))
