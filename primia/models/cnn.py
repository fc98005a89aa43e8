"""A small CNN: two conv blocks and a linear head. For tests and quick demos."""

from __future__ import annotations

from torch import nn

from primia.models.layers import conv_norm_relu
from primia.models.registry import register_model


@register_model("cnn")
def cnn(*, num_classes: int, in_channels: int = 1, width: int = 16) -> nn.Module:
    return nn.Sequential(
        conv_norm_relu(in_channels, width),
        nn.MaxPool2d(2),
        conv_norm_relu(width, 2 * width),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, num_classes),
    )
