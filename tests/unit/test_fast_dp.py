"""FastDPSGD and the torch.func reference give exactly Opacus' DP-SGD step (noise off)."""

from __future__ import annotations

import copy

import pytest
import torch
from opacus.accountants import RDPAccountant
from opacus.grad_sample import GradSampleModule
from opacus.optimizers import DPOptimizer
from torch import nn
from torch.nn import functional

from primia.models import build_model
from primia.train import fast_dp
from primia.train.fast_dp import FastDPSGD, vmap_clipped_grad_sum

BATCH = 6

# Opacus' hooks warn that the input needs no gradient; that is expected here.
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")


def _per_sample_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Multi-label BCE averaged over labels: one loss per sample, shape [B]."""
    return functional.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1)


def _biased_net() -> nn.Module:
    """Biases, a stride, a 1×1 convolution and a small map: the other code paths."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2, padding=1),
        nn.GroupNorm(2, 4),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 6, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 4),
    )


MODELS = {
    "cnn": lambda: build_model("cnn", num_classes=4, width=8),
    "biased": _biased_net,
}


def _batch(seed: int = 0, n: int = BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 1, 12, 12, generator=gen)
    images[: n // 2] *= 4.0  # some samples get large gradients (clipped), some small
    targets = (torch.rand(n, 4, generator=gen) > 0.5).float()
    return images, targets


def _flat_grad(model: nn.Module) -> torch.Tensor:
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    return torch.cat([g.flatten() for g in grads if g is not None])


def _median_norm(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> float:
    """A clipping norm that clips about half the samples (so both branches are tested)."""
    norms = []
    for i in range(images.shape[0]):
        model.zero_grad()
        _per_sample_bce(model(images[i : i + 1]), targets[i : i + 1]).sum().backward()
        norms.append(_flat_grad(model).norm())
    model.zero_grad()
    return float(torch.stack(norms).median())


def _noiseless(
    model: nn.Module, clip: float, strategy: str = "auto", *, expected_batch_size: int = 1
) -> FastDPSGD:
    """FastDPSGD without noise on an optimiser with lr 0: ``.grad`` keeps the clipped sum
    (divided by ``expected_batch_size``)."""
    return FastDPSGD(
        model,
        torch.optim.SGD(model.parameters(), lr=0.0),
        noise_multiplier=0.0,
        max_grad_norm=clip,
        expected_batch_size=expected_batch_size,
        conv_strategy=strategy,  # type: ignore[arg-type]
    )


def _noiseless_step(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, clip: float, strategy: str
) -> FastDPSGD:
    """One FastDPSGD step without noise (lr 0: the clipped mean gradient stays in .grad)."""
    dp = _noiseless(model, clip, strategy, expected_batch_size=BATCH)
    dp.zero_grad()
    dp.backward(_per_sample_bce(model(images), targets))
    dp.step()
    return dp


def _opacus_step(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, max_grad_norm: float
) -> dict[str, torch.Tensor]:
    """Opacus' hooks mode with noise off: the clipped mean gradient, by parameter name."""
    gsm = GradSampleModule(model, loss_reduction="mean")
    optimizer = DPOptimizer(
        torch.optim.SGD(gsm.parameters(), lr=0.0),
        noise_multiplier=0.0,
        max_grad_norm=max_grad_norm,
        expected_batch_size=images.shape[0],
    )
    optimizer.zero_grad()
    _per_sample_bce(gsm(images), targets).mean().backward()
    optimizer.step()
    grads = {}
    for name, param in model.named_parameters():
        assert param.grad is not None
        grads[name] = param.grad.detach().clone()
    gsm._close()
    return grads


@pytest.mark.parametrize(
    ("strategy", "dtype"),
    [
        ("auto", torch.float32),
        ("ghost", torch.float32),
        ("per_sample", torch.float32),
        ("ghost", torch.float64),
        ("per_sample", torch.float64),
    ],
)
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_fast_dp_equals_opacus_hooks(model_name: str, strategy: str, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = MODELS[model_name]().to(dtype)
    images, targets = (t.to(dtype) for t in _batch())
    clip = _median_norm(model, images, targets)
    expected = _opacus_step(copy.deepcopy(model), images, targets, clip)

    dp = _noiseless_step(model, images, targets, clip, strategy)

    assert dp.per_sample_norms is not None
    clipped = (dp.per_sample_norms > clip).sum().item()
    assert 0 < clipped < BATCH  # both clipped and unclipped samples
    rtol, atol = (1e-4, 1e-6) if dtype == torch.float32 else (1e-10, 1e-13)
    for name, param in model.named_parameters():
        assert param.grad is not None
        torch.testing.assert_close(param.grad, expected[name], rtol=rtol, atol=atol)


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_vmap_reference_equals_opacus_hooks(model_name: str) -> None:
    torch.manual_seed(0)
    model = MODELS[model_name]()
    images, targets = _batch()
    clip = _median_norm(model, images, targets)
    expected = _opacus_step(copy.deepcopy(model), images, targets, clip)

    sums = vmap_clipped_grad_sum(
        model, _per_sample_bce, images, targets, max_grad_norm=clip, chunk_size=4
    )
    for name, total in sums.items():
        torch.testing.assert_close(total / BATCH, expected[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("strategy", ["ghost", "per_sample"])
def test_unusual_convolutions(strategy: str) -> None:
    """Dilation, rectangular kernels and strides, on a rectangular image."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 3, (3, 5), padding=(2, 1), dilation=(2, 1), bias=True),
        nn.ReLU(),
        nn.Conv2d(3, 5, (2, 3), stride=(1, 2), padding=(0, 1)),
        nn.GroupNorm(5, 5),
        nn.Flatten(),
        nn.LazyLinear(4),
    )
    images = torch.randn(BATCH, 1, 9, 14)
    targets = (torch.rand(BATCH, 4) > 0.5).float()
    model(images)  # materialise the lazy layer
    expected = vmap_clipped_grad_sum(model, _per_sample_bce, images, targets, max_grad_norm=0.1)

    dp = FastDPSGD(
        model,
        torch.optim.SGD(model.parameters(), lr=0.0),
        noise_multiplier=0.0,
        max_grad_norm=0.1,
        expected_batch_size=1,
        conv_strategy=strategy,  # type: ignore[arg-type]
    )
    dp.zero_grad()
    dp.backward(_per_sample_bce(model(images), targets))
    dp.step()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("strategy", ["ghost", "per_sample"])
@pytest.mark.parametrize("architecture", ["cnn", "resnet9"])
def test_weight_standardised_convolutions_clip_the_raw_parameters_gradients(
    architecture: str, strategy: str
) -> None:
    """Σ_i clip(∂ℓ_i/∂w) for the raw weights w of WSConv2d layers, against torch.func's
    per-sample gradients through the standardisation (which FastDPSGD must not clip by
    the norm of ∂ℓ_i/∂ŵ instead: the Jacobian changes the norms)."""
    torch.manual_seed(0)
    model = build_model(architecture, num_classes=4, width=4, ws=True)
    images, targets = _batch(n=BATCH)
    clip = 0.05  # below every per-sample norm here, so every sample is clipped
    expected = vmap_clipped_grad_sum(model, _per_sample_bce, images, targets, max_grad_norm=clip)
    dp = _noiseless(model, clip, strategy)
    dp.zero_grad()
    dp.backward(_per_sample_bce(model(images), targets))
    assert dp.per_sample_norms is not None and (dp.per_sample_norms > clip).all()
    dp.step()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-4, atol=1e-6)


def test_backward_accumulates_physical_batches() -> None:
    torch.manual_seed(0)
    model = MODELS["biased"]()
    images, targets = _batch(n=8)
    expected = _opacus_step(copy.deepcopy(model), images, targets, 0.05)

    dp = FastDPSGD(
        model,
        torch.optim.SGD(model.parameters(), lr=0.0),
        noise_multiplier=0.0,
        max_grad_norm=0.05,
        expected_batch_size=8,
    )
    dp.zero_grad()
    for part in (slice(0, 3), slice(3, 3), slice(3, 8)):  # including an empty batch
        dp.backward(_per_sample_bce(model(images[part]), targets[part]))
    dp.step()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-4, atol=1e-6)


def test_group_norm_without_saved_statistics(monkeypatch: pytest.MonkeyPatch) -> None:
    """GroupNorm's mean and 1/std are recomputed when its autograd node does not give them."""
    monkeypatch.setattr(fast_dp, "_saved_group_norm_stats", lambda *args: None)
    torch.manual_seed(0)
    model = MODELS["cnn"]()
    images, targets = _batch()
    expected = _opacus_step(copy.deepcopy(model), images, targets, 0.05)
    dp = FastDPSGD(
        model,
        torch.optim.SGD(model.parameters(), lr=0.0),
        noise_multiplier=0.0,
        max_grad_norm=0.05,
        expected_batch_size=BATCH,
    )
    dp.zero_grad()
    dp.backward(_per_sample_bce(model(images), targets))
    dp.step()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-4, atol=1e-6)


def test_noise_scale_and_accounting() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(144, 64), nn.ReLU(), nn.Linear(64, 4))
    images, targets = _batch()
    accountant = RDPAccountant()
    sigma, clip, expected_batch = 2.0, 0.5, 10
    dp = FastDPSGD(
        model,
        torch.optim.SGD(model.parameters(), lr=0.0),
        noise_multiplier=sigma,
        max_grad_norm=clip,
        expected_batch_size=expected_batch,
        accountant=accountant,
        sample_rate=0.01,
        generator=torch.Generator().manual_seed(1),
    )
    dp.zero_grad()
    dp.backward(_per_sample_bce(model(images[:0]), targets[:0]))  # empty: noise only
    dp.step()
    noise = _flat_grad(model)
    assert noise.numel() > 9000
    assert noise.std().item() == pytest.approx(sigma * clip / expected_batch, rel=0.05)
    assert abs(noise.mean().item()) < 0.01
    assert accountant.history == [(sigma, 0.01, 1)]

    # A seeded generator makes the noise reproducible, whatever the thread count.
    threads = torch.get_num_threads()
    try:
        draws = []
        for count in (1, 2):
            torch.set_num_threads(count)
            again = copy.deepcopy(model)
            dp = FastDPSGD(
                again,
                torch.optim.SGD(again.parameters(), lr=0.0),
                noise_multiplier=sigma,
                max_grad_norm=clip,
                expected_batch_size=expected_batch,
                generator=torch.Generator().manual_seed(1),
            )
            dp.step()
            draws.append(_flat_grad(again))
            dp.remove()
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(draws[0], draws[1], rtol=0, atol=0)
    torch.testing.assert_close(draws[0], noise, rtol=0, atol=0)


def test_refuses_what_it_cannot_clip() -> None:
    def attach(model: nn.Module) -> FastDPSGD:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        return FastDPSGD(
            model, optimizer, noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=4
        )

    with pytest.raises(ValueError, match="BatchNorm2d is not supported"):
        attach(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))

    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    dp = attach(model)
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="ran twice"):
        dp.backward(model(x).sum(dim=1))
    with pytest.raises(ValueError, match="one loss per sample"):
        dp.backward(model(x))


def test_fast_dp_equals_opacus_hooks_on_densenet121() -> None:
    """DenseNet's concatenations: each layer once per forward, at 32 px (its least size);
    in float64, as float32's rounding over 120 layers exceeds a tight tolerance."""
    torch.manual_seed(0)
    model = build_model("densenet121", num_classes=4, width=4).double()
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(BATCH, 1, 32, 32, generator=gen, dtype=torch.float64)
    images[: BATCH // 2] *= 4.0
    targets = (torch.rand(BATCH, 4, generator=gen) > 0.5).double()
    clip = _median_norm(model, images, targets)
    expected = _opacus_step(copy.deepcopy(model), images, targets, clip)
    _noiseless_step(model, images, targets, clip, "auto").remove()
    for name, param in model.named_parameters():
        assert param.grad is not None
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-9, atol=1e-12)


GROUPED_MODELS = MODELS | {"ws-cnn": lambda: build_model("cnn", num_classes=4, width=4, ws=True)}


@pytest.mark.parametrize("strategy", ["auto", "ghost", "per_sample"])
@pytest.mark.parametrize("model_name", sorted(GROUPED_MODELS))
def test_grouped_clipping_equals_the_reference(model_name: str, strategy: str) -> None:
    """Patient-level clipping: each group's summed gradient is clipped once, exactly as the
    torch.func reference that sums per-sample gradients by group before clipping (weight-
    standardised convolutions included)."""
    torch.manual_seed(0)
    model = GROUPED_MODELS[model_name]()
    images, targets = _batch(n=7)
    groups = torch.tensor([3, 3, 0, 5, 5, 5, 9])  # patients of 2, 1, 3 and 1 images
    clip = _median_norm(model, images, targets)
    expected = vmap_clipped_grad_sum(
        model, _per_sample_bce, images, targets, max_grad_norm=clip, groups=groups
    )
    dp = _noiseless(model, clip, strategy)
    dp.zero_grad()
    dp.backward(_per_sample_bce(model(images), targets), groups=groups)
    assert dp.per_sample_norms is not None and dp.per_sample_norms.shape == (4,)
    dp.step()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-4, atol=1e-6)


def test_grouping_changes_the_clipped_sum() -> None:
    """Grouped and per-sample clipping differ when groups exceed the norm: the test above
    could not pass by ignoring the groups."""
    torch.manual_seed(0)
    model = MODELS["biased"]()
    images, targets = _batch(n=6)
    clip = _median_norm(model, images, targets)
    alone = vmap_clipped_grad_sum(model, _per_sample_bce, images, targets, max_grad_norm=clip)
    grouped = vmap_clipped_grad_sum(
        model,
        _per_sample_bce,
        images,
        targets,
        max_grad_norm=clip,
        groups=torch.tensor([0, 0, 0, 1, 1, 1]),
    )
    total_alone = torch.cat([g.flatten() for g in alone.values()]).norm()
    total_grouped = torch.cat([g.flatten() for g in grouped.values()]).norm()
    assert total_grouped <= 2 * clip + 1e-4  # two groups, each clipped to C
    assert not torch.isclose(total_alone, total_grouped)
