"""The small U-Net the segmenter and the anonymization generators share.

Two levels down and up (GroupNorm, ReLU, average-pool down, nearest up, skip connections),
a tanh output, no BatchNorm (per-sample statistics only, so it works under DP-SGD and at
batch size 1) and no in-place operations.
"""

from __future__ import annotations

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
