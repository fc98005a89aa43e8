"""Small CNNs for tests, quick demos and privacy audits.

* ``cnn``: two conv–GroupNorm–ReLU blocks, global average pooling and a linear head.
* ``lenet``: the LeNet-style ConvNet that DLG (Zhu et al., NeurIPS 2019) inverted: three
  5×5 convolutions with sigmoid activations and a linear head over the 8×8 maps. Smooth
  activations and a head that sees every position make its gradients reveal the input
  (second-order attacks recover a 32 px image almost exactly), so the gradient-inversion
  audit uses it to show what an attack can do on a model that leaks.
"""

from __future__ import annotations

from torch import nn

from primia.models.layers import conv_norm_relu
from primia.models.registry import register_model


@register_model("cnn")
def cnn(*, num_classes: int, in_channels: int = 1, width: int = 16, ws: bool = False) -> nn.Module:
    return nn.Sequential(
        conv_norm_relu(in_channels, width, ws=ws),
        nn.MaxPool2d(2),
        conv_norm_relu(width, 2 * width, ws=ws),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, num_classes),
    )


@register_model("lenet")
def lenet(*, num_classes: int, in_channels: int = 1, width: int = 12) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 5, stride=2, padding=2),
        nn.Sigmoid(),
        nn.Conv2d(width, width, 5, stride=2, padding=2),
        nn.Sigmoid(),
        nn.Conv2d(width, width, 5, padding=2),
        nn.Sigmoid(),
        # 8×8 maps whatever the image size (at 32 px the pooling is the identity)
        nn.AdaptiveAvgPool2d(8),
        nn.Flatten(),
        nn.Linear(width * 64, num_classes),
    )
