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

Segmentation guidance (PriCheXySeg-style): both ``forward`` methods take an optional
per-pixel strength ``w`` in [0, 1] (``[B, 1, H, W]``) from :func:`guidance_weight`, and
scale the perturbation by it: grid = identity − μ · w · smooth(g(x)), or
x' = clip(x + s · w · g(x), 0, 1). With masks m_r of the diagnostic regions (lungs,
heart) and a per-region inside strength a_r,

    w = min_r (1 − (1 − a_r) · smooth(m_r)),

so w = a_r well inside region r, 1 well outside every region, and a smooth ramp of about
two Gaussian σ at each border. Where w = 0 the perturbation is exactly zero: the noise
generator returns the pixel unchanged, the flow samples at the identity grid (the pixel
itself up to bilinear rounding, below 1e-6 for float32).

:class:`GuidedGenerator` wraps either generator with its a_r and a source of masks: a
frozen segmenter (its weights travel in the generator's file, so the anonymizer needs
nothing else at a hospital), or masks given with each batch (a manifest's mask columns).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from primia.segment.model import UNet

__all__ = ["FlowFieldGenerator", "GuidedGenerator", "NoiseGenerator", "UNet", "guidance_weight"]


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

    def forward(self, images: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Deform ``images``; ``weight`` (``[B, 1, H, W]`` in [0, 1]) scales the offsets."""
        batch = images.shape[0]
        identity = torch.eye(2, 3, dtype=images.dtype, device=images.device)
        grid = F.affine_grid(identity.expand(batch, 2, 3), list(images.shape), align_corners=False)
        if self.mu > 0:
            offsets = self.offsets(images)
            if weight is not None:
                offsets = offsets * _checked_weight(weight, images)
            grid = grid - self.mu * offsets.permute(0, 2, 3, 1)
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

    def forward(self, images: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Perturb ``images``; ``weight`` (``[B, 1, H, W]`` in [0, 1]) scales the noise."""
        noise = self.net(images)
        if weight is not None:
            noise = noise * _checked_weight(weight, images)
        return (images + self.strength * noise).clamp(0.0, 1.0)


class GuidedGenerator(nn.Module):
    """A generator whose perturbation is weighted by :func:`guidance_weight` of the masks.

    ``segmenter`` (frozen, no gradient) predicts the masks when none are given; without
    one, every call must give ``masks`` ``[B, R, H, W]``.
    """

    def __init__(
        self,
        base: FlowFieldGenerator | NoiseGenerator,
        inside: Sequence[float],
        *,
        segmenter: UNet | None = None,
        smoothing: float = 2.0,
    ) -> None:
        super().__init__()
        self.base = base
        self.kind = base.kind
        self.inside = tuple(float(a) for a in inside)
        self.smoothing = smoothing
        self.segmenter = segmenter
        if segmenter is not None:
            segmenter.requires_grad_(False)

    def forward(self, images: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        if masks is None:
            if self.segmenter is None:
                raise ValueError(
                    "this generator was trained with given masks: pass each image's masks "
                    "(a manifest's mask_lungs/mask_heart columns)"
                )
            with torch.no_grad():
                masks = (self.segmenter(images) > 0).to(images.dtype)
        weight = guidance_weight(masks.to(images.dtype), self.inside, smoothing=self.smoothing)
        return self.base(images, weight)

    def train(self, mode: bool = True) -> GuidedGenerator:
        super().train(mode)
        if self.segmenter is not None:
            self.segmenter.eval()  # a fixed tool, never trained here
        return self


def guidance_weight(
    masks: torch.Tensor, inside: Sequence[float], *, smoothing: float = 2.0
) -> torch.Tensor:
    """Per-pixel strength w = min_r (1 − (1 − a_r) · smooth(m_r)), ``[B, 1, H, W]``.

    ``masks`` is ``[B, R, H, W]`` with values in [0, 1] (one channel per diagnostic
    region, e.g. lungs and heart); ``inside`` gives a_r in [0, 1] per region. The smoothed
    mask is snapped to exactly 1 where it is within 1e-5 of 1, so w equals a_r exactly
    well inside region r (a_r = 0 leaves those pixels untouched).
    """
    if masks.dim() != 4:
        raise ValueError(f"masks must be [batch, regions, H, W], got shape {tuple(masks.shape)}")
    if len(inside) != masks.shape[1]:
        raise ValueError(
            f"give one inside strength per mask channel: {len(inside)} for {masks.shape[1]}"
        )
    if any(not 0 <= a <= 1 for a in inside):
        raise ValueError(f"inside strengths must be in [0, 1], got {list(inside)}")
    if smoothing <= 0:
        raise ValueError(f"smoothing must be positive, got {smoothing}")
    regions = masks.shape[1]
    kernel = _gaussian_kernel(smoothing).to(masks.dtype).to(masks.device).expand(regions, 1, -1, -1)
    padding = kernel.shape[-1] // 2
    smooth = F.conv2d(F.pad(masks, (padding,) * 4, mode="replicate"), kernel, groups=regions)
    smooth = torch.where(smooth >= 1 - 1e-5, torch.ones_like(smooth), smooth.clamp(0.0, 1.0))
    strengths = torch.tensor(inside, dtype=masks.dtype, device=masks.device)[None, :, None, None]
    return (1 - (1 - strengths) * smooth).amin(dim=1, keepdim=True)


def _checked_weight(weight: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    expected = (images.shape[0], 1, *images.shape[-2:])
    if tuple(weight.shape) != expected:
        raise ValueError(
            f"guidance weight must have shape {expected}, got {tuple(weight.shape)}; "
            "build it with guidance_weight(masks, inside)"
        )
    return weight.to(images.dtype)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    """A normalised ``[1, 1, k, k]`` Gaussian, k = 2·⌈2σ⌉ + 1."""
    radius = math.ceil(2 * sigma)
    positions = torch.arange(-radius, radius + 1, dtype=torch.float32)
    line = torch.exp(-(positions**2) / (2 * sigma**2))
    kernel = torch.outer(line, line)
    return (kernel / kernel.sum())[None, None]
