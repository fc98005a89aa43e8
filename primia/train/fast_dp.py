"""DP-SGD whose per-sample clipping builds few per-sample gradients.

On a 2-core CPU it trains at 0.87-0.95× the speed of non-private training for ResNet-9 at
64 px and 0.74-0.84× for ResNet-18 at 128 px, where Opacus' modes reach 0.19-0.64×
(``benchmarks/bench_dp_throughput.py``).

The step is Opacus' DP-SGD step (Abadi et al., CCS 2016), unchanged. For a batch B drawn by
Poisson sampling with rate q, per-sample losses ℓ_i, per-sample gradients g_i = ∇_θ ℓ_i
(over all trainable parameters), clipping norm C and noise multiplier σ::

    ĝ = ( Σ_{i∈B} g_i · min(1, C / (‖g_i‖ + 1e-6)) + N(0, σ²C² I) ) / E|B|

where E|B| = qN is the *expected* batch size (a constant, so the sum's sensitivity to one
example stays C). The clipping factor, 1e-6 included, is Opacus' own
(``DPOptimizer.clip_and_accumulate``). Only ĝ reaches the optimizer, so the guarantee is
the one Opacus' accountant computes for (σ, q, steps): example-level (ε, δ)-DP of all the
weights released. This module changes how the clipped sum is computed, not what it is;
``tests/unit/test_fast_dp.py`` checks it against Opacus' hooks mode with the noise off.

**Groups** (the unit of privacy, :meth:`FastDPSGD.backward`'s ``groups``): when the
samples of a batch are grouped — all images of one patient, or K augmentations of one
example — the clipped term is the group's gradient, G_p = Σ_{i∈p} g_i, so the sum's
sensitivity to one *group* is C::

    ĝ = ( Σ_p G_p · min(1, C / (‖G_p‖ + 1e-6)) + N(0, σ²C² I) ) / E|P|

with E|P| the expected number of groups in a batch. With Poisson sampling of groups at
rate q, the accountant's (σ, q, steps) then bound the privacy loss of a whole group
(patient-level DP). A group must lie whole in one :meth:`FastDPSGD.backward` call.

How, with a = a layer's input and b = ∂(Σ_i ℓ_i)/∂(its output), both captured by one
backward pass that asks autograd for the layers' output gradients only (so no weight
gradient is computed in it):

* ‖g_i‖², layer by layer, by the cheaper of two exact ways (``conv_strategy="auto"``):

  - ``per_sample`` (convolutions on large maps): g_i = b_i ⋆ a_i, every sample's (or
    group's) weight gradient from one grouped weight-gradient call, the units side by side
    as channel groups (:func:`_per_unit_conv_grads`), about the cost of the batched weight
    gradient;
  - ``ghost`` (convolutions on small maps; Li et al. 2022, Bu et al. 2023): with U_i the
    unfolded input (T positions × P = in-channels·K) and b_i (T × O),
    ‖b_iᵀU_i‖² = ⟨U_iU_iᵀ, b_ib_iᵀ⟩, two T×T Gram matrices instead of an O×P gradient.
    U_iU_iᵀ is summed from K shifted slices of the padded input's own Gram matrix, which
    costs T_pad²·I instead of K·T²·I. A group's norm is the same product over its
    samples side by side (m·T positions, so the cross-sample terms are included);
  - linear layers on [B, d] inputs: ‖b_i a_iᵀ‖² = ‖a_i‖²‖b_i‖²; GroupNorm: the per-sample
    gradients themselves, Σ_s x̂·b and Σ_s b (2C numbers a sample), x̂ from the forward's
    saved mean and 1/std.

* Σ_i c_i g_i with c_i = min(1, C/(‖g_i‖+1e-6)): from the per-sample gradients kept, or as
  one batched weight gradient with b_i scaled by c_i (ghost convolutions, linear layers).

A step thus costs a forward, a backward without weight gradients, about one weight
gradient per layer, the Gram matrices of the small maps and the noise: close to a
non-private step. Per-sample gradients exist only for the layers on large maps, whose
weights are small. The Gaussian noise is drawn in parallel threads (:class:`_GaussianNoise`).

Supported trainable layers: ``nn.Conv2d`` (numeric zero padding), ``nn.Linear`` and
``nn.GroupNorm``, what :data:`primia.models.ALLOWED_LAYERS` trains. A weight-standardised
convolution (:class:`~primia.models.layers.WSConv2d`) clips the gradient of the raw
parameter the optimizer updates: per-sample ∂ℓ_i/∂ŵ mapped through the standardisation's
Jacobian, or its ghost norm corrected in closed form (:func:`_ws_ghost_sq_norms`). A model
with another trainable layer, or that calls a layer twice in a forward pass, is refused.
:func:`vmap_clipped_grad_sum` is a general, slower reference built on ``torch.func``.

A training loop (Poisson sampling and accounting stay Opacus')::

    loader = DPDataLoader.from_data_loader(loader)          # opacus.data_loader
    accountant = RDPAccountant()                             # opacus.accountants
    dp = FastDPSGD(model, optimizer, noise_multiplier=sigma, max_grad_norm=C,
                   expected_batch_size=round(q * len(dataset)),
                   accountant=accountant, sample_rate=q)
    for images, targets in loader:
        dp.zero_grad()
        dp.backward(per_sample_loss(model(images), targets))  # shape [B]
        dp.step()        # + N(0, σ²C²), / E|B|, optimizer.step(), accountant.step()
    epsilon = accountant.get_epsilon(delta)
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import torch
from opacus.accountants import IAccountant
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional

from primia.models.layers import WS_EPS, WSConv2d, standardise_backward
from primia.train.randomness import os_seeded_generator

ConvStrategy = Literal["auto", "ghost", "per_sample"]
SUPPORTED_LAYERS: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear, nn.GroupNorm)

# Opacus' clipping factor is C / (‖g_i‖ + 1e-6), capped at 1.
_CLIP_EPS = 1e-6
# Largest temporary (elements) built at once: fresh large tensors cost page faults on CPU,
# so products are formed a few samples at a time.
_BLOCK = 1 << 20
# Largest unfolded input (elements) built at once for per-sample convolution gradients: big
# enough that each batched product keeps both cores busy, small enough to stay in memory.
_UNFOLD_BLOCK = 1 << 23
# Convolutions with fewer input channels get per-sample gradients from unfolded inputs: for
# one input channel (64 px, 64 filters, batch 32) that took half the time of the grouped
# weight gradient, which is faster from a few channels up.
_UNFOLD_MAX_CHANNELS = 4
# How many multiply-adds of a weight gradient one of the ghost norms' is worth: ghost norms
# are used where they cost under a weight gradient divided by this. On ResNet-9 at 64 px
# (batch 32, 2 threads, loaded cores) the per-unit path won at a ratio of 5 and lost by 3×
# at 21, with and without patient groups.
_GHOST_COST = 8.0
# Independent generator streams the Gaussian noise is drawn from (in parallel threads).
_NOISE_STREAMS = 4


@dataclass
class _Capture:
    module: nn.Module
    activation: Tensor  # the layer's input, detached
    output: Tensor  # the layer's output, still in the autograd graph
    stats: tuple[Tensor, Tensor] | None = None  # GroupNorm's mean and 1/std, [B, G] each


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters(recurse=False) if p.requires_grad]


def _sq_norms(per_sample: Tensor) -> Tensor:
    """‖g_i‖² of per-sample tensors [B, ...]."""
    return torch.linalg.vector_norm(per_sample.reshape(per_sample.shape[0], -1), dim=1).square()


def _dot_last(x: Tensor, y: Tensor) -> Tensor:
    """Σ over the last dimension of x·y, a few samples at a time."""
    out = x.new_empty(x.shape[:-1])
    step = max(1, _BLOCK // max(1, x[0].numel()))
    for start in range(0, x.shape[0], step):
        part = slice(start, start + step)
        torch.sum(x[part] * y[part], dim=-1, out=out[part])
    return out


@dataclass(frozen=True)
class _Groups:
    """Which group each sample of a backward call belongs to: ``index[i]`` in [0, count).

    ``slots`` [count, size] lists each group's samples (``size`` = the largest group), the
    empty slots of smaller groups holding ``B``, the index of an all-zero row that
    :meth:`layout` appends: a zero sample adds nothing to a group's gradient.
    """

    index: Tensor
    count: int
    slots: Tensor
    size: int

    @classmethod
    def of(cls, labels: Tensor | None, batch: int, device: torch.device) -> _Groups | None:
        """Groups from arbitrary integer labels [B]; ``None`` when every sample is alone."""
        if labels is None:
            return None
        if labels.shape != (batch,):
            raise ValueError(f"groups needs one label per sample, shape [{batch}]")
        _, index = torch.unique(labels, return_inverse=True)
        count = int(index.max().item()) + 1
        if count == batch:
            return None
        index = index.to(device)
        sizes = torch.bincount(index, minlength=count)
        order = torch.argsort(index, stable=True)
        first = torch.cumsum(sizes, 0) - sizes  # each group's first place in ``order``
        rank = torch.arange(batch, device=device) - first[index[order]]
        size = int(sizes.max().item())
        slots = torch.full((count, size), batch, dtype=torch.long, device=device)
        slots[index[order], rank] = order
        return cls(index, count, slots, size)

    def sum(self, per_sample: Tensor) -> Tensor:
        """Σ over each group's samples: [B, ...] → [count, ...]."""
        out = per_sample.new_zeros((self.count, *per_sample.shape[1:]))
        return out.index_add_(0, self.index, per_sample)

    def pair_sum(self, products: Tensor) -> Tensor:
        """Σ_{i,j ∈ p} products[i, j] for each group p: [B, B] → [count]."""
        members = functional.one_hot(self.index, self.count).to(products.dtype)  # [B, P]
        return ((products @ members) * members).sum(dim=0)

    def layout(self, per_sample: Tensor) -> Tensor:
        """[B, ...] → [count, size, ...]: each group's samples, zero-padded to ``size``."""
        padded = torch.cat([per_sample, per_sample.new_zeros((1, *per_sample.shape[1:]))])
        return padded[self.slots]


