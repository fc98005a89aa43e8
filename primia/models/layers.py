"""Building blocks shared by the models, limited to layers DP and MPC can both run."""

from __future__ import annotations

import torch
from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of at least two channels each.

    GroupNorm replaces BatchNorm: BatchNorm mixes samples in a batch, which breaks the
    per-sample gradients DP-SGD needs (Opacus refuses it).
    """
    groups = min(32, max(1, channels // 2))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


def conv_norm_relu(in_channels: int, out_channels: int, *, stride: int = 1) -> nn.Sequential:
    """3×3 convolution, GroupNorm, ReLU (never in-place: Opacus hooks the activations)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        group_norm(out_channels),
        nn.ReLU(),
    )


class BasicBlock(nn.Module):
    """ResNet basic block: ``relu(norm(conv(relu(norm(conv(x))))) + shortcut(x))``.

    ``shortcut`` is a 1×1 convolution with GroupNorm when the shape changes and the input
    itself otherwise; it is ``None`` then rather than ``nn.Identity``, which CrypTen lacks.
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = group_norm(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = group_norm(out_channels)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Sequential | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                group_norm(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.relu2(out + skip)


class Residual(nn.Module):
    """``x + body(x)``, the identity-shortcut residual of ResNet-9."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class DenseLayer(nn.Module):
    """DenseNet's bottleneck layer: ``cat([x, conv3(relu(norm(conv1(relu(norm(x))))))])``.

    The 1×1 convolution makes ``4 × growth`` channels, the 3×3 one ``growth`` new channels
    that are appended to the input's (Huang et al. 2017, DenseNet-BC), GroupNorm in place
    of BatchNorm. Each layer is called once per forward (FastDPSGD's requirement).
    """

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, 4 * growth, 1, bias=False)
        self.norm2 = group_norm(4 * growth)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu1(self.norm1(x)))
        out = self.conv2(self.relu2(self.norm2(out)))
        return torch.cat([x, out], dim=1)
