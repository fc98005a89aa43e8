"""The generators: identity at μ = 0 and s = 0, bounded displacement, shape and range."""

from __future__ import annotations

import pytest
import torch

from primia.anonymize import FlowFieldGenerator, NoiseGenerator


def images(batch: int = 3, size: int = 32) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(batch, 1, size, size)


def test_flow_field_at_mu_zero_is_the_identity() -> None:
    x = images()
    torch.testing.assert_close(FlowFieldGenerator(mu=0.0, width=4)(x), x, atol=1e-6, rtol=0)


def test_noise_at_strength_zero_is_the_identity() -> None:
    x = images()
    torch.testing.assert_close(NoiseGenerator(strength=0.0, width=4)(x), x)


@pytest.mark.parametrize("size", [32, 48])
def test_outputs_keep_shape_and_range_and_are_differentiable(size: int) -> None:
    x = images(size=size)
    for generator in (FlowFieldGenerator(mu=0.05, width=4), NoiseGenerator(0.2, width=4)):
        out = generator(x)
        assert out.shape == x.shape
        assert out.min() >= 0 and out.max() <= 1
        out.mean().backward()
        assert all(p.grad is not None for p in generator.parameters())


def test_the_deformation_is_bounded_by_mu() -> None:
    x = images()
    generator = FlowFieldGenerator(mu=0.1, width=4)
    offsets = generator.offsets(x)
    assert offsets.shape == (3, 2, 32, 32)
    assert offsets.abs().max() <= 1  # smoothing a field in (-1, 1) stays in it
    assert not torch.allclose(generator(x), x)  # μ > 0 moves pixels


def test_smoothing_makes_the_field_smooth() -> None:
    x = images()
    rough = FlowFieldGenerator(mu=0.1, smoothing=0.3, width=4)
    smooth = FlowFieldGenerator(mu=0.1, smoothing=3.0, width=4)
    smooth.net.load_state_dict(rough.net.state_dict())

    def roughness(field: torch.Tensor) -> float:
        return float((field[..., 1:] - field[..., :-1]).abs().mean().detach())

    assert roughness(smooth.offsets(x)) < roughness(rough.offsets(x))


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="mu"):
        FlowFieldGenerator(mu=-1)
    with pytest.raises(ValueError, match="strength"):
        NoiseGenerator(strength=2)
