"""Every message survives a round trip through protobuf; nonsense from a peer is refused."""

import math

import pytest
from rich.console import Console

from primia.federated.coordinator import FederationStatus
from primia.federated.display import render
from primia.federated.plan import DPPlan, TrainPlan
from primia.federated.registry import NodeStatus
from primia.federated.result import RoundResult
from primia.federated.tasks import (
    DatasetSummary,
    EvaluationOutcome,
    LabelMetrics,
    NodeInfo,
    PrivacyRelease,
    PrivacyState,
    Refusal,
    TaskRefused,
)
from primia.models.checkpoint import ModelSpec
from primia.rpc import codec
from primia.rpc.codec import MessageError
from primia.rpc.generated import federation_pb2 as pb

PRIVACY = PrivacyState(epsilon_spent=1.25, epsilon_budget=8.0, delta=1e-5, accountant="prv")
INFO = NodeInfo(
    dataset=DatasetSummary(
        task="multilabel",
        label_names=("effusion", "nodule"),
        train_examples=120,
        validation_examples=15,
        test_examples=16,
    ),
    privacy=PRIVACY,
    device="cuda:0",
    software_version="0.3.1",
)


def wire(message):
    """The message as the peer receives it: serialized and parsed again."""
    return type(message).FromString(message.SerializeToString())


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec("cnn", num_outputs=4),
        ModelSpec(
            "resnet9",
            num_outputs=2,
            width=16,
            in_channels=3,
            image_size=128,
            task="multiclass",
            label_names=("normal", "pneumonia"),
            ws=True,
        ),
        ModelSpec("resnet18", num_outputs=1, task="binary", label_names=("covid",)),
    ],
)
def test_spec_round_trip(spec):
    assert codec.spec_from_proto(wire(codec.spec_to_proto(spec))) == spec


def test_spec_width_none_travels_as_zero():
    message = codec.spec_to_proto(ModelSpec("cnn", num_outputs=4, width=None))
    assert message.width == 0
    message.width = 0
    assert codec.spec_from_proto(message).width is None
    message.width = 24
    assert codec.spec_from_proto(message).width == 24


def test_spec_with_an_unknown_task_is_refused():
    message = codec.spec_to_proto(ModelSpec("cnn", num_outputs=4))
    message.task = "regression"
    with pytest.raises(MessageError, match="model task 'regression' is not binary"):
        codec.spec_from_proto(message)


def test_spec_without_outputs_is_refused():
    message = codec.spec_to_proto(ModelSpec("cnn", num_outputs=4))
    message.num_outputs = 0
    with pytest.raises(MessageError, match="the model has no outputs"):
        codec.spec_from_proto(message)


@pytest.mark.parametrize(
    "plan",
    [
        TrainPlan(),
        TrainPlan(
            epochs=3,
            batch_size=32,
            lr=0.05,
            optimizer="sgd",
            momentum=0.8,
            weight_decay=1e-4,
            proximal_mu=0.01,
            ema_decay=0.99,
            augmentations=3,
            dp=DPPlan(enabled=False, epsilon=2.5, delta=1e-6, max_grad_norm=0.5),
        ),
    ],
)
def test_plan_round_trip(plan):
    assert codec.plan_from_proto(wire(codec.plan_to_proto(plan))) == plan


def test_plan_keeps_out_of_bounds_values_for_the_node_to_judge():
    plan = TrainPlan(lr=math.inf, epochs=0, dp=DPPlan(epsilon=-1.0))
    decoded = codec.plan_from_proto(wire(codec.plan_to_proto(plan)))
    assert decoded.lr == math.inf
    assert decoded.epochs == 0
    assert decoded.dp.epsilon == -1.0


def test_a_plan_that_names_no_augmentations_means_one():
    """proto3 reads an absent field as 0: a coordinator that does not send K asks for none."""
    message = codec.plan_to_proto(TrainPlan())
    message.ClearField("augmentations")
    assert codec.plan_from_proto(wire(message)).augmentations == 1


@pytest.mark.parametrize("optimizer", ["rmsprop", "", "Adam"])
def test_plan_with_an_unknown_optimizer_is_refused(optimizer):
    message = codec.plan_to_proto(TrainPlan())
    message.optimizer = optimizer
    with pytest.raises(MessageError, match="is not adam or sgd"):
        codec.plan_from_proto(message)


@pytest.mark.parametrize("split", ["validation", "test"])
def test_split_round_trip(split):
    assert codec.split_from_proto(codec.split_to_proto(split)) == split


@pytest.mark.parametrize("value", [pb.SPLIT_UNSPECIFIED, 7])
def test_unknown_split_is_refused(value):
    with pytest.raises(MessageError, match=f"unknown split {value}"):
        codec.split_from_proto(value)


def test_privacy_round_trip():
    assert codec.privacy_from_proto(wire(codec.privacy_to_proto(PRIVACY))) == PRIVACY


def test_release_round_trip():
    release = PrivacyRelease(
        epsilon=1.5,
        delta=1e-5,
        noise_multiplier=1.1,
        sample_rate=0.03125,
        steps=96,
        max_grad_norm=1.0,
        unit="patient",
    )
    assert codec.release_from_proto(wire(codec.release_to_proto(release))) == release


def test_a_release_that_names_no_unit_is_taken_as_example_level_and_a_bad_one_refused():
    message = codec.release_to_proto(PrivacyRelease(1.0, 1e-5, 1.0, 0.1, 10, 1.0, "patient"))
    message.unit = ""  # a node from before the field
    assert codec.release_from_proto(wire(message)).unit == "example"
    message.unit = "hospital"
    with pytest.raises(codec.MessageError, match="unit 'hospital'"):
        codec.release_from_proto(wire(message))


