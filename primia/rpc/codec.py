"""Protobuf messages to and from the transport-free objects of :mod:`primia.federated`.

Decoding validates what the schema cannot (enum values, a split, non-negative counts)
and raises :class:`MessageError`; a peer's bad message is answered, never fatal.
"""

from __future__ import annotations

import math

from primia.errors import PrimiaError
from primia.federated.coordinator import FederationStatus
from primia.federated.plan import DPPlan, Optimizer, TrainPlan
from primia.federated.registry import NodeStatus
from primia.federated.result import RoundResult
from primia.federated.tasks import (
    DatasetSummary,
    EvaluationOutcome,
    FederationPlan,
    LabelMetrics,
    NodeInfo,
    PrivacyRelease,
    PrivacyState,
    Refusal,
    Split,
    TaskRefused,
)
from primia.models.checkpoint import ModelSpec
from primia.rpc.generated import federation_pb2 as pb
from primia.train.units import PRIVACY_UNITS

PROTOCOL_VERSION = 3
"""2: secure aggregation signs round views and has a consistency round (issue 20).
3: Welcome carries the run's plan and the node answers it (PlanAnswer) before any task;
abandoned rounds are announced (RoundAbandoned); Shutdown says when a federation failed."""

_REFUSALS = {
    Refusal.BUDGET_EXCEEDED: pb.REFUSAL_REASON_BUDGET_EXCEEDED,
    Refusal.INVALID_PLAN: pb.REFUSAL_REASON_INVALID_PLAN,
    Refusal.INVALID_WEIGHTS: pb.REFUSAL_REASON_INVALID_WEIGHTS,
    Refusal.INCOMPATIBLE_MODEL: pb.REFUSAL_REASON_INCOMPATIBLE_MODEL,
    Refusal.FAILED: pb.REFUSAL_REASON_FAILED,
    Refusal.PROTOCOL_VIOLATION: pb.REFUSAL_REASON_PROTOCOL_VIOLATION,
    Refusal.LEDGER_INTEGRITY: pb.REFUSAL_REASON_LEDGER_INTEGRITY,
    Refusal.POLICY: pb.REFUSAL_REASON_POLICY,
}
MAX_ALARM_LENGTH = 2000
_SPLITS: dict[Split, pb.Split] = {"validation": pb.SPLIT_VALIDATION, "test": pb.SPLIT_TEST}


class MessageError(PrimiaError):
    """A message that parses but makes no sense."""


def spec_to_proto(spec: ModelSpec) -> pb.ModelSpec:
    return pb.ModelSpec(
        architecture=spec.architecture,
        num_outputs=spec.num_outputs,
        width=spec.width or 0,
        in_channels=spec.in_channels,
        image_size=spec.image_size,
        task=spec.task,
        label_names=list(spec.label_names),
        ws=spec.ws,
    )


def spec_from_proto(message: pb.ModelSpec) -> ModelSpec:
    if message.task not in ("binary", "multilabel", "multiclass"):
        raise MessageError(f"model task {message.task!r} is not binary, multilabel or multiclass")
    if message.num_outputs < 1:
        raise MessageError("the model has no outputs")
    return ModelSpec(
        architecture=message.architecture,
        num_outputs=message.num_outputs,
        width=message.width or None,
        in_channels=message.in_channels,
        image_size=message.image_size,
        task=message.task,
        label_names=tuple(message.label_names),
        ws=message.ws,
    )


def plan_to_proto(plan: TrainPlan) -> pb.TrainPlan:
    return pb.TrainPlan(
        epochs=plan.epochs,
        batch_size=plan.batch_size,
        lr=plan.lr,
        optimizer=plan.optimizer,
        momentum=plan.momentum,
        weight_decay=plan.weight_decay,
        proximal_mu=plan.proximal_mu,
        ema_decay=plan.ema_decay,
        augmentations=plan.augmentations,
        dp=pb.DPPlan(
            enabled=plan.dp.enabled,
            epsilon=plan.dp.epsilon,
            delta=plan.dp.delta,
            max_grad_norm=plan.dp.max_grad_norm,
        ),
    )


def plan_from_proto(message: pb.TrainPlan) -> TrainPlan:
    """The plan as sent; its bounds are the node's to check (``plan_problems``)."""
    optimizer: Optimizer
    if message.optimizer == "adam":
        optimizer = "adam"
    elif message.optimizer == "sgd":
        optimizer = "sgd"
    else:
        raise MessageError(f"optimizer {message.optimizer!r} is not adam or sgd")
    return TrainPlan(
        epochs=message.epochs,
        batch_size=message.batch_size,
        lr=message.lr,
        optimizer=optimizer,
        momentum=message.momentum,
        weight_decay=message.weight_decay,
        proximal_mu=message.proximal_mu,
        ema_decay=message.ema_decay,
        augmentations=max(1, message.augmentations),  # 0: a coordinator that does not say
        dp=DPPlan(
            enabled=message.dp.enabled,
            epsilon=message.dp.epsilon,
            delta=message.dp.delta,
            max_grad_norm=message.dp.max_grad_norm,
        ),
    )


