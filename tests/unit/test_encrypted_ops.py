"""The arithmetic of :mod:`primia.inference.encrypted` on one-party CrypTen, in process.

``crypten.init()`` with no distributed environment runs a single party: every CrypTensor
is one share, but it goes through the same fixed-point encoding (16 fractional bits), the
same truncation after each multiplication, and the same comparison protocol as the real
three-party sessions. What one party lacks is the extra truncation error of splitting a
product between two shares (an ULP or so per multiplication); the integration tests, with
three real processes, cover that. Everything here is deterministic: seeded inputs and
weights, and one-party CrypTen adds no randomness to the values.

Tolerances, in units of the fixed-point resolution ULP = 2^-16 ≈ 1.5·10⁻⁵:

* Maxima (``maximum``, ``tree_max``, ``max_pool2d``, ReLU before max pooling): encoding
  truncates each input toward zero, by less than one ULP; max(a, b) = b + ReLU(a − b) is
  then exact on the encoded values (ReLU multiplies by a 0/1 comparison result of scale 1,
  which needs no truncation). So the result is within one ULP of torch's.
* ``inv_sqrt`` and ``group_norm``: elementwise bounds derived, in their tests, from where
  the arithmetic rounds, with margin over what was measured (stated there).
* Whole models: the plaintext model is itself sensitive to the fixed-point resolution, in
  a way no fixed tolerance captures; see :func:`test_encrypted_model_logits_match_plaintext`.

Results are read with :func:`_plain`, not ``get_plain_text``: CrypTen 0.4.1's decoder
floor-divides negative values by 2^16 − 1 instead of 2^16, so a value −k + r·ULP with
0 < r < k (k ≥ 2 an integer) comes back 1 too low (−94.9996 as −95.9996), which would
blame encrypted.py for CrypTen's reveal.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from primia.errors import ModelError
from primia.inference.compat import import_crypten
from primia.inference.encrypted import (
    EncryptedModel,
    group_norm,
    inv_sqrt,
    max_pool2d,
    maximum,
    tree_max,
)
from primia.models.checkpoint import ModelSpec

ULP = 2.0**-16
"""CrypTen's fixed-point resolution (16 fractional bits)."""

DISTRIBUTED_VARIABLES = ("DISTRIBUTED_BACKEND", "RENDEZVOUS", "WORLD_SIZE", "RANK")
"""What CrypTen reads to join a multi-party session, and writes (for one party) if absent."""


@pytest.fixture(scope="module")
def crypten() -> Iterator[ModuleType]:
    """CrypTen initialised as a single local party, uninitialised after this module.

    The distributed variables are removed first (set, they would make CrypTen wait for
    other parties) and removed again afterwards, since ``crypten.init`` writes its own;
    the originals, if any, come back when the patch is undone.
    """
    with pytest.MonkeyPatch.context() as patch:
        for name in DISTRIBUTED_VARIABLES:
            patch.delenv(name, raising=False)
        module = import_crypten()
        assert not module.is_initialized(), "CrypTen was initialised by someone else"
        module.init()
        try:
            assert module.communicator.get().get_world_size() == 1
            yield module
        finally:
            module.uninit()
            for name in DISTRIBUTED_VARIABLES:
                os.environ.pop(name, None)
    assert not torch.distributed.is_initialized()


