"""What the observer sees: the update rules against direct computations."""

import numpy as np
import pytest
import torch
from torch import nn

from primia.audit.release import (
    Defense,
    UpdateRule,
    epsilon_cost,
    node_update,
    observe,
    secure_mean,
    simulate,
)
from primia.data import Task
from primia.errors import ConfigError
from primia.models import build_model
from primia.train.accounting import Mechanism, epsilon_of
from primia.train.fast_dp import vmap_clipped_grad_sum
from primia.train.losses import criterion_for

TASK = Task.MULTILABEL


@pytest.fixture
def model() -> nn.Module:
    torch.manual_seed(0)
    return build_model("lenet", num_classes=3, width=4)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    return torch.rand(4, 1, 16, 16), (torch.rand(4, 3) > 0.5).float()


def plain_gradient(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> list:
    model.zero_grad()
    criterion_for(TASK)(model(images), targets).backward()
    return [p.grad.clone() for p in model.parameters()]


def test_one_step_without_defense_is_the_mean_gradient(model, batch) -> None:
    update = node_update(model, *batch, TASK, UpdateRule())
    for got, expected in zip(update, plain_gradient(model, *batch), strict=True):
        torch.testing.assert_close(got, expected)


def test_local_steps_give_the_weight_delta_of_sgd_on_the_batch(model, batch) -> None:
    rule = UpdateRule(local_steps=3, local_lr=0.5)
    update = node_update(model, *batch, TASK, rule)
    start = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        criterion_for(TASK)(model(batch[0]), batch[1]).backward()
        optimizer.step()
    for got, before, after in zip(update, start, model.parameters(), strict=True):
        torch.testing.assert_close(got, before - after.detach())


def test_dp_without_noise_is_the_clipped_sum_over_the_batch_size(model, batch) -> None:
    rule = UpdateRule(defense=Defense.DP, max_grad_norm=0.05, noise_multiplier=0.0)
    update = node_update(model, *batch, TASK, rule, noise=torch.Generator().manual_seed(0))
    clipped = vmap_clipped_grad_sum(
        model, criterion_for(TASK, reduction="none"), *batch, max_grad_norm=0.05
    )
    for got, expected in zip(update, clipped.values(), strict=True):
        torch.testing.assert_close(got, expected / 4, rtol=1e-4, atol=1e-7)


def test_dp_noise_has_the_calibrated_standard_deviation(model, batch) -> None:
    rule = UpdateRule(defense=Defense.DP, max_grad_norm=1.0, noise_multiplier=2.0)
    quiet = node_update(model, *batch, TASK, UpdateRule(defense=Defense.DP, noise_multiplier=0.0))
    noisy = node_update(model, *batch, TASK, rule, noise=torch.Generator().manual_seed(0))
    residual = torch.cat([(n - q).flatten() for n, q in zip(noisy, quiet, strict=True)])
    # σ·C / B = 0.5, over a few thousand parameters
    assert residual.std().item() == pytest.approx(0.5, rel=0.1)


def test_secure_aggregate_is_the_mean_of_the_nodes_updates(model, batch) -> None:
    rule = UpdateRule(defense=Defense.SECAGG, nodes=2)
    halves = [(batch[0][:2], batch[1][:2]), (batch[0][2:], batch[1][2:])]
    seen = observe(model, halves, TASK, rule, generator=torch.Generator())
    each = [node_update(model, *half, TASK, rule) for half in halves]
    for got, first, second in zip(seen, *each, strict=True):
        torch.testing.assert_close(got, (first + second) / 2)


@pytest.mark.parametrize(
    "rule",
    [
        UpdateRule(),
        UpdateRule(local_steps=2),
        UpdateRule(defense=Defense.DP, noise_multiplier=0.0, max_grad_norm=0.05),
        UpdateRule(defense=Defense.SECAGG, nodes=2),
    ],
    ids=["gradient", "delta", "dp", "secagg"],
)
def test_simulation_reproduces_the_noise_free_observation_and_is_differentiable(
    model, batch, rule: UpdateRule
) -> None:
    parts = list(zip(batch[0].chunk(rule.groups), batch[1].chunk(rule.groups), strict=True))
    seen = observe(model, parts, TASK, rule, generator=torch.Generator())
    images = batch[0].clone().requires_grad_(True)
    simulated = simulate(model, images, batch[1], TASK, rule)
    for got, expected in zip(simulated, seen, strict=True):
        torch.testing.assert_close(got.detach(), expected, rtol=1e-4, atol=1e-7)
    (gradient,) = torch.autograd.grad(sum((s * s).sum() for s in simulated), images)
    assert gradient.abs().sum() > 0


def test_epsilon_cost_is_the_accountants_for_one_update() -> None:
    rule = UpdateRule(defense=Defense.DP, noise_multiplier=1.2, local_steps=3)
    expected = epsilon_of([Mechanism(1.2, 8 / 100, 3)], delta=1e-5)
    assert epsilon_cost(rule, batch_size=8, dataset_size=100, delta=1e-5) == expected


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"local_steps": 0}, "local steps"),
        ({"defense": Defense.SECAGG, "nodes": 1}, "at least 2 nodes"),
        ({"defense": Defense.DP, "max_grad_norm": 0.0}, "clipping norm"),
    ],
)
def test_bad_rules_are_refused_with_the_reason(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        UpdateRule(**options)


def test_the_secure_mean_is_the_protocols_fixed_point_sum_clipped_and_rounded() -> None:
    first = [torch.tensor([0.25, -3.0, 20.0]), torch.tensor([[1e-9]])]
    second = [torch.tensor([0.75, -5.0, 20.0]), torch.tensor([[3e-9]])]
    mean = secure_mean([first, second], np.random.default_rng(0))
    resolution = 2 * 8 / 2**31
    assert mean[0][:2].tolist() == pytest.approx([0.5, -4.0], abs=resolution)
    assert mean[0][2].item() == pytest.approx(8.0, abs=resolution)  # clipped to ±8 first
    assert mean[1].shape == (1, 1) and abs(mean[1].item() - 2e-9) <= resolution