def federation_plan_to_proto(plan: FederationPlan) -> pb.FederationPlan:
    return pb.FederationPlan(
        model=spec_to_proto(plan.spec),
        plan=plan_to_proto(plan.plan),
        secure_aggregation=plan.secure,
        roster_size=plan.roster_size,
        min_nodes=plan.min_nodes,
        threshold=plan.threshold,
    )


def federation_plan_from_proto(message: pb.FederationPlan) -> FederationPlan:
    if not 1 <= message.min_nodes <= message.roster_size:
        raise MessageError(
            f"the plan's min_nodes={message.min_nodes} is outside [1, roster_size="
            f"{message.roster_size}]"
        )
    return FederationPlan(
        spec=spec_from_proto(message.model),
        plan=plan_from_proto(message.plan),
        secure=message.secure_aggregation,
        roster_size=message.roster_size,
        min_nodes=message.min_nodes,
        threshold=message.threshold,
    )


def split_to_proto(split: Split) -> pb.Split:
    return _SPLITS[split]


def split_from_proto(value: int) -> Split:
    for name, number in _SPLITS.items():
        if number == value:
            return name
    raise MessageError(f"unknown split {value}; expected validation or test")


def privacy_to_proto(state: PrivacyState) -> pb.PrivacyState:
    return pb.PrivacyState(
        epsilon_spent=state.epsilon_spent,
        epsilon_budget=state.epsilon_budget,
        delta=state.delta,
        accountant=state.accountant,
    )


def privacy_from_proto(message: pb.PrivacyState) -> PrivacyState:
    _check_privacy(message.epsilon_spent, message.delta, "the node's spent epsilon")
    return PrivacyState(
        epsilon_spent=message.epsilon_spent,
        epsilon_budget=message.epsilon_budget,
        delta=message.delta,
        accountant=message.accountant,
    )


def release_to_proto(release: PrivacyRelease) -> pb.PrivacyRelease:
    return pb.PrivacyRelease(
        epsilon=release.epsilon,
        delta=release.delta,
        noise_multiplier=release.noise_multiplier,
        sample_rate=release.sample_rate,
        steps=release.steps,
        max_grad_norm=release.max_grad_norm,
        unit=release.unit,
    )


def release_from_proto(message: pb.PrivacyRelease) -> PrivacyRelease:
    _check_privacy(message.epsilon, message.delta, "the release's epsilon")
    if message.unit not in ("", *PRIVACY_UNITS):
        raise MessageError(
            f"the release's unit {message.unit[:40]!r} is not one of {', '.join(PRIVACY_UNITS)}"
        )
    return PrivacyRelease(
        epsilon=message.epsilon,
        delta=message.delta,
        noise_multiplier=message.noise_multiplier,
        sample_rate=message.sample_rate,
        steps=message.steps,
        max_grad_norm=message.max_grad_norm,
        # a node that does not say is taken at the weaker claim
        unit="patient" if message.unit == "patient" else "example",
    )


def _check_privacy(epsilon: float, delta: float, what: str) -> None:
    if not (epsilon >= 0 and not math.isnan(epsilon)):
        raise MessageError(f"{what} is {epsilon}, not a non-negative number")
    if not 0 <= delta < 1:
        raise MessageError(f"delta {delta} is outside [0, 1)")


def info_to_proto(info: NodeInfo) -> pb.Hello:
    dataset = info.dataset
    return pb.Hello(
        protocol_version=PROTOCOL_VERSION,
        software_version=info.software_version,
        dataset=pb.DatasetSummary(
            task=dataset.task,
            label_names=list(dataset.label_names),
            train_examples=dataset.train_examples,
            validation_examples=dataset.validation_examples,
            test_examples=dataset.test_examples,
        ),
        privacy=privacy_to_proto(info.privacy),
        device=info.device,
    )


def info_from_proto(message: pb.Hello) -> NodeInfo:
    if message.protocol_version != PROTOCOL_VERSION:
        raise MessageError(
            f"the node speaks protocol version {message.protocol_version}, this coordinator "
            f"{PROTOCOL_VERSION}; run the same primia version on both"
        )
    dataset = message.dataset
    return NodeInfo(
        dataset=DatasetSummary(
            task=dataset.task,
            label_names=tuple(dataset.label_names),
            train_examples=dataset.train_examples,
            validation_examples=dataset.validation_examples,
            test_examples=dataset.test_examples,
        ),
        privacy=privacy_from_proto(message.privacy),
        device=message.device,
        software_version=message.software_version,
    )


