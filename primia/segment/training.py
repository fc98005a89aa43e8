"""Training the lung/heart segmenter, with Dice on held-out patients.

The segmenter is the shared U-Net with one output per region; its probability is
p = (tanh-output + 1) / 2 and it is trained with per-pixel binary cross-entropy,
foreground pixels of region r weighted by (1 − f_r) / f_r (f_r its foreground share,
weight at most 20). Patients, not images, are split into train and held-out sets, so no
patient's anatomy is seen in training and scored in evaluation. Dice per region on the
held-out set is 2·|P ∩ T| / (|P| + |T|) over all its pixels (P: p > 0.5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from primia.segment.model import UNet


@dataclass(frozen=True)
class SegmenterResult:
    """A trained segmenter and its held-out Dice per region, beside two trivial masks'."""

    model: UNet
    dice: tuple[float, ...]
    dice_all_foreground: tuple[float, ...]
    heldout_patients: int


def predict(model: UNet, images: torch.Tensor) -> torch.Tensor:
    """Binary masks ``[B, R, H, W]`` (float 0/1) for images ``[B, 1, H, W]`` in [0, 1]."""
    with torch.no_grad():
        return (model(images) > 0).to(images.dtype)


def dice(predicted: torch.Tensor, target: torch.Tensor) -> tuple[float, ...]:
    """Dice per region (channel 1) over all images and pixels; 1.0 where both are empty."""
    overlap = (predicted * target).sum(dim=(0, 2, 3))
    total = predicted.sum(dim=(0, 2, 3)) + target.sum(dim=(0, 2, 3))
    scores = torch.where(total > 0, 2 * overlap / total.clamp(min=1), torch.ones_like(total))
    return tuple(float(v) for v in scores)


def train_segmenter(
    images: torch.Tensor,
    masks: torch.Tensor,
    patient_ids: npt.ArrayLike,
    *,
    steps: int = 200,
    batch_size: int = 32,
    lr: float = 3e-3,
    width: int = 8,
    heldout_fraction: float = 0.3,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> SegmenterResult:
    """Train on ``images`` ``[N, 1, H, W]`` and 0/1 ``masks`` ``[N, R, H, W]``;
    ``on_step(step, loss)`` after each step (a progress bar).

    Raises:
        ValueError: shapes that disagree, or too few patients for a held-out set.
    """
    patients = np.asarray(patient_ids)
    if images.shape[0] != masks.shape[0] or images.shape[0] != len(patients):
        raise ValueError(
            f"images ({images.shape[0]}), masks ({masks.shape[0]}) and patient ids "
            f"({len(patients)}) must have one entry per image"
        )
    unique = np.unique(patients)
    rng = np.random.default_rng(seed)
    heldout_count = round(len(unique) * heldout_fraction)
    if heldout_count < 1 or heldout_count >= len(unique):
        raise ValueError(
            f"{len(unique)} patients cannot be split {1 - heldout_fraction:.0%}/"
            f"{heldout_fraction:.0%}; give more patients or change heldout_fraction"
        )
    heldout = np.isin(patients, rng.permutation(unique)[:heldout_count])
    train_index = torch.from_numpy(np.flatnonzero(~heldout))
    test_index = torch.from_numpy(np.flatnonzero(heldout))
    torch.manual_seed(seed)
    model = UNet(out_channels=masks.shape[1], width=width)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    # Small organs (the heart at low resolution) would otherwise be predicted empty: weight
    # each region's foreground pixels by its background/foreground ratio (at most 20).
    share = masks[train_index].mean(dim=(0, 2, 3)).clamp(min=1e-3)
    positive = ((1 - share) / share).clamp(max=20.0)[None, :, None, None]
    for step in range(1, steps + 1):
        pick = train_index[torch.randint(len(train_index), (batch_size,), generator=generator)]
        probability = (model(images[pick]) + 1) / 2
        target = masks[pick]
        loss = F.binary_cross_entropy(
            probability.clamp(1e-6, 1 - 1e-6), target, weight=1 + (positive - 1) * target
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step(step, loss.item())
    model.eval()
    heldout_masks = masks[test_index]
    return SegmenterResult(
        model=model,
        dice=dice(predict(model, images[test_index]), heldout_masks),
        dice_all_foreground=dice(torch.ones_like(heldout_masks), heldout_masks),
        heldout_patients=heldout_count,
    )
