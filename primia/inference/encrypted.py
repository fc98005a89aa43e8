"""primia's models on secret-shared tensors, built from the model's own module tree.

CrypTen's ONNX path cannot take these models (GroupNorm exports as InstanceNormalization,
which its converter lacks; ``crypten.nn.GroupNorm`` is not implemented; equal
initializers become ``Identity`` ops it refuses), so :class:`EncryptedModel` walks the
PyTorch module tree and applies each layer with CrypTensor operations. The architecture is
public: every party builds the same module tree from the model's spec; only the model
owner's copy holds the real weights, which are secret-shared from its rank.

Group normalisation, y = (x − μ)/√(σ² + ε)·γ + β over each group of channels, needs an
inverse square root. CrypTen's converges only for inputs of order 1 (its fixed initial
guess is far off for the small variances deep layers have), so :func:`inv_sqrt` starts
from a guess within a factor of 2 found by one batched comparison against public powers
of 4, and :func:`group_norm` scales the centred values by a public factor before
squaring them, so small variances keep their precision in 16 fractional bits.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from primia.errors import ModelError
from primia.models.compat import ALLOWED_LAYERS, SEQUENTIAL_MODELS
from primia.models.layers import BasicBlock, DenseLayer, Residual, export_parameters

CrypTensor = Any
"""crypten.CrypTensor (CrypTen ships no type information)."""

INV_SQRT_GUESS = (1.33535531, -0.41063349, 0.05120116)
"""Coefficients (of 1, u, u²) of the minimax quadratic to 1/√u on [1, 4)."""
INV_SQRT_ITERATIONS = 2
"""Newton–Raphson iterations of :func:`inv_sqrt` from its initial guess."""


class EncryptedModel:
    """``model``'s forward pass on CrypTensors, its parameters shared from rank ``src``.

    Every party must construct it with the same architecture (the same spec), in the same
    order, since sharing a tensor is a collective operation; only the values at ``src``
    matter.
    """

    def __init__(self, model: nn.Module, *, src: int, crypten: Any) -> None:
        check_supported(model)  # before any parameter is shared
        self.model = model.eval()
        self._crypten = crypten
        # Weight-standardised convolutions are shared with ŵ folded in: under MPC they are
        # plain convolutions (standardising shares would cost a secret inverse square root).
        self.parameters = {
            name: crypten.cryptensor(parameter, src=src)
            for name, parameter in export_parameters(model).items()
        }

    def __call__(self, images: CrypTensor) -> CrypTensor:
        return self._apply(self.model, "", images)

    def _apply(self, module: nn.Module, prefix: str, x: CrypTensor) -> CrypTensor:
        def parameter(name: str) -> CrypTensor:
            return self.parameters[prefix + name]

        if _is_sequential(module):
            layers = list(_layers(module, prefix))
            position = 0
            while position < len(layers):
                layer_prefix, layer = layers[position]
                following = layers[position + 1][1] if position + 1 < len(layers) else None
                if isinstance(layer, nn.ReLU) and isinstance(following, MAX_POOLS):
                    # max commutes with ReLU (a monotone function), so the comparisons of
                    # the ReLU run on the pooled tensor, a quarter of the size or less
                    x = self._apply(following, layers[position + 1][0], x).relu()
                    position += 2
                else:
                    x = self._apply(layer, layer_prefix, x)
                    position += 1
            return x
        if isinstance(module, nn.Conv2d):
            out = x.conv2d(
                parameter("weight"),
                stride=module.stride,
                padding=module.padding,
                dilation=module.dilation,
                groups=module.groups,
            )
            if module.bias is not None:
                out = out + parameter("bias").view(1, -1, 1, 1)
            return out
        if isinstance(module, nn.GroupNorm):
            return group_norm(
                x, module.num_groups, parameter("weight"), parameter("bias"), eps=module.eps
            )
        if isinstance(module, nn.ReLU):
            return x.relu()
        if isinstance(module, nn.MaxPool2d):
            return max_pool2d(
                x,
                _pair(module.kernel_size),
                _pair(module.stride or module.kernel_size),
                _pair(module.padding),
            )
        if isinstance(module, nn.Sigmoid):
            return x.sigmoid()
        if isinstance(module, nn.AvgPool2d):
            return x.avg_pool2d(module.kernel_size, stride=module.stride, padding=module.padding)
        if isinstance(module, nn.AdaptiveAvgPool2d):
            return x.adaptive_avg_pool2d(_pair(module.output_size))
        if isinstance(module, nn.AdaptiveMaxPool2d) and _pair(module.output_size) == (1, 1):
            n, c, _, _ = x.size()
            return tree_max(x.view(n, c, -1), dim=2).view(n, c, 1, 1)
        if isinstance(module, nn.AdaptiveMaxPool2d):
            return x.adaptive_max_pool2d(_pair(module.output_size))
        if isinstance(module, nn.Flatten):
            return x.flatten(start_dim=module.start_dim)
        if isinstance(module, nn.Linear):
            out = x.matmul(parameter("weight").t())
            return out + parameter("bias") if module.bias is not None else out
        if isinstance(module, Residual):
            return x + self._apply(module.body, f"{prefix}body.", x)
        if isinstance(module, BasicBlock):
            out = self._apply(module.conv1, f"{prefix}conv1.", x)
            out = self._apply(module.norm1, f"{prefix}norm1.", out).relu()
            out = self._apply(module.conv2, f"{prefix}conv2.", out)
            out = self._apply(module.norm2, f"{prefix}norm2.", out)
            skip = (
                x
                if module.shortcut is None
                else self._apply(module.shortcut, f"{prefix}shortcut.", x)
            )
            return (out + skip).relu()
        if isinstance(module, DenseLayer):
            out = self._apply(module.norm1, f"{prefix}norm1.", x).relu()
            out = self._apply(module.conv1, f"{prefix}conv1.", out)
            out = self._apply(module.norm2, f"{prefix}norm2.", out).relu()
            out = self._apply(module.conv2, f"{prefix}conv2.", out)
            return _cat([x, out], dim=1)
        raise AssertionError(f"check_supported let {type(module).__name__} through")


MAX_POOLS = (nn.MaxPool2d, nn.AdaptiveMaxPool2d)
_LEAVES = tuple(
    layer
    for layer in ALLOWED_LAYERS
    if layer not in (nn.Sequential, BasicBlock, Residual, DenseLayer)
)
"""The layers :meth:`EncryptedModel._apply` evaluates itself: primia's allowed layers
without the containers it walks into."""


def check_supported(model: nn.Module, prefix: str = "") -> None:
    """Raise :class:`ModelError` naming the first layer (or layer option) that
    :class:`EncryptedModel` cannot evaluate."""
    children: list[tuple[str, nn.Module]]
    if _is_sequential(model) or isinstance(model, Residual | BasicBlock | DenseLayer):
        children = [(f"{prefix}{name}.", child) for name, child in model.named_children()]
        for child_prefix, child in children:
            check_supported(child, child_prefix)
        return
    name = prefix.rstrip(".") or type(model).__name__
    if not isinstance(model, _LEAVES):
        raise ModelError(
            f"{name}: {type(model).__name__} cannot run encrypted; use the layers of primia.models"
        )
    unsupported = _unsupported_option(model)
    if unsupported:
        raise ModelError(f"{name}: {type(model).__name__} with {unsupported} cannot run encrypted")


def _unsupported_option(layer: nn.Module) -> str | None:
    if isinstance(layer, nn.Conv2d) and layer.padding_mode != "zeros":
        return f"padding_mode={layer.padding_mode!r}"
    if isinstance(layer, nn.MaxPool2d) and (layer.dilation not in (1, (1, 1)) or layer.ceil_mode):
        return "dilation or ceil_mode"
    if isinstance(layer, nn.AvgPool2d) and (
        layer.ceil_mode or not layer.count_include_pad or layer.divisor_override is not None
    ):
        return "ceil_mode, count_include_pad=False or divisor_override"
    if isinstance(layer, nn.Flatten) and layer.end_dim != -1:
        return f"end_dim={layer.end_dim}"
    return None


def _is_sequential(module: nn.Module) -> bool:
    return isinstance(module, nn.Sequential) or type(module) in SEQUENTIAL_MODELS


def _layers(module: nn.Module, prefix: str) -> Iterator[tuple[str, nn.Module]]:
    """The layers a sequential module applies, nested sequences flattened, in order."""
    for name, child in module.named_children():
        if _is_sequential(child):
            yield from _layers(child, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}.", child


def _pair(size: Any) -> tuple[Any, Any]:
    return tuple(size) if isinstance(size, tuple | list) else (size, size)


MAX_POOL_PADDING = -(2.0**14)
"""What max pooling pads with: below any activation of a normalised network, and far
enough inside CrypTen's ring (2^47 at 16 fractional bits) that differences cannot wrap."""