def test_info_round_trip_through_hello():
    hello = wire(codec.info_to_proto(INFO))
    assert hello.protocol_version == codec.PROTOCOL_VERSION
    assert codec.info_from_proto(hello) == INFO


def test_hello_of_another_protocol_version_is_refused():
    hello = codec.info_to_proto(INFO)
    hello.protocol_version = codec.PROTOCOL_VERSION + 1
    with pytest.raises(MessageError, match="protocol version 4, this coordinator 3"):
        codec.info_from_proto(hello)


def test_evaluation_round_trip_with_an_undefined_auroc():
    outcome = EvaluationOutcome(
        num_examples=40,
        loss=0.62,
        accuracy=0.75,
        labels={
            "effusion": LabelMetrics(auroc=0.81, positives=9),
            "nodule": LabelMetrics(auroc=None, positives=0),
        },
        seconds=1.5,
    )
    message = wire(codec.evaluation_to_proto("task-7", outcome))
    assert message.task_id == "task-7"
    aurocs = {label.name: label.auroc for label in message.labels}
    assert aurocs["effusion"] == 0.81 and math.isnan(aurocs["nodule"])
    assert codec.evaluation_from_proto(message) == outcome


def evaluation_message(*, auroc: float = 0.5, loss: float = 0.3, n: int = 10) -> pb.EvaluateResult:
    return pb.EvaluateResult(
        task_id="t",
        num_examples=n,
        loss=loss,
        accuracy=0.5,
        labels=[pb.LabelMetrics(name="x", auroc=auroc, positives=1)],
    )


@pytest.mark.parametrize("auroc", [-0.01, 1.01, math.inf, -math.inf])
def test_auroc_outside_the_unit_interval_is_refused(auroc):
    with pytest.raises(MessageError, match=r"AUROC .* of 'x' is outside \[0, 1\]"):
        codec.evaluation_from_proto(evaluation_message(auroc=auroc))


@pytest.mark.parametrize("auroc", [0.0, 1.0])
def test_auroc_at_the_ends_of_the_interval_is_accepted(auroc):
    assert codec.evaluation_from_proto(evaluation_message(auroc=auroc)).labels["x"].auroc == auroc


@pytest.mark.parametrize("loss", [math.nan, math.inf])
def test_non_finite_loss_is_refused(loss):
    with pytest.raises(MessageError, match=r"evaluation loss .* is not finite"):
        codec.evaluation_from_proto(evaluation_message(loss=loss))


def test_non_finite_loss_is_accepted_when_there_were_no_examples():
    outcome = codec.evaluation_from_proto(evaluation_message(loss=math.nan, n=0))
    assert outcome.num_examples == 0 and math.isnan(outcome.loss)


@pytest.mark.parametrize("reason", list(Refusal))
def test_refusal_round_trip_for_every_reason(reason):
    message = wire(codec.refusal_to_proto("task-3", TaskRefused(reason, "because")))
    assert message.task_id == "task-3"
    assert message.reason != pb.REFUSAL_REASON_UNSPECIFIED
    refusal = codec.refusal_from_proto(message)
    assert (refusal.reason, refusal.detail) == (reason, "because")
    assert str(refusal) == f"{reason}: because"


def test_refusal_without_a_reason_is_a_failure():
    refusal = codec.refusal_from_proto(pb.TaskRefused(task_id="t"))
    assert refusal.reason is Refusal.FAILED
    assert refusal.detail == "refused without a reason"
    kept = codec.refusal_from_proto(pb.TaskRefused(task_id="t", detail="disk full"))
    assert (kept.reason, kept.detail) == (Refusal.FAILED, "disk full")


@pytest.mark.parametrize(
    "status",
    [
        NodeStatus("alpha"),
        NodeStatus(
            "beta",
            connected=True,
            activity="training 3/10",
            epsilon_spent=2.5,
            epsilon_budget=8.0,
            rounds_contributed=4,
            device="cuda:0",
            last_refusal="round 2: policy: policy.min_participants=3: the round announces 2",
        ),
    ],
)
def test_node_status_round_trip(status):
    assert codec.status_from_proto(wire(codec.status_to_proto(status))) == status


@pytest.mark.parametrize("unit", ["round", "step"])
def test_federation_status_round_trip_keeps_what_it_counts(unit):
    status = FederationStatus(
        run_id="r1",
        state="evaluating",
        round=3,
        rounds=8,
        min_nodes=2,
        nodes=[NodeStatus("alpha", connected=True)],
        history=[
            RoundResult(
                1, ("alpha",), (), validation_loss=0.5, validation_mean_auroc=None, seconds=2.0
            )
        ],
        unit=unit,
    )
    received = codec.status_of(wire(codec.reply_of(status)))
    assert received == status
    console = Console(width=200, record=True)
    console.print(render(received))
    assert f"{unit} 3/8" in console.export_text()


def test_primia_status_shows_each_nodes_latest_refusal_in_full():
    refusal = (
        "round 2: policy: policy.aggregation=['secure']: the coordinator asks for plaintext "
        "aggregation"
    )
    status = FederationStatus(
        run_id="r1",
        state="waiting for nodes",
        round=2,
        rounds=3,
        min_nodes=2,
        nodes=[NodeStatus("alpha", connected=True, last_refusal=refusal), NodeStatus("beta")],
        history=[],
    )
    console = Console(width=300, record=True)
    console.print(render(codec.status_of(wire(codec.reply_of(status)))))
    text = console.export_text()
    assert "last refusal" in text and refusal in text


def test_a_status_from_an_older_coordinator_counts_rounds():
    reply = pb.StatusReply(run_id="r1", state="running", round=1, rounds=2, min_nodes=1)
    assert codec.status_of(wire(reply)).unit == "round"
