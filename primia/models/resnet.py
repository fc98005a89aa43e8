"""ResNet-18 and ResNet-9 for one-channel radiographs, with GroupNorm.

ResNet-18 follows He et al. (2016) with BatchNorm replaced by GroupNorm. ResNet-9 is the
compact residual network of Page's DAWNBench entry ("How to train your ResNet", 2018),
the backbone of DP image-classification baselines (Klause et al., 2022).
"""

from __future__ import annotations

import torch
from torch import nn

from primia.models.layers import BasicBlock, Residual, conv2d, conv_norm_relu, group_norm
from primia.models.registry import register_model


class ResNet18(nn.Module):
    def __init__(
        self, *, num_classes: int, in_channels: int = 1, width: int = 64, ws: bool = False
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            conv2d(in_channels, width, 7, ws=ws, stride=2, padding=3, bias=False),
            group_norm(width),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages: list[nn.Module] = []
        channels = width
        for stage, out_channels in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 1 if stage == 0 else 2
            stages.append(BasicBlock(channels, out_channels, stride=stride, ws=ws))
            stages.append(BasicBlock(out_channels, out_channels, ws=ws))
            channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.stages(self.stem(x)))))


class ResNet9(nn.Module):
    def __init__(
        self, *, num_classes: int, in_channels: int = 1, width: int = 64, ws: bool = False
    ) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_norm_relu(in_channels, w, ws=ws),
            conv_norm_relu(w, 2 * w, ws=ws),
            nn.MaxPool2d(2),
            Residual(
                nn.Sequential(
                    conv_norm_relu(2 * w, 2 * w, ws=ws), conv_norm_relu(2 * w, 2 * w, ws=ws)
                )
            ),
            conv_norm_relu(2 * w, 4 * w, ws=ws),
            nn.MaxPool2d(2),
            conv_norm_relu(4 * w, 8 * w, ws=ws),
            nn.MaxPool2d(2),
            Residual(
                nn.Sequential(
                    conv_norm_relu(8 * w, 8 * w, ws=ws), conv_norm_relu(8 * w, 8 * w, ws=ws)
                )
            ),
        )
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.features(x))))


@register_model("resnet18")
def resnet18(
    *, num_classes: int, in_channels: int = 1, width: int = 64, ws: bool = False
) -> nn.Module:
    return ResNet18(num_classes=num_classes, in_channels=in_channels, width=width, ws=ws)


@register_model("resnet9")
def resnet9(
    *, num_classes: int, in_channels: int = 1, width: int = 64, ws: bool = False
) -> nn.Module:
    return ResNet9(num_classes=num_classes, in_channels=in_channels, width=width, ws=ws)