def maximum(a: CrypTensor, b: CrypTensor) -> CrypTensor:
    """max(a, b) = b + ReLU(a − b): one secure comparison and one multiplication."""
    return b + (a - b).relu()


def tree_max(x: CrypTensor, dim: int) -> CrypTensor:
    """The maximum along ``dim`` in ⌈log₂ n⌉ rounds of :func:`maximum`, one batch a round.

    CrypTen's own ``max`` also computes the one-hot argmax (with random tie-breaking),
    which inference never needs and which costs more than the maximum itself.
    """
    while x.size(dim) > 1:
        half = x.size(dim) // 2
        paired = maximum(_slice(x, dim, 0, half), _slice(x, dim, half, 2 * half))
        x = paired if x.size(dim) % 2 == 0 else _cat([paired, _slice(x, dim, 2 * half, None)], dim)
    return x.squeeze(dim)


def max_pool2d(
    x: CrypTensor, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
) -> CrypTensor:
    """2-D max pooling as two 1-D poolings (the maximum over a rectangle is the maximum
    over its rows of the maxima over its columns), each a :func:`tree_max` over the
    window: 3×3 windows at stride 2 take 6 comparisons per output instead of 8, in
    4 rounds."""
    x = _max_pool1d(x, 3, kernel[1], stride[1], padding[1])
    return _max_pool1d(x, 2, kernel[0], stride[0], padding[0])


