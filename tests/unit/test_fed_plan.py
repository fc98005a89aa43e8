"""A node refuses, with the reason, every plan outside its limits; a sound plan passes."""

import math
from dataclasses import replace

import pytest

from primia.errors import ConfigError
from primia.federated.plan import (
    DPPlan,
    PlanLimits,
    TrainPlan,
    check_coordinator_plan,
    plan_problems,
)

DELTA_BUDGET = 1e-5
LIMITS = PlanLimits()


def problems_of(plan: TrainPlan, limits: PlanLimits = LIMITS) -> list[str]:
    return plan_problems(plan, limits, delta_budget=DELTA_BUDGET)


def with_dp(**changes: object) -> TrainPlan:
    return TrainPlan(dp=replace(DPPlan(), **changes))  # type: ignore[arg-type]


def test_default_plan_is_acceptable():
    assert problems_of(TrainPlan()) == []


def test_plan_at_every_upper_bound_is_acceptable():
    plan = TrainPlan(
        epochs=LIMITS.max_epochs,
        batch_size=LIMITS.max_batch_size,
        lr=LIMITS.max_lr,
        optimizer="sgd",
        momentum=0.0,
        weight_decay=0.0,
        dp=DPPlan(
            epsilon=LIMITS.max_epsilon_per_round,
            delta=DELTA_BUDGET,
            max_grad_norm=LIMITS.max_grad_norm,
        ),
    )
    assert problems_of(plan) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"epochs": 0}, "epochs=0 is outside [1, 20]"),
        ({"epochs": 21}, "epochs=21 is outside [1, 20]"),
        ({"batch_size": 0}, "batch_size=0 is outside [1, 1024]"),
        ({"batch_size": 1025}, "batch_size=1025 is outside [1, 1024]"),
        ({"lr": 0.0}, "lr=0.0 is outside (0, 1.0]"),
        ({"lr": -0.1}, "lr=-0.1 is outside (0, 1.0]"),
        ({"lr": 1.5}, "lr=1.5 is outside (0, 1.0]"),
        ({"lr": math.nan}, "lr=nan is outside (0, 1.0]"),
        ({"lr": math.inf}, "lr=inf is outside (0, 1.0]"),
        ({"optimizer": "rmsprop"}, "optimizer='rmsprop' is not adam or sgd"),
        ({"momentum": 1.0}, "momentum=1.0 is outside [0, 1)"),
        ({"momentum": -0.1}, "momentum=-0.1 is outside [0, 1)"),
        ({"momentum": math.nan}, "momentum=nan is outside [0, 1)"),
        ({"weight_decay": 1.0}, "weight_decay=1.0 is outside [0, 1)"),
        ({"weight_decay": -1e-4}, "weight_decay=-0.0001 is outside [0, 1)"),
        ({"weight_decay": math.inf}, "weight_decay=inf is outside [0, 1)"),
        ({"proximal_mu": -0.1}, "proximal_mu=-0.1 is outside [0, 10.0]"),
        ({"proximal_mu": 10.5}, "proximal_mu=10.5 is outside [0, 10.0]"),
        ({"proximal_mu": math.nan}, "proximal_mu=nan is outside [0, 10.0]"),
        ({"ema_decay": 1.0}, "ema_decay=1.0 is outside [0, 1)"),
        ({"ema_decay": -0.5}, "ema_decay=-0.5 is outside [0, 1)"),
        ({"augmentations": 0}, "augmentations=0 is outside [1, 64]"),
        ({"augmentations": 65}, "augmentations=65 is outside [1, 64]"),
    ],
)
def test_each_training_bound_is_named(changes, expected):
    assert problems_of(replace(TrainPlan(), **changes)) == [expected]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"epsilon": 0.0}, "dp.epsilon=0.0 is outside (0, 10.0] per round"),
        ({"epsilon": -1.0}, "dp.epsilon=-1.0 is outside (0, 10.0] per round"),
        ({"epsilon": 10.5}, "dp.epsilon=10.5 is outside (0, 10.0] per round"),
        ({"epsilon": math.inf}, "dp.epsilon=inf is outside (0, 10.0] per round"),
        ({"epsilon": math.nan}, "dp.epsilon=nan is outside (0, 10.0] per round"),
        ({"delta": 0.0}, "dp.delta=0.0 is outside (0, 1e-05], the node's delta"),
        ({"delta": math.nan}, "dp.delta=nan is outside (0, 1e-05], the node's delta"),
        ({"max_grad_norm": 0.0}, "dp.max_grad_norm=0.0 is outside (0, 100.0]"),
        ({"max_grad_norm": 101.0}, "dp.max_grad_norm=101.0 is outside (0, 100.0]"),
        ({"max_grad_norm": math.nan}, "dp.max_grad_norm=nan is outside (0, 100.0]"),
    ],
)
def test_each_dp_bound_is_named(changes, expected):
    assert problems_of(with_dp(**changes)) == [expected]


