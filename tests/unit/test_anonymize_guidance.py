"""Segmentation-guided generators: zero inside-strength leaves the protected region intact."""

from __future__ import annotations

import pytest
import torch

from primia.anonymize import FlowFieldGenerator, NoiseGenerator, guidance_weight

SIZE = 32


def scene() -> tuple[torch.Tensor, torch.Tensor]:
    """Random images and a square 'lung' mask covering rows/cols 8..24 (two regions)."""
    torch.manual_seed(0)
    x = torch.rand(2, 1, SIZE, SIZE)
    masks = torch.zeros(2, 2, SIZE, SIZE)
    masks[:, 0, 8:24, 8:24] = 1.0
    masks[:, 1, 9:12, 9:12] = 1.0
    return x, masks


def deep_inside() -> tuple[slice, slice]:
    """At least the kernel radius (2·⌈2σ⌉ = 4 px at σ = 2) inside the first region."""
    return slice(13, 19), slice(13, 19)


def outside() -> torch.Tensor:
    mask = torch.ones(SIZE, SIZE, dtype=torch.bool)
    mask[3:29, 3:29] = False
    return mask


def test_weight_is_the_inside_strength_inside_and_one_outside() -> None:
    _, masks = scene()
    w = guidance_weight(masks, [0.25, 0.0])
    rows, cols = deep_inside()
    assert torch.all(w[:, 0, rows, cols] == 0.25)
    assert torch.all(w[:, 0][:, outside()] == 1.0)
    assert w.min() >= 0 and w.max() <= 1


def test_noise_leaves_pixels_well_inside_exactly_unchanged_and_moves_those_outside() -> None:
    x, masks = scene()
    generator = NoiseGenerator(strength=0.3, width=4)
    out = generator(x, guidance_weight(masks, [0.0, 0.0]))
    rows, cols = deep_inside()
    assert torch.equal(out[:, :, rows, cols], x[:, :, rows, cols])
    moved = (out - x).abs()[:, 0][:, outside()]
    assert moved.mean() > 1e-3


def test_flow_leaves_pixels_well_inside_unchanged_to_interpolation_precision() -> None:
    x, masks = scene()
    generator = FlowFieldGenerator(mu=0.2, width=4)
    out = generator(x, guidance_weight(masks, [0.0, 0.0]))
    rows, cols = deep_inside()
    torch.testing.assert_close(out[:, :, rows, cols], x[:, :, rows, cols], atol=1e-6, rtol=0)
    moved = (out - x).abs()[:, 0][:, outside()]
    assert moved.mean() > 1e-3


def test_full_inside_strength_is_the_unguided_generator() -> None:
    x, masks = scene()
    generator = NoiseGenerator(strength=0.3, width=4)
    torch.testing.assert_close(generator(x, guidance_weight(masks, [1.0, 1.0])), generator(x))


@pytest.mark.parametrize(
    ("inside", "message"),
    [([0.0], "one inside strength per mask channel"), ([0.0, 1.5], "must be in")],
)
def test_bad_guidance_is_refused_with_a_clear_message(inside: list[float], message: str) -> None:
    _, masks = scene()
    with pytest.raises(ValueError, match=message):
        guidance_weight(masks, inside)


def test_a_weight_of_the_wrong_shape_is_refused() -> None:
    x, _ = scene()
    with pytest.raises(ValueError, match="guidance_weight"):
        NoiseGenerator(0.1, width=4)(x, torch.ones(2, 2, SIZE, SIZE))
