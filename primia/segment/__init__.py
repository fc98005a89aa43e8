"""Segmentation of the diagnostic regions (lungs, heart) that anonymization protects.

* :mod:`~primia.segment.model` — the small U-Net (GroupNorm, no BatchNorm) shared with
  the anonymization generators;
* :mod:`~primia.segment.training` — training on masks, Dice on held-out patients;
* :mod:`~primia.segment.masks` — a manifest's mask columns, the segmenter's checkpoint;
* :mod:`~primia.segment.dataset` — ``primia segment train|apply`` on datasets on disk.
"""

from primia.segment.masks import (
    REGIONS,
    SegmenterSpec,
    dataset_masks,
    load_segmenter,
    save_segmenter,
)
from primia.segment.model import UNet
from primia.segment.training import SegmenterResult, dice, predict, train_segmenter

__all__ = [
    "REGIONS",
    "SegmenterResult",
    "SegmenterSpec",
    "UNet",
    "dataset_masks",
    "dice",
    "load_segmenter",
    "predict",
    "save_segmenter",
    "train_segmenter",
]
