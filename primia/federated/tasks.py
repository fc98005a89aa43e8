"""What a coordinator asks of a node, and what comes back, free of any transport.

Weights travel as :class:`~primia.blobs.Blob` (safetensors bytes with their
SHA-256); the gRPC layer moves them as chunks and these objects as protobuf messages.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from primia.blobs import Blob
from primia.crypto.secagg import Setup
from primia.errors import PrimiaError
from primia.evaluate.evaluation import Evaluation
from primia.federated.plan import TrainPlan
from primia.federated.weights import State, encode
from primia.models.checkpoint import ModelSpec
from primia.train.units import PrivacyUnit

Split = Literal["validation", "test"]


class Refusal(StrEnum):
    BUDGET_EXCEEDED = "budget_exceeded"
    INVALID_PLAN = "invalid_plan"
    INVALID_WEIGHTS = "invalid_weights"
    INCOMPATIBLE_MODEL = "incompatible_model"
    FAILED = "failed"
    PROTOCOL_VIOLATION = "protocol_violation"
    LEDGER_INTEGRITY = "ledger_integrity"
    POLICY = "policy"
    """Outside the node's policy (``[policy]`` and the DP floors of ``[limits]``)."""


RECURRING = frozenset(
    {
        Refusal.BUDGET_EXCEEDED,
        Refusal.INVALID_PLAN,
        Refusal.INCOMPATIBLE_MODEL,
        Refusal.LEDGER_INTEGRITY,
        Refusal.POLICY,
    }
)
"""Refusals that asking again cannot change: they follow from the run's model and plan
and the node's data, budget, ledger and policy, none of which a retry alters. A node that
gives one takes no further part in the run (until it joins again, e.g. reconfigured);
a retry would only charge the other nodes' budgets again. The others (a failure, weights
that did not arrive, a broken secure aggregation) may pass on another attempt."""


class TaskRefused(PrimiaError):
    """A node declined a task (or failed it); ``detail`` says why and what would fix it."""

    def __init__(self, reason: Refusal, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class NodeDropped(PrimiaError):
    """The node disconnected or timed out before it answered."""


@dataclass(frozen=True)
class SecureTask:
    """How this round's update is securely aggregated (:mod:`primia.crypto.secagg`)."""

    setup: Setup
    weight_unit: float
    """A node's FedAvg weight is min(1, examples / weight_unit), so it fits the ring."""


@dataclass(frozen=True)
class FederationPlan:
    """What a coordinator will ask of every node in its run, sent when a node joins, so
    that a node refuses at once (before any round charges anyone) what it would refuse
    in every round: a model that does not fit its data, a plan outside its limits, an
    aggregation outside its policy, a first release beyond its budget."""

    spec: ModelSpec
    plan: TrainPlan
    secure: bool
    """Secure aggregation (else plaintext: the coordinator sees every update)."""
    roster_size: int
    """The most participants a round can have."""
    min_nodes: int
    """The fewest updates a round needs."""
    threshold: int
    """The Shamir threshold of a secure round; 0: a strict majority of its participants."""


@dataclass(frozen=True)
class TrainTask:
    task_id: str
    round: int
    spec: ModelSpec
    weights: Blob
    plan: TrainPlan
    secure: SecureTask | None = None
    """None: the update is sent in the clear (plaintext aggregation)."""


@dataclass(frozen=True)
class EvaluationDetail:
    """Ask for a detailed evaluation of the test split (:mod:`primia.evaluate`)."""

    resamples: int = 1000
    seed: int = 0
    """Mixed with the node's secret: the same seed resamples the node's test split alike
    for every model (paired comparisons), and only the node knows the resamples."""
    subgroups: bool = True


@dataclass(frozen=True)
class EvaluateTask:
    task_id: str
    round: int
    spec: ModelSpec
    weights: Blob
    split: Split
    detail: EvaluationDetail | None = None


@dataclass(frozen=True)
class PrivacyState:
    """A node's ledger: ε spent of its budget, at δ."""

    epsilon_spent: float
    epsilon_budget: float
    delta: float
    accountant: str


@dataclass(frozen=True)
class PrivacyRelease:
    """One round's DP release by one node."""

    epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float
    unit: PrivacyUnit = "example"
    """What ``epsilon`` protects: a ``patient`` or one ``example`` (image)."""


@dataclass(frozen=True)
class TrainOutcome:
    update: Blob
    """Local weights minus the task's global weights, as safetensors bytes; with secure
    aggregation, the masked input instead (raw ring elements)."""
    num_examples: int
    train_loss: float
    steps: int
    seconds: float
    """From the task's arrival at the node until its update was ready to send: decoding
    the weights, training, and encoding the update (as safetensors, or into the ring and
    masked)."""
    release: PrivacyRelease | None
    privacy: PrivacyState
    clipped: int = 0
    """Values clipped to the secure-aggregation range (0 in plaintext)."""


@dataclass(frozen=True)
class LocalTraining:
    """A training task's result while it is still at the node: the update as tensors, not
    yet encoded for the coordinator (as safetensors, or masked in the ring)."""

    update: State
    """Local weights minus the task's global weights."""
    num_examples: int
    train_loss: float
    steps: int
    release: PrivacyRelease | None
    privacy: PrivacyState
    started: float
    """``time.perf_counter()`` when the task arrived."""

    def as_safetensors(self, blob_id: str) -> TrainOutcome:
        """The outcome with the update as safetensors: what plaintext aggregation receives."""
        return self.outcome(Blob.of(blob_id, encode(self.update)))

    def outcome(self, update: Blob, *, clipped: int = 0) -> TrainOutcome:
        """What the node reports, with ``update`` as it is sent; ``seconds`` end now."""
        return TrainOutcome(
            update=update,
            num_examples=self.num_examples,
            train_loss=self.train_loss,
            steps=self.steps,
            seconds=time.perf_counter() - self.started,
            release=self.release,
            privacy=self.privacy,
            clipped=clipped,
        )


@dataclass(frozen=True)
class LabelMetrics:
    auroc: float | None
    """None when the split holds only one class of this label."""
    positives: int


@dataclass(frozen=True)
class EvaluationOutcome:
    num_examples: int
    loss: float
    accuracy: float
    labels: dict[str, LabelMetrics] = field(default_factory=dict)
    seconds: float = 0.0
    detailed: Evaluation | None = None
    """Given when the task asked for :class:`EvaluationDetail`."""


@dataclass(frozen=True)
class DatasetSummary:
    task: str
    label_names: tuple[str, ...]
    train_examples: int
    validation_examples: int
    test_examples: int


@dataclass(frozen=True)
class NodeInfo:
    """What a node says of itself when it joins."""

    dataset: DatasetSummary
    privacy: PrivacyState
    device: str
    software_version: str
