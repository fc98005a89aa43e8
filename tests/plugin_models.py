"""Model plug-ins for the tests (imported by module path, as a consortium's would be)."""

from __future__ import annotations

from torch import nn

from primia.models.layers import conv_norm_relu


def tiny(*, num_classes: int, in_channels: int = 1, width: int = 4) -> nn.Module:
    """Valid everywhere: an nn.Sequential of primia's layers."""
    return nn.Sequential(
        conv_norm_relu(in_channels, width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, num_classes),
    )


def batchnorm(*, num_classes: int, in_channels: int = 1, width: int = 4) -> nn.Module:
    """Invalid for DP-SGD: BatchNorm mixes the samples of a batch."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, num_classes),
    )


def identity(*, num_classes: int, in_channels: int = 1, width: int = 4) -> nn.Module:
    """Valid for the fast DP path, not encrypted: CrypTen has no Identity, and an in-place
    ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1),
        nn.Identity(),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, num_classes),
    )
