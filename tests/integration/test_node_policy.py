"""A coordinator that asks for more than a hospital's policy allows is refused by the nodes.

Real gRPC with mutual TLS, real DP-SGD. Each deviation is first shown to work against
nodes whose policy allows it (so the test can fail), then refused by nodes with the
default policy (or the hospital's configured one): every node refuses before it trains or
advertises anything, names the setting and the value asked for, and the refusal shows in
``primia status``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import SITES, Consortium, rounds_of

from primia.crypto.secagg import Setup
from primia.federated import aggregation, data_owner, secure
from primia.federated.coordinator import FederationFailed, FederationStatus
from primia.federated.coordinator_config import ModelConfig
from primia.federated.data_owner import DataOwner
from primia.federated.plan import DPPlan, PlanLimits, TrainPlan
from primia.federated.policy import AcceptedModel, NodePolicy
from primia.federated.result import FederationResult
from primia.federated.tasks import LocalTraining, TrainTask
from primia.rpc import node_client
from primia.rpc.coordinator_server import CoordinatorServer
from primia.rpc.status import fetch_status
from primia.train.ledger import PrivacyLedger

ALLOWS_PLAINTEXT = NodePolicy(aggregation=("secure", "plaintext"))


@dataclasses.dataclass
class Outcome:
    result: FederationResult | None
    error: BaseException | None
    status: FederationStatus
    """Fetched over gRPC after the rounds, as ``primia status`` does."""
    ended: dict[str, BaseException | None]
    """How each node's ``serve`` ended (they exit when done)."""


def _federate(
    consortium: Consortium,
    run_dir: Path,
    *,
    coordinator: dict[str, Any],
    nodes: dict[str, Any],
    sites: tuple[str, ...] = SITES,
) -> Outcome:
    """One round at ``sites``; the coordinator keeps serving until its status is read."""
    config = consortium.coordinator_config(
        run_dir, rounds=1, max_attempts=1, final_test=False, **coordinator
    )
    server = CoordinatorServer(config)
    port = server.start()
    consortium.ended.clear()
    clients = [
        consortium.start_node(
            consortium.node_config(site, port, run_dir.parent / f"{run_dir.name}-{site}", **nodes)
        )
        for site in sites
    ]
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = server.job.run()
        except BaseException as error:
            outcome["error"] = error

    runner = threading.Thread(target=run)
    runner.start()
    runner.join(timeout=240)
    try:
        assert not runner.is_alive(), "the federation did not finish"
        deadline = time.monotonic() + 30
        while not set(sites) <= set(consortium.ended):
            assert time.monotonic() < deadline, f"nodes still serving: {consortium.ended}"
            time.sleep(0.1)
        status = fetch_status(f"127.0.0.1:{port}", consortium.coordinator, timeout=10)
    finally:
        server.stop()
        for client in clients:
            client.stop()
    return Outcome(outcome.get("result"), outcome.get("error"), status, dict(consortium.ended))


def _ledger_releases(run_dir: Path, site: str) -> int:
    path = run_dir.parent / f"{run_dir.name}-{site}" / "privacy-ledger.jsonl"
    return len(PrivacyLedger.open(path, accountant="rdp").releases())


def _assert_refused_by_all(
    outcome: Outcome,
    run_dir: Path,
    caplog: pytest.LogCaptureFixture,
    expected: str,
    sites: tuple[str, ...] = SITES,
    *,
    at_join: bool = False,
) -> None:
    """Every node refused, naming ``expected`` (``at_join``: it refused to join, seeing
    the run's plan; else it refused round 1); nothing was trained, nothing aggregated."""
    assert isinstance(outcome.error, FederationFailed)
    assert rounds_of(run_dir) == []
    refusals = {node.name: node.last_refusal for node in outcome.status.nodes}
    when, logged = ("at join", "refused to join") if at_join else ("round 1", "refused task")
    if at_join:
        # The run stops once too few nodes remain: the last refusal may come after.
        refusals = {site: refusal for site, refusal in refusals.items() if refusal}
        assert len(refusals) >= len(sites) - 1
    for site in sites:
        if site in refusals:
            assert refusals[site].startswith(f"{when}: policy: "), refusals[site]
            assert expected in refusals[site]
        if at_join:
            assert isinstance(outcome.ended[site], node_client.PlanRefused)
            assert expected in str(outcome.ended[site])
        assert _ledger_releases(run_dir, site) == 0  # refused before any DP step
    node_log = [r.getMessage() for r in caplog.records if r.name == "primia.rpc.node_client"]
    assert sum(logged in line and expected in line for line in node_log) == len(sites)