def _by_unit(per_sample: Tensor, grouping: _Groups | None) -> Tensor:
    """[B, ...] → [units, members, ...]: one member per unit when there are no groups."""
    return per_sample.unsqueeze(1) if grouping is None else grouping.layout(per_sample)


def _clip_factors(norms: Tensor, max_grad_norm: float) -> Tensor:
    return (max_grad_norm / (norms + _CLIP_EPS)).clamp(max=1.0)


def _conv_args(conv: nn.Conv2d) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    padding = conv.padding
    assert not isinstance(padding, str)  # refused in FastDPSGD.__init__
    return tuple(conv.stride), tuple(padding), tuple(conv.dilation)


def _conv_weight_grad(
    conv: nn.Conv2d, activation: Tensor, backprop: Tensor, *, units: int = 1
) -> Tensor:
    """The weight gradient of ``conv`` alone, summed over the batch given; with ``units``,
    that of ``units`` copies of ``conv`` side by side as channel groups, [units·O, ...]."""
    stride, padding, dilation = _conv_args(conv)
    weight = conv.weight.detach()
    if units > 1:  # convolution_backward reads only its shape: a stride-0 view of one number
        weight = weight.new_empty(()).expand(units * weight.shape[0], *weight.shape[1:])
    return torch.ops.aten.convolution_backward(
        backprop,
        activation,
        weight,
        None,
        stride,
        padding,
        dilation,
        False,
        [0, 0],
        units * conv.groups,
        [False, True, False],
    )[1]