def evaluation_to_proto(task_id: str, outcome: EvaluationOutcome) -> pb.EvaluateResult:
    return pb.EvaluateResult(
        task_id=task_id,
        num_examples=outcome.num_examples,
        loss=outcome.loss,
        accuracy=outcome.accuracy,
        labels=[
            pb.LabelMetrics(
                name=name,
                auroc=math.nan if metrics.auroc is None else metrics.auroc,
                positives=metrics.positives,
            )
            for name, metrics in outcome.labels.items()
        ],
        seconds=outcome.seconds,
    )


def evaluation_from_proto(message: pb.EvaluateResult) -> EvaluationOutcome:
    labels = {}
    for label in message.labels:
        if not (math.isnan(label.auroc) or 0.0 <= label.auroc <= 1.0):
            raise MessageError(f"AUROC {label.auroc} of {label.name!r} is outside [0, 1]")
        labels[label.name] = LabelMetrics(
            auroc=None if math.isnan(label.auroc) else label.auroc, positives=label.positives
        )
    if not (math.isfinite(message.loss) or message.num_examples == 0):
        raise MessageError(f"evaluation loss {message.loss} is not finite")
    if not (0.0 <= message.accuracy <= 1.0 or message.num_examples == 0):
        raise MessageError(f"accuracy {message.accuracy} is outside [0, 1]")
    return EvaluationOutcome(
        num_examples=message.num_examples,
        loss=message.loss,
        accuracy=message.accuracy,
        labels=labels,
        seconds=message.seconds,
    )


def refusal_to_proto(task_id: str, refusal: TaskRefused) -> pb.TaskRefused:
    return pb.TaskRefused(task_id=task_id, reason=_REFUSALS[refusal.reason], detail=refusal.detail)


def refusal_from_proto(message: pb.TaskRefused) -> TaskRefused:
    for reason, number in _REFUSALS.items():
        if number == message.reason:
            return TaskRefused(reason, message.detail)
    return TaskRefused(Refusal.FAILED, message.detail or "refused without a reason")


def status_to_proto(status: NodeStatus) -> pb.NodeStatus:
    return pb.NodeStatus(
        name=status.name,
        connected=status.connected,
        activity=status.activity,
        epsilon_spent=status.epsilon_spent,
        epsilon_budget=status.epsilon_budget,
        rounds_contributed=status.rounds_contributed,
        device=status.device,
        ledger_alarm=status.ledger_alarm,
        last_refusal=status.last_refusal,
    )


def status_from_proto(message: pb.NodeStatus) -> NodeStatus:
    return NodeStatus(
        name=message.name,
        connected=message.connected,
        activity=message.activity,
        epsilon_spent=message.epsilon_spent,
        epsilon_budget=message.epsilon_budget,
        rounds_contributed=message.rounds_contributed,
        device=message.device,
        ledger_alarm=message.ledger_alarm,
        last_refusal=message.last_refusal,
    )


def reply_of(status: FederationStatus) -> pb.StatusReply:
    return pb.StatusReply(
        run_id=status.run_id,
        state=status.state,
        round=status.round,
        rounds=status.rounds,
        min_nodes=status.min_nodes,
        unit=status.unit,
        nodes=[status_to_proto(node) for node in status.nodes],
        history=[
            pb.RoundSummary(
                round=summary.round,
                contributors=list(summary.contributors),
                dropped=list(summary.left_out),
                loss=math.nan if summary.validation_loss is None else summary.validation_loss,
                mean_auroc=math.nan
                if summary.validation_mean_auroc is None
                else summary.validation_mean_auroc,
                seconds=summary.seconds,
            )
            for summary in status.history
        ],
    )


def status_of(reply: pb.StatusReply) -> FederationStatus:
    return FederationStatus(
        run_id=reply.run_id,
        state=reply.state,
        round=reply.round,
        rounds=reply.rounds,
        min_nodes=reply.min_nodes,
        nodes=[status_from_proto(node) for node in reply.nodes],
        history=[
            RoundResult(
                round=summary.round,
                contributors=tuple(summary.contributors),
                left_out=tuple(summary.dropped),
                validation_loss=None if math.isnan(summary.loss) else summary.loss,
                validation_mean_auroc=None
                if math.isnan(summary.mean_auroc)
                else summary.mean_auroc,
                seconds=summary.seconds,
            )
            for summary in reply.history
        ],
        unit=reply.unit or "round",
    )


def printable(text: str) -> str:
    """``text`` cut to a bounded length with control characters escaped, for a log line."""
    cut = text[:MAX_ALARM_LENGTH]
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut)
