"""The segmenter: on unseen patients it beats the trivial all-foreground mask clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from primia.data.synth import SynthConfig, _plan, generate
from primia.data.synth_anatomy import anatomy_masks
from primia.segment import dice, train_segmenter


@pytest.mark.slow
def test_dice_on_heldout_patients_is_well_above_the_trivial_mask() -> None:
    config = SynthConfig(sites=2, patients_per_site=15, images_per_patient=2, size=32, seed=5)
    batch = generate(config)
    lungs, heart = anatomy_masks(_plan(config).params, config.size)
    images = torch.from_numpy(batch.images).float()[:, None] / 255
    masks = torch.from_numpy(np.stack([lungs, heart], axis=1)).float() / 255
    result = train_segmenter(images, masks, batch.patient_id, steps=60, seed=0)
    assert result.heldout_patients == 9
    for region, score in enumerate(result.dice):
        assert score > result.dice_all_foreground[region] + 0.2, (region, result)
    assert result.dice[0] > 0.7


def test_dice_of_identical_masks_is_one_and_of_disjoint_masks_zero() -> None:
    a = torch.zeros(1, 1, 4, 4)
    a[..., :2, :] = 1
    assert dice(a, a) == (1.0,)
    assert dice(a, 1 - a) == (0.0,)


def test_too_few_patients_are_refused() -> None:
    with pytest.raises(ValueError, match="patients cannot be split"):
        train_segmenter(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8), ["a", "a"], steps=1)
