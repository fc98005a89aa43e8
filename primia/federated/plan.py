"""The training plan a coordinator sends, and the limits a data owner holds it to.

A plan is public: every node sees it. A node checks it against its own
:class:`PlanLimits` before it touches its data, and refuses, with the reason, a plan that
would train without DP when DP is required, for too long, or with absurd parameters.
The DP floors that depend on the node's data (the noise multiplier the plan's ε implies
on this node, ε per run) are checked by :func:`primia.federated.policy.dp_problems`.
Whether the plan fits the node's privacy budget is its ledger's decision
(:meth:`primia.train.ledger.PrivacyLedger.reserve`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from primia.errors import ConfigError

Optimizer = Literal["adam", "sgd"]
# The largest augmentation multiplicity a plan may ask for (each node caps it lower).
MAX_AUGMENTATIONS = 64


@dataclass(frozen=True)
class DPPlan:
    """DP-SGD for one round: the release's target ε at δ, per-example clipping norm."""

    enabled: bool = True
    epsilon: float = 1.0
    delta: float = 1e-5
    max_grad_norm: float = 1.0


@dataclass(frozen=True)
class TrainPlan:
    """What every selected node does in one round, from the global weights."""

    epochs: int = 1
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: Optimizer = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    proximal_mu: float = 0.0
    """FedProx's μ (Li et al. 2020): each node minimises its loss plus
    μ/2 ‖w − w_global‖², the gradient μ (w − w_global) added after DP-SGD's clipping and
    noise (see :func:`primia.train.proximal.add_proximal_term`); 0: plain local training."""
    ema_decay: float = 0.0
    """Each node releases the EMA of its local iterates (from the global weights) with this
    decay instead of the last iterate (0: off); post-processing, free in ε
    (:mod:`primia.train.ema`)."""
    augmentations: int = 1
    """Augmentation multiplicity K (De et al. 2022): each node averages the gradients of K
    random shifts of every image before clipping (1: off). Free in ε: the sensitivity is
    still C per unit. Each node caps it at its ``compute.max_augmentations`` (K multiplies
    its work per step) and trains K = 1 where its gradient mode cannot group samples."""
    dp: DPPlan = field(default_factory=DPPlan)


