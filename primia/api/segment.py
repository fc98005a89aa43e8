"""Segmentation of the diagnostic regions, from Python: what ``primia segment train`` and
``primia segment apply`` do (:mod:`primia.segment` holds the parts)."""

from primia.segment.dataset import (
    AppliedSegmenter,
    SegmentConfig,
    TrainedSegmenter,
    apply_segmenter,
    train_segmenter_on,
)
from primia.segment.masks import REGIONS, SegmenterSpec, load_segmenter

__all__ = [
    "REGIONS",
    "AppliedSegmenter",
    "SegmentConfig",
    "SegmenterSpec",
    "TrainedSegmenter",
    "apply_segmenter",
    "load_segmenter",
    "train_segmenter_on",
]
