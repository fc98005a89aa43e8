"""A coordinator that lies to the nodes (issue 20), over real gRPC with mutual TLS.

The coordinator is the real one, made to deviate by hooks on its own classes (its node
sessions and its secure-aggregation state machine); the nodes are real nodes training
with DP-SGD. Each attack is run twice: against the nodes as shipped (the round fails and
nothing is learned) and against nodes built without the check (the attack works), so
each test would fail if the check did nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from conftest import Consortium, rounds_of, run_federation

from primia import pki
from primia.blobs import Blob
from primia.crypto.secagg import (
    UNSAFE_WITHOUT_CONSISTENCY_CHECKS,
    AggregationClient,
    AggregationFailed,
    AggregationServer,
    KeyRoster,
    MaskedInput,
    ServerState,
    Setup,
    SurvivorSignature,
    SurvivorSignatures,
    UnmaskRequest,
    UnmaskShares,
)
from primia.crypto.secagg.simulation import unmask_one
from primia.federated import data_owner, secure
from primia.federated.coordinator import FederationFailed
from primia.federated.coordinator_config import SecureAggregationConfig
from primia.federated.secure import SecureAggregator, SecureContribution
from primia.federated.tasks import SecureTask, TrainTask
from primia.federated.used_sessions import USED_SESSIONS_FILENAME
from primia.rpc.coordinator_server import CoordinatorServer
from primia.rpc.coordinator_session import NodeSession

TARGET = "site0"


def _names(nodes: int) -> list[str]:
    return [f"site{i}" for i in range(nodes)]


def _start(
    consortium: Consortium,
    tmp_path: Path,
    nodes: int,
    threshold: int = 0,
    monkeypatch: pytest.MonkeyPatch | None = None,
    rounds: int = 1,
) -> CoordinatorServer:
    """A coordinator for one round of ``nodes`` nodes (data of the 3 synthetic sites,
    reused) and the nodes, started.

    A threshold of at most half the nodes is refused by every node's policy before keys
    are advertised (tests/integration/test_node_policy.py); to test the consistency
    round as the second line of defence, ``monkeypatch`` lifts that policy check."""
    if monkeypatch is not None and 0 < 2 * threshold <= nodes:
        monkeypatch.setattr(data_owner, "aggregation_problems", lambda policy, setup: [])
    names = _names(nodes)
    for name in names:
        if name not in consortium.nodes:
            if not (consortium.pki_dir / f"{name}.pem").exists():
                pki.issue(consortium.pki_dir, name, "node")
            consortium.nodes[name] = pki.tls_files(consortium.pki_dir, name)
    config = consortium.coordinator_config(
        tmp_path / "run",
        rounds=rounds,
        max_attempts=1,
        roster=names,
        secure_aggregation=SecureAggregationConfig(threshold=threshold),
    )
    server = CoordinatorServer(config)
    port = server.start()
    for index, name in enumerate(names):
        node = consortium.node_config(name, port, tmp_path / f"state-{name}")
        node = replace(node, data=replace(node.data, site=f"site{index % 3}"))
        consortium.start_node(node)
    return server


def _without_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test-only seam: every node and the coordinator built without the checks."""
    for cls in (SecureContribution, SecureAggregator):
        original = cls.__init__

        def unchecked(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> None:
            _original(self, *args, **{**kwargs, "checks": UNSAFE_WITHOUT_CONSISTENCY_CHECKS})

        monkeypatch.setattr(cls, "__init__", unchecked)


@pytest.fixture
def consortium_of_five(consortium: Consortium) -> Iterator[Consortium]:
    yield consortium
    for name in ("site3", "site4"):
        consortium.nodes.pop(name, None)


# ---- one model for everyone ------------------------------------------------------------


def _other_weights_for(monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    """The coordinator sends ``target`` weights of its own (one value altered)."""
    train = NodeSession.train

    def train_differently(self: NodeSession, task: TrainTask) -> Any:
        if self.name == target:
            data = bytearray(task.weights.data)
            data[-1] ^= 0x01
            task = replace(task, weights=Blob.of(task.weights.blob_id + "-crafted", data))
        return train(self, task)

    monkeypatch.setattr(NodeSession, "train", train_differently)


def test_other_weights_for_one_node_abort_the_round_naming_it(
    consortium: Consortium,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _other_weights_for(monkeypatch, "site2")
    server = _start(consortium, tmp_path, 3)
    with caplog.at_level(logging.WARNING), pytest.raises(FederationFailed):
        run_federation(server)
    assert "told ['site2'] a different round" in caplog.text
    assert "site2: other weights" in caplog.text
    assert rounds_of(tmp_path / "run") == []


def test_without_the_check_other_weights_for_one_node_go_unnoticed(
    consortium: Consortium, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _other_weights_for(monkeypatch, "site2")
    _without_checks(monkeypatch)
    run_federation(_start(consortium, tmp_path, 3))
    (record,) = rounds_of(tmp_path / "run")
    assert record["contributors"] == ["site0", "site1", "site2"]


def _other_participants_for(monkeypatch: pytest.MonkeyPatch, target: str, hidden: str) -> None:
    """The coordinator tells ``target`` the round is without ``hidden`` (a smaller round),
    and keeps ``hidden``'s keys from ``target``'s roster to match."""
    train, send_roster = NodeSession.train, NodeSession.send_roster

    def train_differently(self: NodeSession, task: TrainTask) -> Any:
        if self.name == target and task.secure is not None:
            setup = task.secure.setup
            smaller = tuple(name for name in setup.participants if name != hidden)
            secure = SecureTask(replace(setup, participants=smaller), task.secure.weight_unit)
            task = replace(task, secure=secure)
        return train(self, task)

    def roster_differently(self: NodeSession, task_id: str, roster: KeyRoster) -> Any:
        if self.name == target:
            roster = replace(roster, keys=tuple(k for k in roster.keys if k.node != hidden))
        return send_roster(self, task_id, roster)

    monkeypatch.setattr(NodeSession, "train", train_differently)
    monkeypatch.setattr(NodeSession, "send_roster", roster_differently)


def _count_shares(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    senders: list[str] = []
    receive = AggregationServer.receive_shares

    def counted(self: AggregationServer, node: str, bundle: Any) -> None:
        senders.append(node)
        receive(self, node, bundle)

    monkeypatch.setattr(AggregationServer, "receive_shares", counted)
    return senders


def test_a_participant_list_that_differs_between_nodes_aborts_the_round(
    consortium_of_five: Consortium,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _other_participants_for(monkeypatch, "site3", hidden="site1")
    senders = _count_shares(monkeypatch)
    server = _start(consortium_of_five, tmp_path, 4)
    with caplog.at_level(logging.WARNING), pytest.raises(FederationFailed):
        run_federation(server)
    assert "told ['site3'] a different round" in caplog.text
    assert "site3: other participants" in caplog.text
    assert senders == []


def test_without_the_check_a_differing_participant_list_goes_unnoticed(
    consortium_of_five: Consortium, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _other_participants_for(monkeypatch, "site3", hidden="site1")
    senders = _count_shares(monkeypatch)
    _without_checks(monkeypatch)
    server = _start(consortium_of_five, tmp_path, 4)
    # the round may fail later (the Shamir indices disagree), but no check caught the lie
    with contextlib.suppress(FederationFailed):
        run_federation(server)
    assert sorted(senders) == ["site0", "site1", "site2", "site3"]


# ---- a session id used twice ----------------------------------------------------------


def test_a_session_id_reused_in_a_later_round_is_refused_by_every_node(
    consortium: Consortium,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The coordinator gives round 2 round 1's session id, under which round 1's survivor
    signatures would verify again (tests/unit/test_secagg_consistency.py shows them
    unmasking a node): every node refuses round 2 before it advertises keys."""
    reused = bytes(range(16))
    monkeypatch.setattr(secure, "os", SimpleNamespace(urandom=lambda size: reused[:size]))
    server = _start(consortium, tmp_path, 3, rounds=2)
    with caplog.at_level(logging.WARNING), pytest.raises(FederationFailed):
        run_federation(server)
    assert [record["round"] for record in rounds_of(tmp_path / "run")] == [1]
    message = f"reused secure-aggregation session {reused.hex()}"
    assert caplog.text.count(message) >= 3  # each node's refusal, logged at the node
    for name in _names(3):
        used = (tmp_path / f"state-{name}" / USED_SESSIONS_FILENAME).read_text()
        assert used == reused.hex() + "\n"


# ---- the consistency round: different dropout stories ----------------------------------


@dataclass
class Lie:
    """What the lying coordinator tells and gathers."""

    setup: Setup | None = None
    roster: KeyRoster | None = None
    uploads: dict[str, np.ndarray] = field(default_factory=dict)
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    stories: dict[str, UnmaskRequest] = field(default_factory=dict)
    signatures: dict[str, SurvivorSignature] = field(default_factory=dict)
    revealed: dict[str, UnmaskShares] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def story(self, node: str, request: UnmaskRequest) -> UnmaskRequest:
        """The first half of the survivors (the target among them) hear that everyone
        survived, the rest that the target dropped."""
        with self.lock:
            if not self.stories:
                names = list(request.survivors)
                half = (len(names) + 1) // 2
                dead = replace(
                    request,
                    survivors=tuple(n for n in names if n != TARGET),
                    dropped=(TARGET, *request.dropped),
                )
                self.stories = {n: request if i < half else dead for i, n in enumerate(names)}
            return self.stories[node]


def _tell_different_stories(monkeypatch: pytest.MonkeyPatch) -> Lie:
    lie = Lie()
    close_keys, receive_masked = AggregationServer.close_keys, AggregationServer.receive_masked
    mask = AggregationClient.mask
    request_unmask = NodeSession.request_unmask
    request_directly = NodeSession.request_unmask_without_consistency_round
    send_signatures = NodeSession.send_survivor_signatures

    def keys_seen(self: AggregationServer) -> KeyRoster:
        lie.setup, lie.roster = self.setup, close_keys(self)
        return lie.roster

    def upload_seen(self: AggregationServer, node: str, masked: MaskedInput) -> None:
        lie.uploads[node] = masked.values.copy()
        receive_masked(self, node, masked)

    def input_seen(self: AggregationClient, encoded: np.ndarray) -> MaskedInput:
        lie.inputs[self.node] = encoded.copy()  # the truth, to compare with (a test's view)
        return mask(self, encoded)

    def confirmation(self: AggregationServer, node: str, signature: SurvivorSignature) -> None:
        lie.signatures[node] = signature  # a liar verifies nothing

    def close_confirmations(self: AggregationServer) -> SurvivorSignatures:
        self.state = ServerState.UNMASK
        return SurvivorSignatures(self.setup.session, (), ())

    def reveal(self: AggregationServer, node: str, revealed: UnmaskShares) -> None:
        lie.revealed[node] = revealed

    def finish(self: AggregationServer) -> Any:
        raise AggregationFailed("the lying coordinator ends the round")

    def tell(self: NodeSession, task_id: str, request: UnmaskRequest) -> Any:
        return request_unmask(self, task_id, lie.story(self.name, request))

    def tell_directly(self: NodeSession, task_id: str, request: UnmaskRequest) -> Any:
        return request_directly(self, task_id, lie.story(self.name, request))

    def show(self: NodeSession, task_id: str, _: SurvivorSignatures) -> Any:
        story = lie.stories[self.name]
        same = tuple(
            lie.signatures[name]
            for name in sorted(lie.signatures)
            if lie.stories[name].survivors == story.survivors
        )
        return send_signatures(
            self, task_id, SurvivorSignatures(story.session, story.survivors, same)
        )

    for cls, name, hook in (
        (AggregationServer, "close_keys", keys_seen),
        (AggregationServer, "receive_masked", upload_seen),
        (AggregationServer, "receive_confirmation", confirmation),
        (AggregationServer, "close_confirmations", close_confirmations),
        (AggregationServer, "receive_unmask", reveal),
        (AggregationServer, "finish", finish),
        (AggregationClient, "mask", input_seen),
        (NodeSession, "request_unmask", tell),
        (NodeSession, "request_unmask_without_consistency_round", tell_directly),
        (NodeSession, "send_survivor_signatures", show),
    ):
        monkeypatch.setattr(cls, name, hook)
    return lie


def _owners_of_both_secrets(revealed: dict[str, UnmaskShares]) -> set[str]:
    kinds: dict[str, set[str]] = {}
    for message in revealed.values():
        for share in message.shares:
            kinds.setdefault(share.owner, set()).add(share.kind.value)
    return {owner for owner, found in kinds.items() if len(found) == 2}


def _recover(lie: Lie) -> np.ndarray:
    assert lie.setup is not None and lie.roster is not None
    publics = {k.node: k.mask_public for k in lie.roster.keys}
    return unmask_one(lie.setup, TARGET, lie.uploads[TARGET], lie.revealed, publics)


STORIES = [(4, 2), (4, 3), (5, 2), (5, 3)]


@pytest.mark.parametrize(("nodes", "threshold"), STORIES)
def test_different_dropout_stories_unmask_no_one(
    consortium_of_five: Consortium,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    nodes: int,
    threshold: int,
) -> None:
    lie = _tell_different_stories(monkeypatch)
    server = _start(consortium_of_five, tmp_path, nodes, threshold, monkeypatch)
    with pytest.raises(FederationFailed):
        run_federation(server)

    assert set(lie.uploads) == set(_names(nodes))  # every node reached the unmask step
    told_dropped = {n for n, story in lie.stories.items() if TARGET in story.dropped}
    assert told_dropped and not told_dropped & set(lie.revealed)
    if nodes % 2 == 0:
        assert lie.revealed == {}
    assert _owners_of_both_secrets(lie.revealed) == set()
    with pytest.raises(ValueError, match="were revealed"):
        _recover(lie)


@pytest.mark.parametrize(("nodes", "threshold"), STORIES)
def test_without_the_consistency_round_dropout_stories_unmask_the_target(
    consortium_of_five: Consortium,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    nodes: int,
    threshold: int,
) -> None:
    """With t ≤ n/2 the target's update is recovered bit for bit; with t > n/2 the nodes
    still answer the lie (the target's two secrets are both revealed, by different nodes)
    but one side is short of t."""
    lie = _tell_different_stories(monkeypatch)
    _without_checks(monkeypatch)
    server = _start(consortium_of_five, tmp_path, nodes, threshold, monkeypatch)
    with pytest.raises(FederationFailed):
        run_federation(server)

    assert TARGET in _owners_of_both_secrets(lie.revealed)
    if 2 * threshold <= nodes:
        np.testing.assert_array_equal(_recover(lie), lie.inputs[TARGET])
    else:
        with pytest.raises(ValueError, match="were revealed"):
            _recover(lie)