def _randn(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


def _plain(encrypted: Any) -> torch.Tensor:
    """The value of a CrypTensor, decoded exactly (float64 holds any 53-bit ring value)."""
    return encrypted.reveal().double() / encrypted.encoder.scale


def _error(encrypted: Any, expected: torch.Tensor) -> float:
    plain = _plain(encrypted)
    assert plain.shape == expected.shape
    return (plain - expected.double()).abs().max().item()


# ---------------------------------------------------------------------------- maxima


def test_maximum_is_the_elementwise_maximum(crypten: ModuleType) -> None:
    a, b = _randn(64, seed=1, scale=10), _randn(64, seed=2, scale=10)
    result = maximum(crypten.cryptensor(a), crypten.cryptensor(b))
    assert _error(result, torch.maximum(a, b)) <= ULP


@pytest.mark.parametrize("length", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("dim", [0, 1, 2])
def test_tree_max_equals_torch_max_along_any_dimension(
    crypten: ModuleType, length: int, dim: int
) -> None:
    shape = [3, 4, 2]
    shape[dim] = length
    x = _randn(*shape, seed=length, scale=10)
    result = tree_max(crypten.cryptensor(x), dim=dim)
    assert _error(result, x.amax(dim=dim)) <= ULP


@pytest.mark.parametrize(("kernel", "stride", "padding"), [(3, 2, 1), (2, 2, 0)])
@pytest.mark.parametrize("size", [7, 8, 9, 16])
@pytest.mark.parametrize("offset", [0.0, -100.0])
def test_max_pool2d_equals_torch_max_pool2d(
    crypten: ModuleType, kernel: int, stride: int, padding: int, size: int, offset: float
) -> None:
    # offset −100: every input is negative, so zero padding (instead of padding below
    # any activation) would win the border windows and fail
    x = _randn(2, 3, size, size, seed=size, scale=5) + offset
    result = max_pool2d(
        crypten.cryptensor(x), (kernel, kernel), (stride, stride), (padding, padding)
    )
    assert _error(result, F.max_pool2d(x, kernel, stride, padding)) <= ULP


def test_max_pool2d_with_rectangular_windows_equals_torch(crypten: ModuleType) -> None:
    # height and width take their own kernel, stride and padding (width is pooled first)
    x = _randn(1, 2, 9, 8, seed=3, scale=5) - 100
    result = max_pool2d(crypten.cryptensor(x), (2, 3), (1, 2), (1, 1))
    assert _error(result, F.max_pool2d(x, (2, 3), (1, 2), (1, 1))) <= ULP


# --------------------------------------------------------------------- inv_sqrt


def _inv_sqrt_bound(v: torch.Tensor, scale: float) -> torch.Tensor:
    """The relative error inv_sqrt may make on v, from where it rounds:

    * 4·ULP: the Newton iterate y ≈ 1/√u lies in (1/2, 1], so each truncation of it (or
      of a product feeding it) errs by at most 2·ULP relative; the last iteration has two.
    * ULP/v: encoding v truncates it by up to one ULP (relative ULP/v, halved by the
      root), and u = v·g·g truncates v·g by up to one ULP more.
    * ULP·√v/scale: the result scale/√v is itself rounded to one ULP.

    Doubled for margin: measured, the error is at most 0.89 (scale 1) and 0.59 (scale 16)
    of the undoubled sum on the points below (0.91 and 0.65 on a 601-point grid).
    """
    return 2 * ULP * (4 + 1 / v + v.sqrt() / scale)


def _inv_sqrt_inputs() -> torch.Tensor:
    """1e-2 .. 1e4 (where v itself has at least three significant digits in fixed
    point), plus the powers of 4 that choose inv_sqrt's initial guess and their
    neighbours on either side."""
    powers = 4.0 ** torch.arange(-3, 7, dtype=torch.float32)
    return torch.cat([torch.logspace(-2, 4, 121), powers, powers * (1 - 2**-10), powers * 1.001])


@pytest.mark.parametrize("scale", [1.0, 16.0])
def test_inv_sqrt_gives_scale_over_the_root_within_the_rounding_bound(
    crypten: ModuleType, scale: float
) -> None:
    # scale 16 is what group_norm uses: it multiplies g before g meets y, so the result
    # 16/√v is rounded to one ULP of itself, not 16 ULPs of 1/√v.
    # Measured relative errors: 2.9e-4 at v = 1e-2 (input rounding), 4.3e-5 around v = 1;
    # at v = 1e4, 5.5e-4 (scale 1, where 1/√v = 0.01 is only 655 ULPs; 1.4e-3 at
    # v ≈ 9.8e3) and 2.3e-5 (scale 16)
    v = _inv_sqrt_inputs()
    result = _plain(inv_sqrt(crypten.cryptensor(v), scale=scale))
    exact = scale / v.double().sqrt()
    relative = (result / exact - 1).abs()
    bound = _inv_sqrt_bound(v.double(), scale)
    worst = int((relative / bound).argmax())
    assert (relative <= bound).all(), (
        f"relative error {relative[worst]:.2e} at v = {v[worst]:.4g} > {bound[worst]:.2e}"
    )


# ------------------------------------------------------------------- group_norm


@pytest.mark.parametrize("activation_scale", [0.1, 1.0, 30.0])
def test_group_norm_matches_torch_group_norm(crypten: ModuleType, activation_scale: float) -> None:
    """y = (x − μ)·f + β with the factor f = γ/σ (σ² = var + ε). Where it rounds:

    * x − μ: x's encoding and the mean's division each truncate by under one ULP; the
      two ULPs are multiplied by |f| = |γ|/σ.
    * f: inv_sqrt's result (here about 1/σ, at scale 16 to keep its precision) carries
      about one ULP, multiplied by |γ|, and the product with γ truncates one more: an
      error of (1 + |γ|)·ULP, multiplied by |x − μ|.
    * the final product and β's encoding: two ULPs.

    So |error| ≲ 2·ULP·(1 + |γ|/σ + (1 + |γ|)·|x − μ|) elementwise; the test allows
    twice that. Measured: at most 2.3·ULP·(1 + |γ|/σ + (1 + |γ|)·|x − μ|) over 20 seeds;
    maximum absolute errors 2.9e-4 (scale 0.1, where |γ|/σ ≈ 10 dominates), 1.2e-4
    (scale 1) and 3.3e-3 (scale 30, where |x − μ| reaches ~100).
    """
    groups, channels = 4, 8
    x = _randn(2, channels, 6, 6, seed=5, scale=activation_scale)
    reference = nn.GroupNorm(groups, channels)
    with torch.no_grad():
        reference.weight.copy_(_randn(channels, seed=6))
        reference.bias.copy_(_randn(channels, seed=7))
        expected = reference(x)
    result = group_norm(
        crypten.cryptensor(x),
        groups,
        crypten.cryptensor(reference.weight.detach()),
        crypten.cryptensor(reference.bias.detach()),
        eps=reference.eps,
    )

    grouped = x.view(2, groups, -1)
    centred = (grouped - grouped.mean(dim=2, keepdim=True)).view_as(x)
    sigma = (grouped.var(dim=2, unbiased=False, keepdim=True) + reference.eps).sqrt()
    sigma = sigma.expand_as(grouped).reshape_as(x)
    gamma = reference.weight.detach().abs().view(1, -1, 1, 1)
    bound = 4 * ULP * (1 + gamma / sigma + (1 + gamma) * centred.abs())
    error = (_plain(result) - expected.double()).abs()
    assert (error <= bound).all(), (
        f"error {error.max():.2e}, largest ratio {error.div(bound).max()}"
    )


# ---------------------------------------------------------------- EncryptedModel


def _run_encrypted(crypten: ModuleType, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return _plain(EncryptedModel(model, src=0, crypten=crypten)(crypten.cryptensor(x)))


def _plaintext_spread(model: nn.Module, images: torch.Tensor, draws: int = 8) -> float:
    """How far the plaintext logits move when every GroupNorm input is perturbed by
    uniform noise of ±1 ULP: the model's own sensitivity to the fixed-point resolution."""
    generator = torch.Generator().manual_seed(0)

    def perturb(_: nn.Module, inputs: tuple[torch.Tensor]) -> tuple[torch.Tensor]:
        (x,) = inputs
        return (x + (torch.rand(x.shape, generator=generator) * 2 - 1) * ULP,)

    norms = [module for module in model.modules() if isinstance(module, nn.GroupNorm)]
    with torch.no_grad():
        plain = model(images)
        handles = [norm.register_forward_pre_hook(perturb) for norm in norms]
        try:
            perturbed = torch.stack([model(images) for _ in range(draws)])
        finally:
            for handle in handles:
                handle.remove()
    return (perturbed - plain).abs().max().item()


@pytest.mark.parametrize(
    ("architecture", "image_size", "ws"),
    [
        ("cnn", 16, False),
        ("cnn", 16, True),
        ("lenet", 32, False),
        ("resnet9", 16, False),
        ("resnet9", 16, True),
        ("resnet9", 32, False),
        ("resnet18", 16, False),
        ("resnet18", 32, False),
        ("densenet121", 32, False),
    ],
)
def test_encrypted_model_logits_match_plaintext(
    crypten: ModuleType, architecture: str, image_size: int, ws: bool
) -> None:
    """Tolerance: 2e-3 + 10 × the plaintext model's spread under ±1-ULP noise at its
    GroupNorm inputs.

    2e-3: each layer adds a few ULPs (~5e-5) of error, over up to ~20 convolutions and
    GroupNorms in ResNet-18: ~1e-3, doubled. The spread term: at ≤ 32 px ResNet-18's
    last stages have 1×1 maps, where GroupNorm normalises groups of two values; when a
    pair is nearly equal (σ near √ε ≈ 3e-3) the plaintext model itself amplifies an ULP
    at its input ~100-fold, which no fixed tolerance anticipates. The encrypted forward
    rounds several times per layer, always toward zero, so its error is a few times that
    spread: at most 6.3 times, measured over 10 seeds each of cnn (16 px), resnet9
    (32 px) and resnet18 (16 and 32 px), with errors up to 0.15 absolute (resnet18 at
    32 px, seed 4, spread 0.05).

    Measured here, at seed 0: error 6.7e-5 (spread 1.7e-5) for cnn; 5.0e-4 (1.7e-4) and
    8.5e-4 (2.3e-4) for resnet9 at 16 and 32 px; 4.6e-2 (1.1e-2) and 9.2e-4 (8.6e-4) for
    resnet18 at 16 and 32 px. With ``ws`` the weight-standardised convolutions are shared
    folded into plain ones, so the same bound holds.
    """
    spec = ModelSpec(architecture, num_outputs=3, width=4, image_size=image_size, ws=ws)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = spec.build().eval()
        images = torch.rand(2, 1, image_size, image_size)
    with torch.no_grad():
        expected = model(images)
    tolerance = 2e-3 + 10 * _plaintext_spread(model, images)
    logits = _run_encrypted(crypten, model, images)
    assert logits.shape == (2, 3)
    assert (logits - expected).abs().max().item() <= tolerance


# ------------------------------------------------------- ReLU before max pooling

POOLS: dict[str, Callable[[], nn.Module]] = {
    "max3s2p1": lambda: nn.MaxPool2d(3, stride=2, padding=1),
    "max2": lambda: nn.MaxPool2d(2),
    "adaptive1": lambda: nn.AdaptiveMaxPool2d(1),
    "adaptive2": lambda: nn.AdaptiveMaxPool2d(2),
}


def _mixed_sign_input() -> torch.Tensor:
    x = _randn(2, 3, 9, 9, seed=8, scale=5)
    x[0] -= 100  # a sample whose every window is negative: ReLU must still give 0
    return x


@pytest.mark.parametrize("make_pool", POOLS.values(), ids=POOLS.keys())
def test_relu_then_max_pool_equals_applying_them_in_order(
    crypten: ModuleType, make_pool: Callable[[], nn.Module]
) -> None:
    x = _mixed_sign_input()
    pool = make_pool()
    reordered = _run_encrypted(crypten, nn.Sequential(nn.ReLU(), pool), x)
    in_order = _plain(
        EncryptedModel(nn.Sequential(pool), src=0, crypten=crypten)(crypten.cryptensor(x).relu())
    )
    # both are exact on the encoded values: bit for bit the same
    assert torch.equal(reordered, in_order)
    with torch.no_grad():
        expected = pool(F.relu(x))
    assert (reordered - expected).abs().max().item() <= ULP
    assert torch.equal(reordered[0], torch.zeros_like(reordered[0]))


def test_relu_ending_a_nested_sequential_is_reordered_with_the_next_max_pool(
    crypten: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the layout of primia's CNN and ResNet-9: conv_norm_relu(...), then MaxPool2d(2)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()))
        model.append(nn.MaxPool2d(2))
    x = _mixed_sign_input()
    relu_sizes: list[tuple[int, ...]] = []
    cls = type(crypten.cryptensor(torch.zeros(1)))
    original = cls.relu

    def spy(self: Any) -> Any:
        relu_sizes.append(tuple(self.size()))
        return original(self)

    monkeypatch.setattr(cls, "relu", spy)
    result = _run_encrypted(crypten, model, x)
    monkeypatch.undo()
    # the maxima call relu themselves (max(a, b) = b + ReLU(a − b)); the model's ReLU is
    # the last call, on the pooled (2, 4, 4, 4) tensor, none on the (2, 4, 9, 9) conv output
    assert relu_sizes[-1] == (2, 4, 4, 4)
    assert (2, 4, 9, 9) not in relu_sizes

    conv = _plain(EncryptedModel(model[0][0], src=0, crypten=crypten)(crypten.cryptensor(x)))
    with torch.no_grad():
        assert torch.equal(result, F.max_pool2d(F.relu(conv), 2))
        expected = model(x)
    # the convolution's inputs and weights are encoded each to under one ULP and its sum
    # truncated once, so an output errs by at most ULP·(‖w‖₁ + ‖x's window‖₁ + 2)
    weight = model[0][0].weight.detach()
    bound = ULP * (weight.abs().sum() + weight[0].numel() * x.abs().max() + 2)
    assert (result - expected).abs().max().item() <= bound


# ------------------------------------------------------------- unsupported layers


@pytest.mark.parametrize("layer", [nn.Tanh(), nn.BatchNorm2d(3)], ids=["tanh", "batchnorm"])
def test_unsupported_layer_raises_model_error_naming_it(
    crypten: ModuleType, layer: nn.Module
) -> None:
    model = nn.Sequential(nn.Conv2d(3, 3, 1), layer)
    name = type(layer).__name__
    with pytest.raises(ModelError, match=rf"^1: {name} cannot run encrypted"):
        _run_encrypted(crypten, model, _randn(1, 3, 4, 4))


def test_unsupported_top_level_module_raises_model_error_naming_its_type(
    crypten: ModuleType,
) -> None:
    with pytest.raises(ModelError, match=r"^Tanh: Tanh cannot run encrypted"):
        _run_encrypted(crypten, nn.Tanh(), _randn(1, 3, 4, 4))


@pytest.mark.parametrize(
    "pool",
    [nn.MaxPool2d(2, dilation=2), nn.MaxPool2d(2, ceil_mode=True)],
    ids=["dilation", "ceil_mode"],
)
@pytest.mark.parametrize("after_relu", [False, True], ids=["alone", "after_relu"])
def test_max_pool_with_dilation_or_ceil_mode_raises_model_error(
    crypten: ModuleType, pool: nn.Module, after_relu: bool
) -> None:
    # after a ReLU the pooling is applied first, by the reordering: it must refuse too
    model = nn.Sequential(nn.ReLU(), pool) if after_relu else nn.Sequential(pool)
    position = 1 if after_relu else 0
    with pytest.raises(ModelError, match=rf"^{position}: MaxPool2d with dilation or ceil"):
        _run_encrypted(crypten, model, _randn(1, 3, 8, 8))


@pytest.mark.parametrize(
    ("layer", "option"),
    [
        (nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), "padding_mode='reflect'"),
        (nn.AvgPool2d(3, 2, 1, count_include_pad=False), "count_include_pad=False"),
        (nn.AvgPool2d(2, divisor_override=1), "divisor_override"),
        (nn.AvgPool2d(2, ceil_mode=True), "ceil_mode"),
        (nn.Flatten(1, 2), "end_dim=2"),
    ],
)
def test_layer_options_it_would_get_wrong_are_refused_before_sharing(
    crypten: ModuleType, layer: nn.Module, option: str
) -> None:
    with pytest.raises(ModelError, match=rf"^0: {type(layer).__name__} with .*{option}"):
        EncryptedModel(nn.Sequential(layer), src=0, crypten=crypten)