@pytest.fixture
def received(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, dict[str, torch.Tensor]]]:
    """What the coordinator decodes of each node's plaintext update."""
    seen: dict[str, dict[str, torch.Tensor]] = {}
    decode_like = aggregation.decode_like

    def recording(data: Any, like: Any, *, what: str) -> dict[str, torch.Tensor]:
        tensors = decode_like(data, like, what=what)
        seen[what.removeprefix("update of ")] = {k: t.clone() for k, t in tensors.items()}
        return tensors

    monkeypatch.setattr(aggregation, "decode_like", recording)
    yield seen


@pytest.fixture
def trained(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, dict[str, torch.Tensor]]]:
    """Each node's update as it left its training, by site."""
    updates: dict[str, dict[str, torch.Tensor]] = {}
    train = DataOwner.train

    def recording(self: DataOwner, task: TrainTask, *args: Any, **kwargs: Any) -> LocalTraining:
        result = train(self, task, *args, **kwargs)
        updates[task.task_id.rsplit("-", 1)[-1]] = result.update
        return result

    monkeypatch.setattr(DataOwner, "train", recording)
    yield updates


def test_a_plaintext_coordinator_is_refused_by_every_node_with_the_default_policy(
    consortium: Consortium,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    received: dict[str, dict[str, torch.Tensor]],
    trained: dict[str, dict[str, torch.Tensor]],
) -> None:
    # Without the policy: the coordinator holds each node's update, bit for bit.
    allowed = _federate(
        consortium,
        tmp_path / "allowed",
        coordinator={"aggregation": "plaintext"},
        nodes={"policy": ALLOWS_PLAINTEXT},
    )
    assert allowed.error is None
    assert set(received) == set(SITES) == set(trained)
    for site in SITES:
        for name, tensor in trained[site].items():
            assert torch.equal(received[site][name], tensor), (site, name)
    received.clear()

    with caplog.at_level(logging.WARNING):
        refused = _federate(
            consortium,
            tmp_path / "refused",
            coordinator={"aggregation": "plaintext"},
            nodes={},
        )
    assert received == {}  # no update reached the coordinator
    _assert_refused_by_all(
        refused, tmp_path / "refused", caplog, "policy.aggregation=['secure']", at_join=True
    )


