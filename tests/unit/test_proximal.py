"""FedProx's proximal term: μ (w − w₀) reaches the optimiser whole, after DP's clipping and
noise, in plain training, the fast DP path and Opacus."""

from __future__ import annotations

import pytest
import torch
from opacus import PrivacyEngine
from torch.utils.data import DataLoader, TensorDataset

from primia.train.fast_dp import FastDPSGD
from primia.train.proximal import add_proximal_term

MU = 0.5
SHIFT = 1.0
"""How far the weights are from the anchor when the step is taken: μ·SHIFT per value,
whose norm (over 4 values: 1.0) is ten times the clipping norm below."""
CLIP = 0.1


def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, generator=generator), torch.randn(8, 1, generator=generator)


def model_at_shift(mu: float) -> tuple[torch.nn.Linear, torch.optim.SGD, torch.Tensor]:
    """A linear model whose anchor is its initial weights, then moved by SHIFT."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    if mu:
        add_proximal_term(optimizer, model, mu)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(SHIFT)
    return model, optimizer, torch.cat([p.detach().flatten() for p in model.parameters()])


def step_plain(mu: float) -> torch.Tensor:
    model, optimizer, before = model_at_shift(mu)
    images, targets = data()
    torch.nn.functional.mse_loss(model(images), targets).backward()
    optimizer.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()]) - before


def step_fast_dp(mu: float) -> torch.Tensor:
    model, optimizer, before = model_at_shift(mu)
    images, targets = data()
    dp = FastDPSGD(
        model, optimizer, noise_multiplier=0.0, max_grad_norm=CLIP, expected_batch_size=8
    )
    dp.zero_grad()
    dp.backward(((model(images) - targets) ** 2).mean(dim=1))
    dp.step()
    dp.remove()
    return torch.cat([p.detach().flatten() for p in model.parameters()]) - before


def step_opacus(mu: float) -> torch.Tensor:
    model, optimizer, before = model_at_shift(mu)
    images, targets = data()
    private, dp_optimizer, loader = PrivacyEngine(accountant="rdp").make_private(
        module=model,
        optimizer=optimizer,
        data_loader=DataLoader(TensorDataset(images, targets), batch_size=8),
        noise_multiplier=0.0,
        max_grad_norm=CLIP,
        poisson_sampling=False,
    )
    for batch_images, batch_targets in loader:
        dp_optimizer.zero_grad()
        torch.nn.functional.mse_loss(private(batch_images), batch_targets).backward()
        dp_optimizer.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()]) - before


@pytest.mark.parametrize("step", [step_plain, step_fast_dp, step_opacus])
def test_the_proximal_gradient_is_added_whole_after_clipping(step):
    without, with_term = step(0.0), step(MU)
    # SGD at lr 1: the update moves by −μ (w − w₀) = −μ·SHIFT in every value, unclipped
    assert torch.allclose(with_term - without, torch.full_like(without, -MU * SHIFT), atol=1e-6)


def test_clipping_still_bounds_the_data_dependent_part():
    update = step_fast_dp(0.0)
    assert update.norm() <= CLIP + 1e-6


def test_the_term_is_zero_at_the_anchor_and_a_negative_mu_is_refused():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    add_proximal_term(optimizer, model, MU)
    for parameter in model.parameters():
        parameter.grad = torch.ones_like(parameter)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer.step()
    for parameter, start in zip(model.parameters(), before, strict=True):
        assert torch.allclose(parameter, start - 1.0)
    with pytest.raises(ValueError, match="0 or more"):
        add_proximal_term(optimizer, model, -1.0)