def test_a_node_bounds_fedprox_and_the_local_optimizer():
    limits = PlanLimits(max_proximal_mu=0.1, optimizers=["sgd"])
    plan = TrainPlan(optimizer="adam", proximal_mu=0.5)
    assert plan_problems(plan, limits, delta_budget=DELTA_BUDGET, name_settings=True) == [
        "optimizer='adam' is not among ['sgd'] (limits.optimizers)",
        "proximal_mu=0.5 is outside [0, 0.1] (limits.max_proximal_mu)",
    ]
    assert problems_of(replace(plan, optimizer="sgd", proximal_mu=0.1)) == []
    with pytest.raises(ConfigError, match=r"limits\.optimizers"):
        PlanLimits(optimizers=["rmsprop"])  # type: ignore[list-item]


def test_delta_above_the_nodes_delta_budget_is_refused():
    assert problems_of(with_dp(delta=2e-5)) == [
        "dp.delta=2e-05 is outside (0, 1e-05], the node's delta"
    ]
    # The same δ is fine for a node whose ledger runs at a larger δ.
    assert plan_problems(with_dp(delta=2e-5), LIMITS, delta_budget=1e-4) == []


def test_training_without_dp_is_refused_where_dp_is_required():
    plan = with_dp(enabled=False)
    assert problems_of(plan) == ["the plan trains without DP and this node requires DP"]
    assert problems_of(plan, PlanLimits(require_dp=False)) == []


def test_disabled_dp_skips_the_dp_bounds():
    # With DP off the DP parameters are not used, so they are not judged either.
    plan = with_dp(enabled=False, epsilon=-1.0, delta=1.0, max_grad_norm=0.0)
    assert problems_of(plan, PlanLimits(require_dp=False)) == []


def test_limits_set_by_the_operator_are_used():
    limits = PlanLimits(max_epochs=2, max_batch_size=8, max_lr=0.01, max_epsilon_per_round=0.5)
    plan = TrainPlan(epochs=3, batch_size=16, lr=0.1, dp=DPPlan(epsilon=1.0))
    assert problems_of(plan, limits) == [
        "epochs=3 is outside [1, 2]",
        "batch_size=16 is outside [1, 8]",
        "lr=0.1 is outside (0, 0.01]",
        "dp.epsilon=1.0 is outside (0, 0.5] per round",
    ]


def test_every_problem_is_reported_not_just_the_first():
    plan = TrainPlan(
        epochs=0,
        batch_size=0,
        lr=math.nan,
        optimizer="lbfgs",  # type: ignore[arg-type]
        momentum=2.0,
        weight_decay=-1.0,
        dp=DPPlan(epsilon=0.0, delta=0.5, max_grad_norm=-1.0),
    )
    problems = problems_of(plan)
    assert len(problems) == 9
    for prefix in ("epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay"):
        assert any(problem.startswith(prefix + "=") for problem in problems), prefix
    for prefix in ("dp.epsilon", "dp.delta", "dp.max_grad_norm"):
        assert any(problem.startswith(prefix + "=") for problem in problems), prefix


def test_a_node_names_the_setting_behind_each_bound():
    plan = TrainPlan(epochs=30, dp=DPPlan(epsilon=12.0))
    assert plan_problems(plan, LIMITS, delta_budget=DELTA_BUDGET, name_settings=True) == [
        "epochs=30 is outside [1, 20] (limits.max_epochs)",
        "dp.epsilon=12.0 is outside (0, 10.0] per round (limits.max_epsilon_per_round)",
    ]


def test_coordinator_accepts_a_sound_plan_and_plans_without_dp():
    check_coordinator_plan(TrainPlan())
    check_coordinator_plan(with_dp(enabled=False))
    # Its limits are wider than a node's default ones.
    check_coordinator_plan(TrainPlan(epochs=100, batch_size=4096, lr=5.0))


@pytest.mark.parametrize(
    ("plan", "expected"),
    [
        (TrainPlan(epochs=0), "epochs=0"),
        (TrainPlan(epochs=1001), "epochs=1001"),
        (TrainPlan(lr=math.inf), "lr=inf"),
        (TrainPlan(lr=11.0), "lr=11.0"),
        (TrainPlan(dp=DPPlan(delta=1.5)), "dp.delta=1.5"),
        (TrainPlan(dp=DPPlan(epsilon=math.nan)), "dp.epsilon=nan"),
    ],
)
def test_coordinator_rejects_an_invalid_plan_with_config_error(plan, expected):
    with pytest.raises(ConfigError, match="the training plan is not valid: ") as caught:
        check_coordinator_plan(plan)
    assert expected in str(caught.value)


def test_coordinator_error_lists_all_problems():
    with pytest.raises(ConfigError) as caught:
        check_coordinator_plan(TrainPlan(epochs=0, batch_size=0))
    assert "epochs=0 is outside [1, 1000]; batch_size=0 is outside [1, 1048576]" in str(
        caught.value
    )