def _max_pool1d(x: CrypTensor, dim: int, kernel: int, stride: int, padding: int) -> CrypTensor:
    if padding:
        before_after = [0, 0] * (x.dim() - 1 - dim) + [padding, padding]
        x = x.pad(tuple(before_after), value=MAX_POOL_PADDING)
    outputs = (x.size(dim) - kernel) // stride + 1
    span = stride * (outputs - 1) + 1
    # window element j of every window, for each j; their maximum is the pooling
    candidates = [_slice(x, dim, j, j + span, stride) for j in range(kernel)]
    return tree_max(type(x).stack(candidates), dim=0)


def _slice(x: CrypTensor, dim: int, start: int, stop: int | None, step: int = 1) -> CrypTensor:
    index: list[slice] = [slice(None)] * x.dim()
    index[dim] = slice(start, stop, step)
    return x[tuple(index)]


def _cat(tensors: list[CrypTensor], dim: int) -> CrypTensor:
    return type(tensors[0]).cat(tensors, dim=dim)


GROUP_NORM_SCALE = 16.0
"""Centred values are scaled by this public factor before squaring, so the variance of
small activations keeps its precision in 16 fractional bits."""
_EXPONENTS = torch.arange(-7, 14, dtype=torch.float64)
"""The powers 4^j that bracket v in :func:`inv_sqrt`: v from 2^-16 (CrypTen's
resolution) to 4^14, the scaled variance s²σ² of a group whose standard deviation σ is
up to 1024. (Beyond, squaring the scaled values would leave the 64-bit ring.)"""


