"""Anatomy masks on disk: reading a manifest's mask columns, and the segmenter's checkpoint.

A manifest may name, per image, 0/255 PNG masks of the diagnostic regions in the columns
of :data:`MASK_COLUMNS` (``primia data synth --masks`` writes them, ``primia segment
apply`` predicts them); a mask pixel is foreground where its grey level is above 127. A
trained segmenter is one safetensors file whose header holds its :class:`SegmenterSpec`
as JSON (no pickle), written atomically.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from primia.data.dataset import RadiographDataset
from primia.data.images import read_image
from primia.data.synth import MASK_COLUMNS
from primia.errors import DataError
from primia.models.checkpoint import load_module, save_module
from primia.segment.model import UNet

REGIONS = tuple(column.removeprefix("mask_") for column in MASK_COLUMNS)
"""The diagnostic regions, in mask-channel order: lungs, heart."""
SPEC_KEY = "primia.segmenter_spec"


@dataclass(frozen=True)
class SegmenterSpec:
    regions: tuple[str, ...] = REGIONS
    width: int = 8
    image_size: int = 64
    """The size it was trained at; images are segmented at this size."""

    def build(self) -> UNet:
        return UNet(out_channels=len(self.regions), width=self.width)


def save_segmenter(path: Path, model: UNet, spec: SegmenterSpec) -> None:
    """``model`` and ``spec`` as one safetensors file, atomically."""
    save_module(path, model, key=SPEC_KEY, spec=asdict(spec))


def load_segmenter(path: Path) -> tuple[UNet, SegmenterSpec]:
    """The segmenter at ``path`` (a file, or a folder holding segmenter.safetensors)."""
    if path.is_dir():
        path = path / "segmenter.safetensors"

    def build(values: dict[str, object]) -> UNet:
        return _spec(values).build()

    model, values = load_module(
        path, key=SPEC_KEY, build=build, what="a primia segmenter", made_by="primia segment train"
    )
    assert isinstance(model, UNet)
    return model, _spec(values)


def _spec(values: dict[str, object]) -> SegmenterSpec:
    regions = values.get("regions", REGIONS)
    assert isinstance(regions, list | tuple)
    return SegmenterSpec(**{**values, "regions": tuple(str(r) for r in regions)})  # type: ignore[arg-type]


def manifest_folder(data: Path) -> Path:
    """The folder a manifest's relative paths are resolved against."""
    return data.parent if data.suffix.lower() == ".csv" else data


def dataset_masks(dataset: RadiographDataset, data: Path) -> torch.Tensor:
    """The masks the manifest at ``data`` names for each image: ``uint8[N, R, S, S]`` 0/1.

    Raises:
        DataError: a record without a mask column (naming the fix), or a mask file that
            cannot be read.
    """
    folder = manifest_folder(data)
    masks = np.zeros((len(dataset), len(MASK_COLUMNS), dataset.image_size, dataset.image_size))
    for index, record in enumerate(dataset.records):
        for channel, column in enumerate(MASK_COLUMNS):
            name = record.extra.get(column)
            if name is None:
                raise DataError(
                    f"{record.source or record.path} names no {column}: the dataset at {data} "
                    f"needs the mask columns {', '.join(MASK_COLUMNS)}; write them with "
                    "'primia data synth --masks', predict them with 'primia segment apply', "
                    "or add them to the manifest (0/255 PNGs)"
                )
            path = Path(name) if Path(name).is_absolute() else folder / name
            masks[index, channel] = read_image(path, dataset.image_size) > 127
    return torch.from_numpy(masks.astype(np.uint8))
