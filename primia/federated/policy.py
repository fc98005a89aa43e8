"""The hospital's policy: what a node takes part in, whatever its coordinator asks.

A coordinator chooses the round's aggregation, participants, threshold, model and plan.
A coordinator that cheats chooses them to learn a node's update: plaintext aggregation
(every update in the clear), a Shamir threshold of 2 among many nodes (the coordinator
and one colluding node unmask anyone), a round of two (the other node's update is the
sum minus its own), a model wide enough to memorise images, or too little DP noise.
:class:`NodePolicy` (``[policy]`` in ``node.toml``) is what the node's operator accepts;
the functions here say, before anything is trained or shared, which of a task's requests
fall outside it. Each problem names the setting and the value asked for, so the refusal
the coordinator receives (and logs, and shows in ``primia status``) says what to change.

Secure aggregation (n participants announced, Shamir threshold t) is accepted only when

    n ≥ min_participants   and   t ≥ max(⌊n/2⌋ + 1, min_threshold),

so that any sum the coordinator can unmask covers at least t inputs, and fewer than a
strict majority of the announced nodes cannot reconstruct a node's masks. The DP floors
(``min_noise_multiplier``, ``max_epsilon_per_run``) complete the plan limits of
:class:`~primia.federated.plan.PlanLimits`; :func:`dp_problems` checks them against the
mechanism the node would run on its own data.

Pure logic: no transport, no files (the node keeps the model it pinned; see
:class:`~primia.federated.data_owner.DataOwner`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from primia.crypto.secagg import Setup
from primia.crypto.secagg.messages import majority
from primia.errors import ConfigError
from primia.federated.plan import PlanLimits
from primia.federated.tasks import FederationPlan
from primia.models import BUILT_IN_MODELS, model_names
from primia.models.checkpoint import ModelSpec
from primia.models.registry import default_width

AggregationKind = Literal["secure", "plaintext"]


@dataclass(frozen=True)
class AcceptedModel:
    """An architecture at one width (None: the architecture's default width).

    A plug-in's name is checked once the node has loaded its plug-ins
    (:func:`check_policy_models`); a built-in's is known at once (:class:`NodePolicy`)."""

    architecture: str
    width: int | None = None

    def __post_init__(self) -> None:
        if self.width is not None and self.width < 4:
            raise ConfigError(f"policy.models: width must be at least 4, not {self.width}")

    def resolved(self) -> AcceptedModel:
        """The same model with its width stated (the default width filled in)."""
        if self.width is not None:
            return self
        return AcceptedModel(self.architecture, default_width(self.architecture))

    def __str__(self) -> str:
        width = "default width" if self.width is None else f"width {self.width}"
        return f"{self.architecture} ({width})"

    @classmethod
    def of(cls, spec: ModelSpec) -> AcceptedModel:
        return cls(spec.architecture, spec.width).resolved()


@dataclass(frozen=True)
class NodePolicy:
    """``[policy]`` in ``node.toml``: what this node takes part in (see the module docstring)."""

    aggregation: tuple[AggregationKind, ...] = ("secure",)
    """The aggregations this node takes part in. ``plaintext`` hands the coordinator
    every update of this node in the clear: allow it only by listing it."""
    min_participants: int = 3
    """A secure round must announce at least this many participants."""
    min_threshold: int = 2
    """A secure round's Shamir threshold must be at least this, and at least a strict
    majority of the participants announced."""
    models: tuple[AcceptedModel, ...] = ()
    """The models this node trains. Empty: the first model it accepts is pinned (kept in
    its state folder) and every other refused."""
    max_parameters: int | None = None
    """The most values a model's state may hold (None: no bound beyond ``models``)."""
    allow_plugins: bool = False
    """Load the model plug-ins named in ``node.toml`` (``plugins``). Loading one imports a
    module, which runs its code on this node: off by default, so only the built-in
    models are trained (:mod:`primia.models.plugins`)."""

    def __post_init__(self) -> None:
        if not self.aggregation:
            raise ConfigError(
                "policy.aggregation is empty; list 'secure' (and 'plaintext' only to let "
                "the coordinator see this node's updates)"
            )
        if len(set(self.aggregation)) != len(self.aggregation):
            raise ConfigError("policy.aggregation lists a kind twice")
        if self.min_participants < 2:
            raise ConfigError(
                f"policy.min_participants must be at least 2, not {self.min_participants} "
                "(the sum of one node's update is that update)"
            )
        if self.min_threshold < 2:
            raise ConfigError(f"policy.min_threshold must be at least 2, not {self.min_threshold}")
        if self.max_parameters is not None and self.max_parameters < 1:
            raise ConfigError(f"policy.max_parameters must be positive, not {self.max_parameters}")
        if not self.allow_plugins:
            for model in self.models:
                if model.architecture not in BUILT_IN_MODELS:
                    raise ConfigError(
                        f"policy.models: unknown architecture {model.architecture!r}: the "
                        f"built-in models are {', '.join(sorted(BUILT_IN_MODELS))}; a plug-in "
                        "model also needs policy.allow_plugins = true and its reference in "
                        "plugins"
                    )

    @property
    def allows_plaintext(self) -> bool:
        return "plaintext" in self.aggregation


def check_policy_models(policy: NodePolicy) -> None:
    """Refuse a ``policy.models`` entry that names no model once the node's plug-ins are
    loaded: a plug-in is accepted only when it is listed there, loaded from ``plugins`` and
    ``policy.allow_plugins`` is true (:class:`NodePolicy` refuses it when that is false)."""
    for model in policy.models:
        if model.architecture not in model_names():
            raise ConfigError(
                f"policy.models: unknown architecture {model.architecture!r}; choose one of "
                f"{', '.join(model_names())}, or add its plug-in's reference to plugins"
            )


def aggregation_problems(policy: NodePolicy, setup: Setup | None) -> list[str]:
    """Why a task aggregated as ``setup`` says (None: plaintext) is outside ``policy``."""
    if setup is None:
        if policy.allows_plaintext:
            return []
        return [
            "policy.aggregation=['secure']: the coordinator asks for plaintext aggregation "
            "(it would receive this node's update in the clear); add 'plaintext' to "
            "policy.aggregation only if the coordinator may see every update"
        ]
    return _secure_problems(
        policy, len(setup.participants), setup.threshold, ", ".join(setup.participants)
    )


def plan_aggregation_problems(policy: NodePolicy, plan: FederationPlan) -> list[str]:
    """Why every round of the run ``plan`` announces (at a node's Join) would be outside
    ``policy``: plaintext when the policy says secure, or no round size n the run can
    have (from ``min_nodes`` to the roster's size) whose participants and threshold the
    policy accepts. Empty if some round could pass; each round is checked again when it
    comes (:func:`aggregation_problems`), with its actual participants."""
    if not plan.secure:
        return aggregation_problems(policy, None)
    sizes = range(max(2, plan.min_nodes), plan.roster_size + 1)
    for n in sizes:
        threshold = plan.threshold or majority(n)
        if threshold <= n and not _secure_problems(policy, n, threshold, ""):
            return []
    # None fits: the whole roster's round is the most the run offers; say what it lacks.
    largest = plan.roster_size
    problems = _secure_problems(policy, largest, plan.threshold or majority(largest), "")
    return [f"{problem} (the whole roster's round)" for problem in problems] or [
        f"no round of {min(sizes, default=largest)} to {largest} participants fits this policy"
    ]


def _secure_problems(policy: NodePolicy, count: int, threshold: int, names: str) -> list[str]:
    """Why a secure round of ``count`` participants (``names``, if known) with Shamir
    threshold ``threshold`` is outside ``policy``."""
    problems = []
    if "secure" not in policy.aggregation:
        problems.append(
            f"policy.aggregation={list(policy.aggregation)}: the coordinator asks for "
            "secure aggregation"
        )
    listed = f" ({names})" if names else ""
    if count < policy.min_participants:
        problems.append(
            f"policy.min_participants={policy.min_participants}: the round announces "
            f"{count} participants{listed}"
        )
    floor = required_threshold(policy, count)
    if threshold < floor:
        problems.append(
            f"policy.min_threshold={policy.min_threshold}: the round's threshold is "
            f"{threshold} of {count} participants; this node requires at least "
            f"{floor} (a strict majority, ⌊{count}/2⌋ + 1 = {majority(count)}, or "
            "policy.min_threshold, whichever is higher)"
        )
    return problems


def roster_problems(policy: NodePolicy, advertised: Sequence[str]) -> list[str]:
    """Why a key roster of the nodes ``advertised`` (their keys verified against the
    consortium's CA) is too small: participants announced but never heard from do not
    count towards ``min_participants``."""
    if len(advertised) >= policy.min_participants:
        return []
    return [
        f"policy.min_participants={policy.min_participants}: only {len(advertised)} "
        f"participants advertised keys ({', '.join(sorted(advertised))}); this node sends "
        "no share"
    ]


def required_threshold(policy: NodePolicy, participants: int) -> int:
    """The smallest Shamir threshold ``policy`` accepts for ``participants`` nodes."""
    return max(majority(participants), policy.min_threshold)


def accepted_models(policy: NodePolicy, pinned: AcceptedModel | None) -> tuple[AcceptedModel, ...]:
    """The models the node trains: the policy's list, else the one it pinned (empty before
    its first task: the first model accepted is then pinned)."""
    if policy.models:
        return tuple(model.resolved() for model in policy.models)
    return () if pinned is None else (pinned.resolved(),)


def model_problems(
    policy: NodePolicy,
    spec: ModelSpec,
    *,
    parameters: int,
    accepted: Sequence[AcceptedModel],
) -> list[str]:
    """Why training ``spec`` (holding ``parameters`` values) is outside ``policy``.

    ``accepted`` is :func:`accepted_models`: empty, any registered model passes (and is
    then pinned by the caller)."""
    problems = []
    asked = AcceptedModel.of(spec)
    if spec.architecture not in BUILT_IN_MODELS and not policy.allow_plugins:
        problems.append(
            f"policy.allow_plugins=false: the coordinator asks for the plug-in model "
            f"{spec.architecture!r} (a plug-in runs its own code on this node); set "
            "policy.allow_plugins = true, list it in plugins and in policy.models to train it"
        )
    if accepted and asked not in accepted:
        setting = "policy.models" if policy.models else "policy.models (pinned)"
        problems.append(
            f"{setting}={[str(model) for model in accepted]}: the coordinator asks for "
            f"{asked}; list it in policy.models if this node should train it"
        )
    if policy.max_parameters is not None and parameters > policy.max_parameters:
        problems.append(
            f"policy.max_parameters={policy.max_parameters}: the model {asked} holds "
            f"{parameters} values"
        )
    return problems


def dp_problems(
    limits: PlanLimits,
    *,
    noise_multiplier: float,
    run_epsilon: float,
    run: str,
) -> list[str]:
    """Why a DP release is outside the node's DP floors.

    ``noise_multiplier`` is the σ the node would train with (calibrated on its own data to
    the plan's target ε); ``run_epsilon`` is ε of the node's releases in the coordinator's
    run ``run``, composed with this one."""
    problems = []
    if noise_multiplier < limits.min_noise_multiplier:
        problems.append(
            f"limits.min_noise_multiplier={limits.min_noise_multiplier:g}: the plan's target "
            f"ε would train this node's data with noise multiplier {noise_multiplier:.3g}; "
            "ask for a smaller dp.epsilon or more epochs"
        )
    cap = limits.max_epsilon_per_run
    if cap is not None and not (math.isfinite(run_epsilon) and run_epsilon <= cap):
        problems.append(
            f"limits.max_epsilon_per_run={cap:g}: this round would bring the node's ε in run "
            f"{run or '(unnamed)'} to {run_epsilon:.3g}"
        )
    return problems
