"""DenseNet-121 for one-channel radiographs, with GroupNorm: CheXNet's backbone.

Huang et al. (2017), DenseNet-BC-121: a 7×7 stem, four dense blocks of 6, 12, 24 and 16
bottleneck layers (:class:`~primia.models.layers.DenseLayer`, each appending ``growth``
channels), transitions that halve the channels (compression 0.5) and the resolution, and
a linear head on the average-pooled features. CheXNet (Rajpurkar et al. 2017) fine-tunes
it on chest radiographs. BatchNorm is replaced by GroupNorm (DP-SGD needs per-sample
gradients) and every ReLU is out of place; the model is a plain sequence of primia's
layers, so DP-SGD (the fast path and Opacus) and encrypted inference both run it.
``width`` is the growth rate (32 in the paper: about 7 million parameters).
"""

from __future__ import annotations

import torch
from torch import nn

from primia.models.layers import DenseLayer, conv2d, group_norm
from primia.models.registry import register_model

BLOCKS = (6, 12, 24, 16)


class DenseNet121(nn.Module):
    def __init__(
        self, *, num_classes: int, in_channels: int = 1, width: int = 32, ws: bool = False
    ) -> None:
        super().__init__()
        channels = 2 * width
        layers: list[nn.Module] = [
            conv2d(in_channels, channels, 7, ws=ws, stride=2, padding=3, bias=False),
            group_norm(channels),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
        ]
        for block, depth in enumerate(BLOCKS):
            for _ in range(depth):
                layers.append(DenseLayer(channels, width, ws=ws))
                channels += width
            if block < len(BLOCKS) - 1:
                layers += [
                    group_norm(channels),
                    nn.ReLU(),
                    conv2d(channels, channels // 2, 1, ws=ws, bias=False),
                    nn.AvgPool2d(2),
                ]
                channels //= 2
        layers += [group_norm(channels), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.features(x))))


@register_model("densenet121")
def densenet121(
    *, num_classes: int, in_channels: int = 1, width: int = 32, ws: bool = False
) -> nn.Module:
    return DenseNet121(num_classes=num_classes, in_channels=in_channels, width=width, ws=ws)