def inv_sqrt(v: CrypTensor, *, scale: float = 1.0) -> CrypTensor:
    """scale/√v for v in [2^-16, 4^14], to the fixed-point resolution.

    CrypTen's own inverse square root starts Newton–Raphson from a fixed guess that
    converges only for v of order 1 (on a variance of 1e-3 its 3 iterations are off by
    90 %). Here one batched secure comparison against the public thresholds 4^j finds the
    power g = 2^-J with v in [4^J, 4^(J+1)):

        g = 2^8 − Σ_j [v ≥ 4^j]·2^-j   (the sum telescopes to 2^-J),

    so u = v·g·g lies in [1, 4) whatever v's size. On [1, 4), the quadratic
    1.3354 − 0.4106·u + 0.0512·u² is within 2.4 % of 1/√u (the minimax fit);
    Newton–Raphson y ← 1.5·y − 0.5·(u·y)·y² then takes the relative error to 9·10⁻⁴ and
    1·10⁻⁶ (below the fixed-point resolution) in two iterations, and 1/√v = g·1/√u.
    Multiplying by g twice rather than by g² keeps every intermediate within the 16
    fractional bits; u·y and y² are one batched multiplication, so an iteration costs two
    rounds of communication. A public ``scale`` (a power of 2, so exact) multiplies g
    before g meets y: scaling the result afterwards would scale its rounding error too.
    """
    thresholds = (4.0**_EXPONENTS).to(torch.float32)
    above = v.unsqueeze(-1).ge(thresholds)
    # a comparison's result is an integer tensor (scale 1): multiplying it by public
    # fractions would round them to integers, so the steps enter as a shared fixed-point
    # tensor (shared from rank 0; every party makes the same call)
    steps = (2.0 ** (-_EXPONENTS)).to(torch.float32).expand(above.size())
    power = (above * v.new(steps)).sum(-1).neg() + 2.0**8
    u = v * power * power
    y = u.square() * INV_SQRT_GUESS[2] + u * INV_SQRT_GUESS[1] + INV_SQRT_GUESS[0]
    for _ in range(INV_SQRT_ITERATIONS):
        products = type(u).stack([u, y]) * type(u).stack([y, y])
        y = y * 1.5 - products[0] * products[1] * 0.5
    return y * (power * scale)


def group_norm(
    x: CrypTensor,
    groups: int,
    weight: CrypTensor,
    bias: CrypTensor,
    *,
    eps: float,
) -> CrypTensor:
    """GroupNorm on a CrypTensor of shape (N, C, H, W):
    y = (x − μ)·(s/√(s²(σ² + ε))·γ) + β with the public scale s = ``GROUP_NORM_SCALE``.

    Valid while each group's standard deviation σ is at most 1024 (see ``_EXPONENTS``);
    activations of a network fed images in [0, 1] stay far below.
    """
    n, c, h, w = x.size()
    grouped = x.view(n, groups, (c // groups) * h * w)
    centred = grouped - grouped.mean(dim=2, keepdim=True)
    scaled = centred * GROUP_NORM_SCALE
    variance = scaled.square().mean(dim=2, keepdim=True) + eps * GROUP_NORM_SCALE**2
    # the per-group factor meets γ on the small (N, C) tensor, so the activations are
    # multiplied once
    factor = inv_sqrt(variance, scale=GROUP_NORM_SCALE).expand(n, groups, c // groups)
    factor = factor.reshape(n, c) * weight.view(1, c)
    normalised = centred.view(n, c, h * w) * factor.unsqueeze(-1)
    return normalised.view(n, c, h, w) + bias.view(1, c, 1, 1)
