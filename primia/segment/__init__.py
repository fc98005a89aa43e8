"""Segmentation of the diagnostic regions (lungs, heart) that anonymization protects.

* :mod:`~primia.segment.model` — the small U-Net (GroupNorm, no BatchNorm) shared with
  the anonymization generators;
* :mod:`~primia.segment.training` — training on masks, Dice on held-out patients.
"""

from primia.segment.model import UNet
from primia.segment.training import SegmenterResult, dice, predict, train_segmenter

__all__ = ["SegmenterResult", "UNet", "dice", "predict", "train_segmenter"]