def test_a_threshold_of_2_among_5_is_refused(
    consortium: Consortium,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The coordinator announces five participants (two it made up) and threshold 2: it
    and any one node could then rebuild a node's masks."""

    def two_of_five(**values: Any) -> Setup:
        participants = tuple(sorted((*values["participants"], "site3", "site4")))
        return Setup(**{**values, "participants": participants, "threshold": 2})

    monkeypatch.setattr(secure, "Setup", two_of_five)
    # Without the check, the nodes take part in the 2-of-5 round and it completes.
    with monkeypatch.context() as unchecked:
        unchecked.setattr(data_owner, "aggregation_problems", lambda policy, setup: [])
        allowed = _federate(consortium, tmp_path / "allowed", coordinator={}, nodes={})
    assert allowed.error is None
    (record,) = rounds_of(tmp_path / "allowed")
    assert record["aggregation"] == "secure" and record["contributors"] == list(SITES)

    with caplog.at_level(logging.WARNING):
        refused = _federate(consortium, tmp_path / "refused", coordinator={}, nodes={})
    _assert_refused_by_all(
        refused,
        tmp_path / "refused",
        caplog,
        "policy.min_threshold=2: the round's threshold is 2 of 5",
    )


def test_a_participant_list_padded_with_a_node_that_never_answers_is_refused(
    consortium: Consortium,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two nodes are connected; the coordinator announces a third (site9) to meet the
    nodes' min_participants = 3, which would make the sum one of two updates."""

    def padded(**values: Any) -> Setup:
        return Setup(**{**values, "participants": (*values["participants"], "site9")})

    monkeypatch.setattr(secure, "Setup", padded)
    two = ("site0", "site1")
    coordinator = {"startup_wait_s": 1.0}
    # Without the roster check the two nodes share, train and upload: a round of two.
    with monkeypatch.context() as unchecked:
        unchecked.setattr(node_client, "roster_problems", lambda policy, advertised: [])
        allowed = _federate(
            consortium, tmp_path / "allowed", coordinator=coordinator, nodes={}, sites=two
        )
    assert allowed.error is None
    assert rounds_of(tmp_path / "allowed")[0]["contributors"] == list(two)

    with caplog.at_level(logging.WARNING):
        refused = _federate(
            consortium, tmp_path / "refused", coordinator=coordinator, nodes={}, sites=two
        )
    expected = "policy.min_participants=3: only 2 participants advertised keys (site0, site1)"
    _assert_refused_by_all(refused, tmp_path / "refused", caplog, expected, sites=two)


@pytest.mark.parametrize(
    ("model", "asked"),
    [
        (ModelConfig(architecture="cnn", width=32, image_size=32), "cnn (width 32)"),
        (ModelConfig(architecture="lenet", image_size=32), "lenet (width 12)"),
    ],
    ids=["wider", "another-architecture"],
)
def test_a_model_outside_the_policy_is_refused(
    consortium: Consortium,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    model: ModelConfig,
    asked: str,
) -> None:
    """The consortium's model is the cnn at its default width; the hospitals list it."""
    consortium_model = NodePolicy(models=(AcceptedModel("cnn"),))
    # A hospital that also lists the asked model trains it.
    listed = dataclasses.replace(
        consortium_model,
        models=(AcceptedModel("cnn"), AcceptedModel(model.architecture, model.width)),
    )
    allowed = _federate(
        consortium,
        tmp_path / "allowed",
        coordinator={"model": model},
        nodes={"policy": listed},
    )
    assert allowed.error is None and rounds_of(tmp_path / "allowed")[0]["contributors"] == list(
        SITES
    )

    with caplog.at_level(logging.WARNING):
        refused = _federate(
            consortium,
            tmp_path / "refused",
            coordinator={"model": model},
            nodes={"policy": consortium_model},
        )
    _assert_refused_by_all(
        refused, tmp_path / "refused", caplog, "policy.models=['cnn (width 16)']", at_join=True
    )
    # the run stops once too few nodes remain, so the last node may not have refused yet
    assert all(asked in node.last_refusal for node in refused.status.nodes if node.last_refusal)


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        (PlanLimits(max_epsilon_per_round=2.0), "dp.epsilon=4.0 is outside (0, 2.0] per round"),
        (PlanLimits(min_noise_multiplier=1.5), "limits.min_noise_multiplier=1.5: "),
    ],
    ids=["epsilon-per-round", "noise-floor"],
)
def test_too_much_epsilon_or_too_little_noise_is_refused(
    consortium: Consortium,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    limits: PlanLimits,
    expected: str,
) -> None:
    """A plan at ε = 4 per round: σ ≈ 1.0–1.2 on these nodes' data."""
    greedy = TrainPlan(epochs=1, batch_size=8, lr=3e-3, dp=DPPlan(epsilon=4.0))
    # The default limits (ε ≤ 10 per round, σ ≥ 0.5) let it train.
    allowed = _federate(consortium, tmp_path / "allowed", coordinator={"plan": greedy}, nodes={})
    assert allowed.error is None
    (record,) = rounds_of(tmp_path / "allowed")
    assert record["contributors"] == list(SITES)
    assert all(train["epsilon"] > 2.0 for train in record["train"].values())

    with caplog.at_level(logging.WARNING):
        refused = _federate(
            consortium,
            tmp_path / "refused",
            coordinator={"plan": greedy},
            nodes={"limits": limits},
        )
    if "dp.epsilon" in expected:
        # A plan limit of the node: refused as an invalid plan, naming the setting.
        assert isinstance(refused.error, FederationFailed)
        for node in refused.status.nodes:
            if node.last_refusal:  # the run stops once too few nodes remain
                assert node.last_refusal.startswith("at join: invalid_plan: " + expected)
                assert "(limits.max_epsilon_per_round)" in node.last_refusal
            assert "(limits.max_epsilon_per_round)" in str(refused.ended[node.name])
            assert _ledger_releases(tmp_path / "refused", node.name) == 0
    else:
        _assert_refused_by_all(refused, tmp_path / "refused", caplog, expected, at_join=True)
