"""SecureAggregator: the same FedAvg as plaintext, from masked inputs, through every dropout.

The links here are in-process nodes that run the real protocol (SecureContribution over
AggregationClient) and answer at once; only the transport is absent.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from primia import pki
from primia.blobs import Blob
from primia.crypto.ring import ring_bytes
from primia.crypto.secagg import ShareDelivery
from primia.federated.aggregation import PlaintextAggregator
from primia.federated.coordinator import make_aggregator
from primia.federated.coordinator_config import CoordinatorConfig, SecureAggregationConfig
from primia.federated.plan import TrainPlan
from primia.federated.secure import SecureAggregator, SecureContribution, VectorLayout
from primia.federated.server_optimizer import (
    SERVER_OPTIMIZERS,
    ServerOptimizer,
    ServerOptimizerConfig,
)
from primia.federated.tasks import (
    DatasetSummary,
    LocalTraining,
    NodeDropped,
    NodeInfo,
    PrivacyState,
    Refusal,
    TaskRefused,
    TrainOutcome,
    TrainTask,
)
from primia.models.checkpoint import ModelSpec
from primia.pki import TLSFiles

REFERENCE = {"w": torch.zeros(2, 3), "b": torch.zeros(3), "scale": torch.zeros(1)}
PRIVACY = PrivacyState(epsilon_spent=1.0, epsilon_budget=8.0, delta=1e-5, accountant="prv")
NAMES = ("alpha", "bravo", "charlie", "delta")


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TLSFiles]:
    directory = tmp_path_factory.mktemp("pki")
    pki.init_ca(directory, "test")
    return {name: pki.issue(directory, name, "node") for name in (*NAMES, "coordinator")}


def _done(value: Any = None, error: BaseException | None = None) -> Future:
    future: Future = Future()
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
    return future


class InProcessNode:
    """A node that has trained (its update is given) and runs the protocol at once;
    ``leave_before`` names the step it never answers: keys, shares, masked or unmask."""

    def __init__(
        self,
        name: str,
        update: dict[str, torch.Tensor],
        examples: int,
        tls: TLSFiles,
        leave_before: str | None = None,
    ) -> None:
        self.name = name
        self.info = NodeInfo(
            dataset=DatasetSummary("multilabel", ("x",), examples, 1, 1),
            privacy=PRIVACY,
            device="cpu",
            software_version="test",
        )
        self.ca, self.certificate, self.key = tls.read()
        self.update, self.examples, self.leave_before = update, examples, leave_before
        self.contribution: SecureContribution | None = None
        self.outcome: Future = Future()
        self.errors: list[str] = []

    def _outcome(self, update: Blob, clipped: int = 0) -> TrainOutcome:
        return TrainOutcome(
            update=update,
            num_examples=self.examples,
            train_loss=0.1,
            steps=1,
            seconds=0.01,
            release=None,
            privacy=PRIVACY,
            clipped=clipped,
        )

    def _gone(self, step: str) -> bool:
        return self.leave_before == step

    def train(self, task: TrainTask) -> Future:
        assert task.secure is not None
        self.contribution = SecureContribution(
            task,
            self.name,
            certificate_pem=self.certificate,
            key_pem=self.key,
            ca_pem=self.ca,
        )
        return self.outcome

    def advertised_keys(self, task_id: str) -> Future:
        assert self.contribution is not None
        if self._gone("keys"):
            return _done(error=NodeDropped(f"{self.name} left"))
        return _done(self.contribution.client.advertise())

    def send_roster(self, task_id: str, roster: Any) -> Future:
        assert self.contribution is not None
        if self._gone("shares"):
            return _done(error=NodeDropped(f"{self.name} left"))
        return _done(self.contribution.client.share(roster))

    def deliver_shares(self, task_id: str, delivery: ShareDelivery) -> None:
        assert self.contribution is not None
        if self._gone("masked"):
            self.outcome.set_exception(NodeDropped(f"{self.name} left"))
            return
        self.contribution.client.receive_shares(delivery)
        trained = LocalTraining(
            update=self.update,
            num_examples=self.examples,
            train_loss=0.1,
            steps=1,
            release=None,
            privacy=PRIVACY,
            started=0.0,
        )
        masked = self.contribution.masked_input(trained)
        upload = Blob.of("masked", ring_bytes(masked.values))
        self.outcome.set_result(self._outcome(upload, clipped=masked.clipped))

    def request_unmask(self, task_id: str, request: Any) -> Future:
        assert self.contribution is not None
        if self._gone("unmask"):
            return _done(error=NodeDropped(f"{self.name} left"))
        return _done(self.contribution.client.confirm(request))

    def send_survivor_signatures(self, task_id: str, signatures: Any) -> Future:
        assert self.contribution is not None
        return _done(self.contribution.client.unmask(signatures))

    def report_error(self, detail: str) -> None:
        self.errors.append(detail)


def make_task(link: Any) -> TrainTask:
    return TrainTask(
        task_id=f"task-{link.name}",
        round=1,
        spec=ModelSpec("cnn", num_outputs=3),
        weights=Blob.of("weights", b""),
        plan=TrainPlan(),
    )


def random_update(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(t.shape, generator=generator) for name, t in REFERENCE.items()}


def secure(consortium: dict[str, TLSFiles], **settings: Any) -> SecureAggregator:
    ca_pem, _, _ = consortium["coordinator"].read()
    return SecureAggregator(SecureAggregationConfig(**settings), ca_pem=ca_pem)


def plaintext_mean(updates: dict[str, dict[str, torch.Tensor]], counts: dict[str, int]):
    total = sum(counts[name] for name in updates)
    return {
        tensor: sum(counts[name] * updates[name][tensor] for name in updates) / total
        for tensor in REFERENCE
    }


@pytest.mark.parametrize("bits", [32, 64])
def test_secure_fedavg_equals_plaintext_fedavg(consortium, bits):
    updates = {name: random_update(seed) for seed, name in enumerate(NAMES)}
    counts = {"alpha": 10, "bravo": 30, "charlie": 60, "delta": 25}
    links = [InProcessNode(n, updates[n], counts[n], consortium[n]) for n in NAMES]
    result = secure(consortium, ring_bits=bits).collect(
        links, make_task, reference=REFERENCE, timeout=5
    )
    assert result.failure is None
    assert result.contributors == sorted(NAMES)
    mean = result.mean_update()
    expected = plaintext_mean(updates, counts)
    for tensor in REFERENCE:
        assert mean[tensor].dtype == torch.float32
        assert torch.allclose(mean[tensor], expected[tensor], atol=1e-6), tensor


@pytest.mark.parametrize("step", ["keys", "shares", "masked", "unmask"])
def test_a_node_leaving_at_any_step_is_recovered(consortium, step):
    updates = {name: random_update(seed) for seed, name in enumerate(NAMES)}
    counts = dict.fromkeys(NAMES, 20)
    links = [
        InProcessNode(n, updates[n], counts[n], consortium[n], (n == "bravo" and step) or None)
        for n in NAMES
    ]
    result = secure(consortium).collect(links, make_task, reference=REFERENCE, timeout=5)
    # a node that uploaded its masked input is in the sum even if it leaves afterwards
    included = list(NAMES) if step == "unmask" else [n for n in NAMES if n != "bravo"]
    assert result.contributors == included
    if step != "unmask":
        assert "bravo" in result.dropped
    expected = plaintext_mean({n: updates[n] for n in included}, counts)
    for tensor in REFERENCE:
        assert torch.allclose(result.mean_update()[tensor], expected[tensor], atol=1e-6)


def test_below_the_threshold_the_round_fails_and_reveals_nothing(consortium):
    links = [
        InProcessNode(n, random_update(i), 10, consortium[n], None if i < 2 else "masked")
        for i, n in enumerate(NAMES)
    ]
    result = secure(consortium, threshold=3).collect(
        links, make_task, reference=REFERENCE, timeout=5
    )
    assert result.contributors == []
    assert result.failure is not None and "threshold" in result.failure
    assert result.weighted_sum == {}


def test_a_refusing_node_is_listed_as_refused(consortium):
    links = [InProcessNode(n, random_update(i), 10, consortium[n]) for i, n in enumerate(NAMES)]
    refusal = TaskRefused(Refusal.BUDGET_EXCEEDED, "ε would reach 9 of 8")
    links[0].advertised_keys = lambda task_id: _done(error=refusal)  # type: ignore[method-assign]
    result = secure(consortium).collect(links, make_task, reference=REFERENCE, timeout=5)
    assert "budget_exceeded" in result.refused["alpha"]
    assert result.contributors == list(NAMES[1:])


def test_values_beyond_the_clip_are_clipped_and_counted(consortium):
    big = {name: torch.full_like(t, 100.0) for name, t in REFERENCE.items()}
    links = [
        InProcessNode("alpha", big, 10, consortium["alpha"]),
        InProcessNode("bravo", random_update(1), 10, consortium["bravo"]),
    ]
    result = secure(consortium, clip=8.0).collect(links, make_task, reference=REFERENCE, timeout=5)
    assert result.outcomes["alpha"].clipped == 10  # every value of its update
    assert result.outcomes["bravo"].clipped == 0


def test_vector_layout_round_trips_in_sorted_order():
    state = {"z": torch.arange(3.0), "a": torch.arange(4.0).reshape(2, 2)}
    layout = VectorLayout.of(state)
    assert layout.names == ("a", "z") and layout.length == 8
    vector = layout.flatten(state, 0.5)
    np.testing.assert_array_equal(vector, [0, 0.5, 1, 1.5, 0, 0.5, 1, 0.5])
    assert vector.dtype == np.float32
    tensors, weight = layout.unflatten(vector.astype(np.float64) / 0.5)
    assert weight == 1.0
    assert torch.equal(tensors["a"], state["a"].double()) and torch.equal(
        tensors["z"], state["z"].double()
    )


def test_vector_layout_refuses_integer_tensors():
    with pytest.raises(ValueError, match="floating point"):
        VectorLayout.of({"steps": torch.zeros(2, dtype=torch.int64)})


def _coordinator_config(tls: TLSFiles, tmp_path: Path, **values: Any) -> CoordinatorConfig:
    return CoordinatorConfig(tls=tls, roster=["alpha", "bravo"], run_dir=tmp_path, **values)


def test_secure_aggregation_is_the_default_and_plaintext_is_logged(consortium, tmp_path, caplog):
    tls = consortium["coordinator"]
    assert isinstance(make_aggregator(_coordinator_config(tls, tmp_path)), SecureAggregator)
    with caplog.at_level(logging.WARNING):
        aggregator = make_aggregator(_coordinator_config(tls, tmp_path, aggregation="plaintext"))
    assert isinstance(aggregator, PlaintextAggregator)
    assert "sees every node's update" in caplog.text


class Weights(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        for name, tensor in REFERENCE.items():
            self.register_parameter(name, torch.nn.Parameter(tensor.clone()))


@pytest.mark.parametrize("name", SERVER_OPTIMIZERS)
def test_each_server_optimizer_gives_the_same_model_from_secure_and_plaintext_sums(
    consortium, name
):
    config = ServerOptimizerConfig(name=name, lr=0.1)
    counts = {"alpha": 10, "bravo": 30, "charlie": 60, "delta": 25}
    from_secure, from_plaintext = Weights(), Weights()
    secure_optimizer, plaintext_optimizer = ServerOptimizer(config), ServerOptimizer(config)
    for round_number in range(3):
        updates = {n: random_update(10 * round_number + s) for s, n in enumerate(NAMES)}
        links = [InProcessNode(n, updates[n], counts[n], consortium[n]) for n in NAMES]
        result = secure(consortium).collect(links, make_task, reference=REFERENCE, timeout=5)
        secure_optimizer.step(from_secure, result.weighted_sum, result.total_weight)
        total = sum(counts.values())
        sums = {t: total * mean.double() for t, mean in plaintext_mean(updates, counts).items()}
        plaintext_optimizer.step(from_plaintext, sums, total)
    for tensor in REFERENCE:
        difference = getattr(from_secure, tensor) - getattr(from_plaintext, tensor)
        assert difference.abs().max() < 1e-4, tensor
    assert not torch.equal(from_secure.w, torch.zeros(2, 3))
