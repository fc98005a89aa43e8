"""Generators that anonymize a radiograph: a learned deformation, or learned noise.

Both share a small U-Net ``g`` (GroupNorm, ReLU, average-pool down, nearest up, skip
connections) with a tanh output, so every output value is in (−1, 1).

* :class:`FlowFieldGenerator` (PriCheXy-Net, Packhäuser et al., MICCAI 2023): ``g``
  gives a 2-channel offset field, smoothed with a Gaussian so the deformation is smooth,
  and the image is resampled at

      grid = identity − μ · smooth(g(x))

  (coordinates normalised to [−1, 1]; bilinear, border padding). μ bounds the
  displacement: at most μ/2 of the image side. μ = 0 is the identity.
* :class:`NoiseGenerator`: a learned additive perturbation of bounded strength,
  x' = clip(x + s · g(x), 0, 1). s = 0 is the identity.

Neither has BatchNorm or in-place activations, and both keep the input's shape and range.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class UNet(nn.Module):
    """Two levels down and up with skips; ``out_channels`` tanh outputs per pixel."""

    def __init__(self, out_channels: int, width: int = 16) -> None:
        super().__init__()
        self.down0 = _block(1, width)
        self.down1 = _block(width, 2 * width)
        self.bottom = _block(2 * width, 4 * width)
        self.up1 = _block(4 * width + 2 * width, 2 * width)
        self.up0 = _block(2 * width + width, width)
        self.out = nn.Conv2d(width, out_channels, kernel_size=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        level0 = self.down0(images)
        level1 = self.down1(F.avg_pool2d(level0, 2))
        bottom = self.bottom(F.avg_pool2d(level1, 2))
        up1 = self.up1(torch.cat([F.interpolate(bottom, size=level1.shape[-2:]), level1], 1))
        up0 = self.up0(torch.cat([F.interpolate(up1, size=level0.shape[-2:]), level0], 1))
        return torch.tanh(self.out(up0))


def _block(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, kernel_size=3, padding=1),
        nn.GroupNorm(min(8, outputs), outputs),
        nn.ReLU(),
        nn.Conv2d(outputs, outputs, kernel_size=3, padding=1),
        nn.GroupNorm(min(8, outputs), outputs),
        nn.ReLU(),
    )


class FlowFieldGenerator(nn.Module):
    """x' = x sampled at identity − μ · smooth(g(x)); see the module docstring."""

    kind = "flow"

    def __init__(self, mu: float = 0.01, *, smoothing: float = 2.0, width: int = 16) -> None:
        super().__init__()
        if mu < 0:
            raise ValueError(f"mu must be 0 or positive, got {mu}")
        if smoothing <= 0:
            raise ValueError(f"smoothing must be positive, got {smoothing}")
        self.mu = mu
        self.smoothing = smoothing
        self.net = UNet(out_channels=2, width=width)
        self.kernel: torch.Tensor
        self.register_buffer("kernel", _gaussian_kernel(smoothing), persistent=False)

    def offsets(self, images: torch.Tensor) -> torch.Tensor:
        """The smoothed offset field ``[B, 2, H, W]`` in (−1, 1), before scaling by μ."""
        field = self.net(images)
        kernel = self.kernel.to(field.dtype).expand(2, 1, -1, -1)
        padding = kernel.shape[-1] // 2
        padded = F.pad(field, (padding,) * 4, mode="replicate")
        return F.conv2d(padded, kernel, groups=2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch = images.shape[0]
        identity = torch.eye(2, 3, dtype=images.dtype, device=images.device)
        grid = F.affine_grid(identity.expand(batch, 2, 3), list(images.shape), align_corners=False)
        if self.mu > 0:
            grid = grid - self.mu * self.offsets(images).permute(0, 2, 3, 1)
        return F.grid_sample(
            images, grid, mode="bilinear", padding_mode="border", align_corners=False
        )


class NoiseGenerator(nn.Module):
    """x' = clip(x + s · g(x), 0, 1); see the module docstring."""

    kind = "noise"

    def __init__(self, strength: float = 0.1, *, width: int = 16) -> None:
        super().__init__()
        if not 0 <= strength <= 1:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        self.strength = strength
        self.net = UNet(out_channels=1, width=width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images + self.strength * self.net(images)).clamp(0.0, 1.0)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    """A normalised ``[1, 1, k, k]`` Gaussian, k = 2·⌈2σ⌉ + 1."""
    radius = math.ceil(2 * sigma)
    positions = torch.arange(-radius, radius + 1, dtype=torch.float32)
    line = torch.exp(-(positions**2) / (2 * sigma**2))
    kernel = torch.outer(line, line)
    return (kernel / kernel.sum())[None, None]