@dataclass(frozen=True)
class PlanLimits:
    """The most a node accepts from a coordinator (its operator sets them)."""

    require_dp: bool = True
    max_epochs: int = 20
    max_batch_size: int = 1024
    max_epsilon_per_round: float = 10.0
    max_lr: float = 1.0
    max_grad_norm: float = 100.0
    max_image_size: int = 1024
    min_noise_multiplier: float = 0.5
    """The least noise multiplier σ this node trains with: a plan whose target ε needs less
    noise on this node's data is refused (the coordinator may ask for less noise only down
    to here)."""
    max_epsilon_per_run: float | None = None
    """The most ε this node spends in one coordinator run (its rounds composed); None: only
    ``privacy.epsilon_budget`` bounds it."""
    max_proximal_mu: float = 10.0
    """The largest FedProx μ this node trains with (a huge μ pins the model to whatever
    global weights the coordinator sends)."""
    optimizers: list[Optimizer] = field(default_factory=lambda: ["adam", "sgd"])
    """The local optimisers this node runs."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_noise_multiplier) and self.min_noise_multiplier >= 0):
            raise ConfigError(
                f"limits.min_noise_multiplier must be 0 or more, not {self.min_noise_multiplier}"
            )
        if self.max_epsilon_per_run is not None and not self.max_epsilon_per_run > 0:
            raise ConfigError(
                f"limits.max_epsilon_per_run must be positive, not {self.max_epsilon_per_run}"
            )
        if not self.max_proximal_mu >= 0:
            raise ConfigError(
                f"limits.max_proximal_mu must be 0 or more, not {self.max_proximal_mu}"
            )
        if unknown := [name for name in self.optimizers if name not in ("adam", "sgd")]:
            raise ConfigError(f"limits.optimizers: {unknown} unknown; list adam and/or sgd")


def plan_problems(
    plan: TrainPlan, limits: PlanLimits, *, delta_budget: float, name_settings: bool = False
) -> list[str]:
    """Why ``plan`` is unacceptable under ``limits`` (empty when it is acceptable); with
    ``name_settings``, each bound is followed by the node's setting that sets it."""

    def setting(name: str) -> str:
        return f" ({name})" if name_settings else ""

    problems = []
    if not 1 <= plan.epochs <= limits.max_epochs:
        problems.append(
            f"epochs={plan.epochs} is outside [1, {limits.max_epochs}]"
            + setting("limits.max_epochs")
        )
    if not 1 <= plan.batch_size <= limits.max_batch_size:
        problems.append(
            f"batch_size={plan.batch_size} is outside [1, {limits.max_batch_size}]"
            + setting("limits.max_batch_size")
        )
    if not (math.isfinite(plan.lr) and 0 < plan.lr <= limits.max_lr):
        problems.append(f"lr={plan.lr} is outside (0, {limits.max_lr}]" + setting("limits.max_lr"))
    if not (math.isfinite(plan.ema_decay) and 0 <= plan.ema_decay < 1):
        problems.append(f"ema_decay={plan.ema_decay} is outside [0, 1)")
    if not 1 <= plan.augmentations <= MAX_AUGMENTATIONS:
        problems.append(f"augmentations={plan.augmentations} is outside [1, {MAX_AUGMENTATIONS}]")
    if plan.optimizer not in ("adam", "sgd"):
        problems.append(f"optimizer={plan.optimizer!r} is not adam or sgd")
    elif plan.optimizer not in limits.optimizers:
        problems.append(
            f"optimizer={plan.optimizer!r} is not among {limits.optimizers}"
            + setting("limits.optimizers")
        )
    if not (math.isfinite(plan.proximal_mu) and 0 <= plan.proximal_mu <= limits.max_proximal_mu):
        problems.append(
            f"proximal_mu={plan.proximal_mu} is outside [0, {limits.max_proximal_mu}]"
            + setting("limits.max_proximal_mu")
        )
    if not (math.isfinite(plan.momentum) and 0 <= plan.momentum < 1):
        problems.append(f"momentum={plan.momentum} is outside [0, 1)")
    if not (math.isfinite(plan.weight_decay) and 0 <= plan.weight_decay < 1):
        problems.append(f"weight_decay={plan.weight_decay} is outside [0, 1)")
    dp = plan.dp
    if not dp.enabled:
        if limits.require_dp:
            problems.append(
                "the plan trains without DP and this node requires DP"
                + setting("limits.require_dp")
            )
        return problems
    if not (math.isfinite(dp.epsilon) and 0 < dp.epsilon <= limits.max_epsilon_per_round):
        problems.append(
            f"dp.epsilon={dp.epsilon} is outside (0, {limits.max_epsilon_per_round}] per round"
            + setting("limits.max_epsilon_per_round")
        )
    if not 0 < dp.delta <= delta_budget:
        problems.append(
            f"dp.delta={dp.delta} is outside (0, {delta_budget}], the node's delta"
            + setting("privacy.delta")
        )
    if not (math.isfinite(dp.max_grad_norm) and 0 < dp.max_grad_norm <= limits.max_grad_norm):
        problems.append(
            f"dp.max_grad_norm={dp.max_grad_norm} is outside (0, {limits.max_grad_norm}]"
            + setting("limits.max_grad_norm")
        )
    return problems


def check_coordinator_plan(plan: TrainPlan) -> None:
    """A coordinator's own sanity check of its configured plan (limits at their widest)."""
    problems = plan_problems(
        plan,
        PlanLimits(
            require_dp=False,
            max_epochs=1000,
            max_batch_size=1 << 20,
            max_lr=10.0,
            max_proximal_mu=math.inf,
        ),
        delta_budget=1.0,
    )
    if problems:
        raise ConfigError("the training plan is not valid: " + "; ".join(problems))