def _per_unit_conv_grads(
    conv: nn.Conv2d, activation: Tensor, backprop: Tensor, grouping: _Groups | None
) -> Tensor:
    """Each unit's weight gradient, [units, *weight.shape]: G_p = Σ_{i∈p} b_i ⋆ a_i, with
    a unit a sample, or a group of samples given ``grouping``.

    One weight-gradient call for the whole batch: the units side by side as the channel
    groups of one convolution (unit p's input channels convolved with its own output
    gradients only), its members (one sample, or a group's samples, zero-padded) as the
    batch that the weight gradient sums over. That runs as fast as the batched weight
    gradient, where B batch-of-one calls (each a parallel region that waits for every
    thread, so on cores that other processes share, B × layers such waits per step) or
    unfolded inputs cost 2-3× more (``benchmarks/bench_dp_throughput.py``). Convolutions of
    under ``_UNFOLD_MAX_CHANNELS`` input channels (a greyscale image's first layer), where
    the grouped call is slow, take the unfolded input's batched product instead: g_i = b_i
    U_iᵀ, with U_i the unfolded input (P = in-channels·K rows × T positions).
    """
    if conv.groups == 1 and conv.in_channels < _UNFOLD_MAX_CHANNELS:
        per_sample = _unfolded_conv_grads(conv, activation, backprop)
        return per_sample if grouping is None else grouping.sum(per_sample)
    inputs, grads = _by_unit(activation, grouping), _by_unit(backprop, grouping)
    units, members = inputs.shape[:2]
    out = _conv_weight_grad(
        conv,
        inputs.transpose(0, 1).reshape(members, -1, *inputs.shape[3:]),
        grads.transpose(0, 1).reshape(members, -1, *grads.shape[3:]),
        units=units,
    )
    return out.view(units, *conv.weight.shape)


