"""Building blocks shared by the models, limited to layers DP and MPC can both run."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

WS_EPS = 1e-5
"""Added to the variance before the square root, so a constant filter standardises to 0."""


def standardise(weight: torch.Tensor, eps: float = WS_EPS) -> torch.Tensor:
    """Weight standardisation (Qiao et al. 2019): ``ŵ = (w − μ_o) / sqrt(σ²_o + eps)``, with
    ``μ_o`` and ``σ²_o`` the mean and (biased) variance of output channel ``o``'s weights
    over its fan-in (input channels × kernel). Each filter of ``ŵ`` has mean 0 and
    variance ``σ²/(σ² + eps) ≈ 1``."""
    var, mean = torch.var_mean(
        weight, dim=tuple(range(1, weight.dim())), keepdim=True, unbiased=False
    )
    return (weight - mean) * (var + eps).rsqrt()


class WSConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` whose forward convolves with :func:`standardise` of its weight.

    The parameter stays the raw ``weight`` (what the optimizer, checkpoints and DP-SGD's
    clipping see); the standardised one exists only inside the forward pass. It is still a
    ``Conv2d`` for Opacus-style hooks and for the model checks; FastDPSGD maps the
    per-sample gradient with respect to ``ŵ`` back through the standardisation's Jacobian
    (:func:`standardise_backward`), and encrypted inference shares the folded weight
    ``ŵ`` (:func:`export_parameters`), so under MPC it is a plain convolution.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, standardise(self.weight), self.bias)


def standardise_backward(
    weight: torch.Tensor, grad: torch.Tensor, eps: float = WS_EPS
) -> torch.Tensor:
    """The gradient with respect to the raw ``weight`` given ``grad`` = ∂L/∂ŵ, for a batch of
    per-sample gradients (shape ``[N, *weight.shape]``).

    With ``r = (σ² + eps)^(-1/2)``, ``ŵ = (w − μ)·r`` and ``n`` the fan-in, per filter:
    ``∂L/∂w = r·(g − mean(g) − (w − μ)·r²·mean(g·(w − μ)))``, linear in ``g`` (the same
    map for every sample, since it depends on the weight only).
    """
    dims = tuple(range(1, weight.dim()))
    var, mean = torch.var_mean(weight, dim=dims, keepdim=True, unbiased=False)
    r = (var + eps).rsqrt()
    centred = (weight - mean).unsqueeze(0)
    sample_dims = tuple(d + 1 for d in dims)
    g_mean = grad.mean(dim=sample_dims, keepdim=True)
    gc_mean = (grad * centred).mean(dim=sample_dims, keepdim=True)
    return r * (grad - g_mean - centred * r * r * gc_mean)


def conv2d(
    in_channels: int, out_channels: int, kernel_size: int, *, ws: bool = False, **options: Any
) -> nn.Conv2d:
    """A convolution, weight-standardised when ``ws`` (:class:`WSConv2d`)."""
    return (WSConv2d if ws else nn.Conv2d)(in_channels, out_channels, kernel_size, **options)


def export_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s parameters by name as a plain network uses them: each
    :class:`WSConv2d`'s weight replaced by its standardised ``ŵ`` (folded, so a runtime that
    knows only ``Conv2d``, such as encrypted inference, computes the same function)."""
    folded = {
        f"{name}.weight" if name else "weight": standardise(module.weight).detach()
        for name, module in model.named_modules()
        if isinstance(module, WSConv2d)
    }
    return {
        name: folded.get(name, parameter.detach()) for name, parameter in model.named_parameters()
    }


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of at least two channels each.

    GroupNorm replaces BatchNorm: BatchNorm mixes samples in a batch, which breaks the
    per-sample gradients DP-SGD needs (Opacus refuses it).
    """
    groups = min(32, max(1, channels // 2))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


def conv_norm_relu(
    in_channels: int, out_channels: int, *, stride: int = 1, ws: bool = False
) -> nn.Sequential:
    """3×3 convolution, GroupNorm, ReLU (never in-place: Opacus hooks the activations)."""
    return nn.Sequential(
        conv2d(in_channels, out_channels, 3, ws=ws, stride=stride, padding=1, bias=False),
        group_norm(out_channels),
        nn.ReLU(),
    )


class BasicBlock(nn.Module):
    """ResNet basic block: ``relu(norm(conv(relu(norm(conv(x))))) + shortcut(x))``.

    ``shortcut`` is a 1×1 convolution with GroupNorm when the shape changes and the input
    itself otherwise; it is ``None`` then rather than ``nn.Identity``, which CrypTen lacks.
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, stride: int = 1, ws: bool = False
    ) -> None:
        super().__init__()
        self.conv1 = conv2d(
            in_channels, out_channels, 3, ws=ws, stride=stride, padding=1, bias=False
        )
        self.norm1 = group_norm(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = conv2d(out_channels, out_channels, 3, ws=ws, padding=1, bias=False)
        self.norm2 = group_norm(out_channels)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Sequential | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                conv2d(in_channels, out_channels, 1, ws=ws, stride=stride, bias=False),
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

    def __init__(self, in_channels: int, growth: int, *, ws: bool = False) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.relu1 = nn.ReLU()
        self.conv1 = conv2d(in_channels, 4 * growth, 1, ws=ws, bias=False)
        self.norm2 = group_norm(4 * growth)
        self.relu2 = nn.ReLU()
        self.conv2 = conv2d(4 * growth, growth, 3, ws=ws, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu1(self.norm1(x)))
        out = self.conv2(self.relu2(self.norm2(out)))
        return torch.cat([x, out], dim=1)