def _unfolded_conv_grads(conv: nn.Conv2d, activation: Tensor, backprop: Tensor) -> Tensor:
    """Each sample's weight gradient, [B, *weight.shape], as g_i = b_i · U_iᵀ (ungrouped
    convolutions), a few samples' unfolded inputs at a time."""
    n = activation.shape[0]
    stride, padding, dilation = _conv_args(conv)
    grads = backprop.flatten(2)  # [B, O, T]
    out = backprop.new_empty((n, conv.out_channels, conv.weight[0].numel()))
    per_sample = conv.weight[0].numel() * grads.shape[2]  # unfolded elements of one sample
    step = max(1, _UNFOLD_BLOCK // per_sample)
    for start in range(0, n, step):
        part = slice(start, start + step)
        unfolded = functional.unfold(
            activation[part], conv.kernel_size, dilation=dilation, padding=padding, stride=stride
        )  # [b, P, T]
        torch.bmm(grads[part], unfolded.transpose(1, 2), out=out[part])
    return out.view(n, *conv.weight.shape)


def _shifted_gram_is_cheaper(conv: nn.Conv2d, activation: Tensor, backprop: Tensor) -> bool:
    """Whether T_pad² < K·T²: the padded input's Gram beats the unfolded input's."""
    kh, kw = conv.kernel_size
    _, (ph, pw), _ = _conv_args(conv)
    padded = (activation.shape[2] + 2 * ph) * (activation.shape[3] + 2 * pw)
    positions = backprop.shape[2] * backprop.shape[3]
    return padded * padded < kh * kw * positions * positions


def _ghost_norm_cost(conv: nn.Conv2d, activation: Tensor, backprop: Tensor) -> int:
    """Multiply-adds per sample of :func:`_ghost_sq_norms`."""
    kh, kw = conv.kernel_size
    _, (ph, pw), _ = _conv_args(conv)
    positions = backprop.shape[2] * backprop.shape[3]
    padded = (activation.shape[2] + 2 * ph) * (activation.shape[3] + 2 * pw)
    gram_x = min(padded * padded, kh * kw * positions * positions) * conv.in_channels
    return gram_x + positions * positions * conv.out_channels


def _use_ghost(
    conv: nn.Conv2d,
    activation: Tensor,
    backprop: Tensor,
    grouping: _Groups | None,
    strategy: ConvStrategy,
) -> bool:
    if conv.groups != 1:
        return False
    if strategy != "auto":
        return strategy == "ghost"
    # Ghost: the norms plus one batched weight gradient (O·P·T a sample). Per unit: the same
    # weight gradient as one grouped call, plus writing and reading the units' gradients
    # (O·P numbers each), which dominates on small maps. A group of m samples costs m² times
    # one sample's ghost norms (the zero-padded slots of smaller groups included).
    scale = 1.0 if grouping is None else grouping.count * grouping.size**2 / backprop.shape[0]
    return _GHOST_COST * scale * _ghost_norm_cost(conv, activation, backprop) <= (
        conv.weight.numel() * backprop.shape[2] * backprop.shape[3]
    )


def _ghost_sq_norms(
    conv: nn.Conv2d, activation: Tensor, backprop: Tensor, grouping: _Groups | None = None
) -> Tensor:
    """‖g_i‖² of each sample's weight gradient g = b·Uᵀ, as ⟨UᵀU, bᵀb⟩, without g; given
    ``grouping``, ‖G_p‖² of each group's G_p = Σ_{i∈p} b_i U_iᵀ.

    b (O × T) is the output gradient and U (P × T) the unfolded input, so UᵀU and bᵀb are
    T×T. When cheaper, UᵀU is not built from U but from the zero-padded input X
    (I × T_pad): (UᵀU)[t, t'] = Σ_o (XᵀX)[s·t + o, s·t' + o] over the K kernel offsets o,
    a sum of K strided slices of XᵀX (T_pad²·I multiply-adds instead of K·T²·I).

    A group of m samples is one sample of m·T positions: G_p = [b_1 … b_m][U_1 … U_m]ᵀ, so
    ‖G_p‖² = Σ_{i,j∈p} ⟨U_iᵀU_j, b_iᵀb_j⟩, the same inner product of two mT×mT Gram
    matrices (the cross-sample terms included); smaller groups are padded with zero samples.
    """
    stride, padding, dilation = _conv_args(conv)
    _, _, ho, wo = backprop.shape
    positions = ho * wo
    shifted = _shifted_gram_is_cheaper(conv, activation, backprop)
    if shifted:
        (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
        inputs = functional.pad(activation, (pw, pw, ph, ph))  # [B, I, H_pad, W_pad]
        hp, wp = inputs.shape[2], inputs.shape[3]
        inputs = inputs.flatten(2)
    else:
        inputs = functional.unfold(
            activation, conv.kernel_size, dilation=dilation, padding=padding, stride=stride
        )  # [B, P, T]
    units = _by_unit(inputs, grouping)  # [U, m, I or P, L]
    grads = _by_unit(backprop.flatten(2), grouping)  # [U, m, O, T]
    members, length = units.shape[1], units.shape[3]
    chunk = max(1, _BLOCK // (members * length) ** 2)
    out = []
    for start in range(0, units.shape[0], chunk):
        # [c, m, channels, L] → [c, channels, m·L]: a group's samples side by side
        u = units[start : start + chunk].transpose(1, 2).flatten(2)
        g = grads[start : start + chunk].transpose(1, 2).flatten(2)
        c = len(u)
        gram_b = torch.bmm(g.transpose(1, 2), g)  # [c, mT, mT]
        gram_u = torch.bmm(u.transpose(1, 2), u)
        if shifted:  # sum the K shifted, strided [Ho, Wo, Ho, Wo] slices of each XᵢᵀXⱼ
            gram_x = gram_u.view(c, members, hp, wp, members, hp, wp)
            gram_u = u.new_zeros((c, members, ho, wo, members, ho, wo))
            for ky in range(conv.kernel_size[0]):
                rows = slice(ky * dh, ky * dh + sh * (ho - 1) + 1, sh)
                for kx in range(conv.kernel_size[1]):
                    cols = slice(kx * dw, kx * dw + sw * (wo - 1) + 1, sw)
                    gram_u += gram_x[:, :, rows, cols, :, rows, cols]
            gram_u = gram_u.view(c, members * positions, members * positions)
        out.append((gram_u * gram_b).sum(dim=(1, 2)))
    return torch.cat(out)


def _saved_group_norm_stats(
    output: Tensor, batch: int, groups: int
) -> tuple[Tensor, Tensor] | None:
    """GroupNorm's per-sample, per-group mean and 1/std, each [B, G], as its autograd node
    saved them for the backward pass (read before that pass frees them); ``None`` if absent."""
    node = output.grad_fn
    if node is None or type(node).__name__ != "NativeGroupNormBackward0":
        return None
    mean = getattr(node, "_saved_result1", None)
    rstd = getattr(node, "_saved_result2", None)
    if isinstance(mean, Tensor) and isinstance(rstd, Tensor) and mean.shape == (batch, groups):
        return mean.detach(), rstd.detach()
    return None


def _ws_ghost_sq_norms(
    conv: nn.Conv2d, a: Tensor, b: Tensor, output: Tensor, grouping: _Groups | None = None
) -> Tensor:
    """‖∂ℓ_i/∂w‖² for a weight-standardised convolution without per-sample gradients (or
    each group's ‖Σ_{i∈p} ∂ℓ_i/∂w‖² given ``grouping``).

    Per filter o with fan-in n, r = (σ² + eps)^(-1/2), v = σ²r² (= ‖ŵ_o‖²/n) and g = ∂ℓ_i/∂ŵ_o,
    the raw gradient is r·(g − ḡ·1 − c·ŵ_o) with ḡ = mean(g), c = ⟨g, ŵ_o⟩/n, whose squared
    norm is r²·(‖g‖² − n·ḡ² − n·(2 − v)·c²) (ŵ_o ⊥ 1). Σ_o r²‖g_o‖² is the ghost norm with b
    scaled by r per channel; n·ḡ = Σ_t b_o,t·s_t with s the input summed over each window (a
    convolution with one all-ones filter), and n·c = Σ_t b_o,t·y_o,t with y the layer's
    output without bias, conv(a, ŵ). All three terms are linear in g, so a group's are its
    samples' sums (the ghost norm's through its cross-sample Gram terms).
    """
    weight = conv.weight.detach()
    var, _ = torch.var_mean(weight, dim=(1, 2, 3), unbiased=False)
    r2 = (var + WS_EPS).reciprocal()
    fan_in = weight[0].numel()
    total = _ghost_sq_norms(conv, a, b * r2.sqrt().view(1, -1, 1, 1), grouping)
    stride, padding, dilation = _conv_args(conv)
    ones = weight.new_ones((1, *weight.shape[1:]))
    window_sums = functional.conv2d(a, ones, None, stride, padding, dilation)
    g_sum = (b * window_sums).sum(dim=(2, 3))
    y = output if conv.bias is None else output - conv.bias.detach().view(1, -1, 1, 1)
    gw = (b * y).sum(dim=(2, 3))
    if grouping is not None:
        g_sum, gw = grouping.sum(g_sum), grouping.sum(gw)
    correction = (g_sum.square() + (2 - var * r2) * gw.square()) * r2 / fan_in
    return (total - correction.sum(dim=1)).clamp(min=0)


class _Recorder:
    """Forward hook: records each supported layer's input and output in training mode."""

    def __init__(self) -> None:
        self.captures: list[_Capture] = []

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if not (module.training and torch.is_grad_enabled()):
            return
        activation = inputs[0].detach()
        stats = None
        if isinstance(module, nn.GroupNorm):
            stats = _saved_group_norm_stats(output, activation.shape[0], module.num_groups)
        self.captures.append(_Capture(module, activation, output, stats))


class FastDPSGD:
    """Clips, sums and noises per-sample gradients of ``model`` for ``optimizer``.

    A drop-in for Opacus' ``GradSampleModule`` + ``DPOptimizer`` (loss reduction "mean")
    on the layers in :data:`SUPPORTED_LAYERS`. Per step: :meth:`zero_grad`, a forward pass
    of ``model`` in training mode, :meth:`backward` on the per-sample losses (once per
    physical batch; several calls accumulate, like Opacus' virtual steps), then
    :meth:`step`, which adds N(0, σ²C²), divides by ``expected_batch_size``, steps the
    optimizer and, when given, the accountant with (σ, ``sample_rate``).

    ``conv_strategy`` picks how convolutions get their per-sample norms ("auto": by cost,
    per layer; "ghost" or "per_sample" everywhere, for tests). ``generator`` seeds the
    noise reproducibly, for tests only: by default it is seeded from the OS CSPRNG.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        noise_multiplier: float,
        max_grad_norm: float,
        expected_batch_size: int,
        accountant: IAccountant | None = None,
        sample_rate: float | None = None,
        conv_strategy: ConvStrategy = "auto",
        generator: torch.Generator | None = None,
    ) -> None:
        if max_grad_norm <= 0 or noise_multiplier < 0 or expected_batch_size < 1:
            raise ValueError(
                "need max_grad_norm > 0, noise_multiplier >= 0 and expected_batch_size >= 1"
            )
        if accountant is not None and sample_rate is None:
            raise ValueError("an accountant needs the sample_rate of the Poisson sampling")
        self.model = model
        self.optimizer = optimizer
        self.noise_multiplier = noise_multiplier
        self.max_grad_norm = max_grad_norm
        self.expected_batch_size = expected_batch_size
        self.accountant = accountant
        self.sample_rate = sample_rate
        self.conv_strategy: ConvStrategy = conv_strategy
        self.generator = generator
        self.per_sample_norms: Tensor | None = None  # last batch; not private, for debugging

        self._layers: list[nn.Module] = []
        problems: list[str] = []
        for name, module in model.named_modules():
            if not _trainable(module):
                continue
            if not isinstance(module, SUPPORTED_LAYERS):
                problems.append(f"{name or 'model'}: {type(module).__name__} is not supported")
            elif isinstance(module, nn.Conv2d) and (
                isinstance(module.padding, str) or module.padding_mode != "zeros"
            ):
                problems.append(f"{name}: only numeric zero padding is supported")
            else:
                self._layers.append(module)
        if problems:
            raise ValueError("FastDPSGD cannot train this model: " + "; ".join(problems))
        self.params = [p for layer in self._layers for p in _trainable(layer)]
        self._sums: dict[nn.Parameter, Tensor] = {}
        # The hooks hold only the recorder, so the model stays copyable (copy.deepcopy).
        self._recorder = _Recorder()
        self._hooks = [layer.register_forward_hook(self._recorder) for layer in self._layers]
        self._noise = _GaussianNoise(self.params, generator)

    def remove(self) -> None:
        """Detach from the model (its forward is ordinary again)."""
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        self._recorder.captures.clear()
        self._noise.close()

    # -- the step --------------------------------------------------------------------------

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self._sums.clear()
        self._recorder.captures.clear()

    def backward(self, per_sample_losses: Tensor, groups: Tensor | None = None) -> None:
        """Add Σ_i clip(g_i) for this batch to the step's sum — or, given ``groups``,
        Σ_p clip(Σ_{i∈p} g_i).

        ``per_sample_losses`` holds one unreduced loss per sample (shape [B]) computed from
        the model's latest forward pass, made in training mode with gradients enabled.
        ``groups`` (integer labels, shape [B]) puts samples with the same label in one
        clipping unit (a patient's images; an example's augmentations, whose losses the
        caller weights 1/K so that the group's gradient is their mean). Every sample of a
        group must be in this call: a group split over two calls would be clipped twice,
        contributing up to 2C.
        """
        captures, self._recorder.captures = self._recorder.captures, []
        if per_sample_losses.dim() != 1:
            shape = tuple(per_sample_losses.shape)
            raise ValueError(f"backward needs one loss per sample, shape [B]; got {shape}")
        if per_sample_losses.numel() == 0:  # an empty Poisson batch adds nothing
            return
        seen = {id(c.module) for c in captures}
        if len(seen) != len(captures):
            raise ValueError("a layer ran twice in one forward pass; FastDPSGD needs one call")
        if len(seen) != len(self._layers):
            raise ValueError("run the model forward in training mode, with grad, before backward")
        for capture in captures:
            if capture.activation.shape[0] != per_sample_losses.shape[0]:
                raise ValueError("a layer's batch size differs from the number of losses")
        grouping = _Groups.of(groups, per_sample_losses.shape[0], per_sample_losses.device)
        units = per_sample_losses.shape[0] if grouping is None else grouping.count

        # Gradients with respect to the layers' outputs only: autograd skips weight gradients.
        backprops = torch.autograd.grad(per_sample_losses.sum(), [c.output for c in captures])
        with torch.no_grad():
            sq_norms = per_sample_losses.new_zeros(units)
            finishers: list[Callable[[Tensor], None]] = []
            for capture, backprop in zip(captures, backprops, strict=True):
                sq, finish = self._layer(capture, backprop, grouping)
                sq_norms += sq
                finishers.append(finish)
            norms = sq_norms.sqrt()
            self.per_sample_norms = norms
            factors = _clip_factors(norms, self.max_grad_norm)
            for finish in finishers:
                finish(factors)

    def _accumulate(self, param: nn.Parameter, value: Tensor) -> None:
        if param in self._sums:
            self._sums[param] += value
        else:
            self._sums[param] = value

    def _layer(
        self, capture: _Capture, b: Tensor, grouping: _Groups | None
    ) -> tuple[Tensor, Callable[[Tensor], None]]:
        """Per-unit squared norms of the layer's gradient, and how to add its clipped sum.

        A unit is a sample, or a group of samples given ``grouping``. Each parameter is
        handled either through its per-unit gradients (``per_sample``: per-sample gradients
        summed over each group) or through its per-unit squared norm and a function of the
        units' clipping factors c that returns Σ_u c_u G_u directly (``direct``).
        """
        module, a = capture.module, capture.activation
        n = b.shape[0]

        def per_sample_factors(c: Tensor) -> Tensor:
            return c if grouping is None else c[grouping.index]

        per_sample: dict[nn.Parameter, Tensor] = {}
        per_unit: dict[nn.Parameter, Tensor] = {}  # already summed over each group
        direct: dict[nn.Parameter, Callable[[Tensor], Tensor]] = {}
        sq = b.new_zeros(n if grouping is None else grouping.count)
        weight = module.weight
        assert isinstance(weight, nn.Parameter)
        train_w = weight.requires_grad
        raw_bias = module.bias
        bias = raw_bias if isinstance(raw_bias, nn.Parameter) and raw_bias.requires_grad else None

        if isinstance(module, nn.GroupNorm):
            # g_γ = Σ_s x̂·b = rstd·(Σ_s x·b − mean·Σ_s b) per sample and channel.
            b3 = b.reshape(n, module.num_channels, -1)
            b_sum = b3.sum(dim=2)
            if train_w:
                if capture.stats is None:
                    var, mean = torch.var_mean(
                        a.reshape(n, module.num_groups, -1), dim=2, unbiased=False
                    )
                    rstd = (var + module.eps).rsqrt()
                else:
                    mean, rstd = capture.stats
                per_channel = module.num_channels // module.num_groups
                xb = _dot_last(a.reshape_as(b3), b3)
                per_sample[weight] = (
                    xb - mean.repeat_interleave(per_channel, dim=1) * b_sum
                ) * rstd.repeat_interleave(per_channel, dim=1)
            if bias is not None:
                per_sample[bias] = b_sum
        elif isinstance(module, nn.Linear) and a.dim() > 2:
            a3, b3 = a.reshape(n, -1, a.shape[-1]), b.reshape(n, -1, b.shape[-1])
            if train_w:
                per_sample[weight] = torch.bmm(b3.transpose(1, 2), a3)
            if bias is not None:
                per_sample[bias] = b3.sum(dim=1)
        elif isinstance(module, nn.Linear):
            if train_w:
                if grouping is None:
                    sq = sq + _sq_norms(a) * _sq_norms(b)
                else:  # ‖Σ_{i∈p} b_i a_iᵀ‖² = Σ_{i,j∈p} (a_i·a_j)(b_i·b_j)
                    sq = sq + grouping.pair_sum((a @ a.t()) * (b @ b.t()))
                direct[weight] = lambda c: (b * per_sample_factors(c).unsqueeze(1)).t() @ a
            if bias is not None:
                per_sample[bias] = b
        elif isinstance(module, WSConv2d):
            # ŵ = standardise(w) is what the convolution used, so b ⋆ a_i is ∂ℓ_i/∂ŵ; the
            # raw parameter's per-sample gradient is its image under the standardisation's
            # Jacobian, which changes norms: clip those, never ‖∂ℓ_i/∂ŵ‖.
            if train_w and _use_ghost(module, a, b, grouping, self.conv_strategy):
                sq = sq + _ws_ghost_sq_norms(module, a, b, capture.output.detach(), grouping)
                w = weight.detach()
                scale = a.numel() < b.numel()

                def ws_clipped_sum(c: Tensor) -> Tensor:
                    f = per_sample_factors(c).view(-1, 1, 1, 1)
                    raw = _conv_weight_grad(module, a * f if scale else a, b if scale else b * f)
                    return standardise_backward(w, raw.unsqueeze(0))[0]

                direct[weight] = ws_clipped_sum
            elif train_w:
                # the Jacobian is linear: mapping each unit's gradient is mapping the sum
                per_unit[weight] = standardise_backward(
                    weight.detach(), _per_unit_conv_grads(module, a, b, grouping)
                )
            if bias is not None:
                per_sample[bias] = b.sum(dim=(2, 3))
        elif isinstance(module, nn.Conv2d):
            if train_w and _use_ghost(module, a, b, grouping, self.conv_strategy):
                sq = sq + _ghost_sq_norms(module, a, b, grouping)
                # Σ_i c_i (b_i ⋆ a_i): scale whichever of a and b is smaller.
                if a.numel() < b.numel():
                    direct[weight] = lambda c: _conv_weight_grad(
                        module, a * per_sample_factors(c).view(-1, 1, 1, 1), b
                    )
                else:
                    direct[weight] = lambda c: _conv_weight_grad(
                        module, a, b * per_sample_factors(c).view(-1, 1, 1, 1)
                    )
            elif train_w:
                per_unit[weight] = _per_unit_conv_grads(module, a, b, grouping)
            if bias is not None:
                per_sample[bias] = b.sum(dim=(2, 3))
        else:  # pragma: no cover - refused in __init__
            raise TypeError(type(module).__name__)

        if grouping is not None:
            per_sample = {param: grouping.sum(g) for param, g in per_sample.items()}
        per_unit.update(per_sample)
        for g in per_unit.values():
            sq = sq + _sq_norms(g)

        def finish(c: Tensor) -> None:
            for param, g in per_unit.items():
                self._accumulate(param, torch.einsum("n,n...->...", c.to(g.dtype), g))
            for param, clipped_sum in direct.items():
                self._accumulate(param, clipped_sum(c.to(b.dtype)))

        return sq, finish

    def step(self) -> None:
        """Noise and scale the accumulated sum into ``.grad``, then step the optimizer."""
        std = self.noise_multiplier * self.max_grad_norm
        noises = self._noise.sample(std) if std > 0 else [None] * len(self.params)
        for param, noise in zip(self.params, noises, strict=True):
            total = self._sums.get(param)
            if total is None:  # only empty batches this step
                total = torch.zeros_like(param)
            if noise is not None:
                total = total.add_(noise.view_as(total))  # our own tensor: safe in place
            param.grad = total.div_(self.expected_batch_size).view_as(param)
        self.optimizer.step()
        self._sums.clear()
        if self.accountant is not None:
            assert self.sample_rate is not None
            self.accountant.step(
                noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate
            )


class _GaussianNoise:
    """Standard-normal noise for a list of parameters, drawn by several generators at once.

    PyTorch's CPU normal sampler runs on one thread, and for a model of 10M parameters it
    takes ~10% of a step; here the noise is cut into ``_NOISE_STREAMS`` fixed chunks, each
    with its own generator (PyTorch's Mersenne Twister, as Opacus without ``secure_mode``),
    drawn in parallel threads. The streams are seeded once: from the OS CSPRNG by default,
    so that the noise cannot be regenerated from any published seed; from ``generator``
    when one is given (tests), which makes the noise reproducible whatever the thread count.
    """

    def __init__(self, params: list[nn.Parameter], generator: torch.Generator | None) -> None:
        self.params = params
        self.generator = generator
        self.parallel = bool(params) and all(p.device.type == "cpu" for p in params)
        self._streams: list[torch.Generator] = []
        self._buffer: Tensor | None = None
        self._pool: ThreadPoolExecutor | None = None

    def sample(self, std: float) -> list[Tensor]:
        if not self.params:
            return []
        if not self.parallel:
            if self.generator is None:  # seeded from the OS, as on CPU
                self.generator = os_seeded_generator(self.params[0].device)
            return [
                torch.normal(0.0, std, p.shape, generator=self.generator, device=p.device)
                for p in self.params
            ]
        if self._buffer is None:
            if self.generator is None:
                self._streams = [os_seeded_generator() for _ in range(_NOISE_STREAMS)]
            else:
                drawn = torch.randint(0, 2**62, (_NOISE_STREAMS,), generator=self.generator)
                self._streams = [torch.Generator().manual_seed(int(seed)) for seed in drawn]
            self._buffer = torch.empty(sum(p.numel() for p in self.params))
            workers = min(_NOISE_STREAMS, torch.get_num_threads())
            self._pool = ThreadPoolExecutor(workers) if workers > 1 else None
        chunks = self._buffer.chunk(_NOISE_STREAMS)

        def fill(index: int) -> None:
            chunks[index].normal_(0.0, std, generator=self._streams[index])

        if self._pool is None:
            for index in range(len(chunks)):
                fill(index)
        else:
            list(self._pool.map(fill, range(len(chunks))))
        return list(self._buffer.split([p.numel() for p in self.params]))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def vmap_clipped_grad_sum(
    model: nn.Module,
    per_sample_loss: Callable[[Tensor, Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    *,
    max_grad_norm: float,
    chunk_size: int | None = None,
    groups: Tensor | None = None,
) -> dict[str, Tensor]:
    """Σ_i g_i·min(1, C/(‖g_i‖+1e-6)) by ``torch.func``: ``vmap(grad(ℓ))`` over the batch.

    General (any layer ``torch.func`` can batch) but materialises every per-sample gradient;
    ``chunk_size`` bounds that memory. ``per_sample_loss(logits, targets)`` returns one loss
    per sample, shape [B], as for :meth:`FastDPSGD.backward`; so does ``groups``, which
    sums each group's per-sample gradients before clipping. Returns the clipped sums by
    parameter name (no noise, no division by the batch size).
    """
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_one(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        logits = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return per_sample_loss(logits, y.unsqueeze(0)).sum()

    grads: dict[str, Tensor] = vmap(grad(loss_one), in_dims=(None, 0, 0), chunk_size=chunk_size)(
        params, inputs, targets
    )
    grouping = _Groups.of(groups, inputs.shape[0], inputs.device)
    if grouping is not None:
        grads = {k: grouping.sum(g) for k, g in grads.items()}
    norms = torch.stack([_sq_norms(g) for g in grads.values()], dim=1).sum(dim=1).sqrt()
    factors = _clip_factors(norms, max_grad_norm)
    return {k: torch.einsum("n,n...->...", factors, g) for k, g in grads.items()}
