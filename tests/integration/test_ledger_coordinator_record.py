"""A node whose ledger lost releases the coordinator saw refuses to train (issue 22).

Real coordinator and node over mutual TLS, real DP-SGD. The node's ledger and its anchor
are both deleted between two starts — what root on the node can do, and what the
ledger's own checks cannot catch (a fresh ledger is consistent). The coordinator's
record of the node's ε is the check that remains.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Consortium, rounds_of

from primia.federated.coordinator import FederationFailed
from primia.federated.policy import NodePolicy
from primia.federated.privacy_record import FILENAME
from primia.rpc.coordinator_server import CoordinatorServer
from primia.train.ledger import PrivacyLedger
from primia.train.ledger_chain import anchor_path
from primia.train.ledger_repair import repair

PLAINTEXT_ALLOWED = NodePolicy(aggregation=("secure", "plaintext"))
"""One node: secure aggregation needs more, so its policy must allow plaintext."""


def test_a_node_whose_ledger_forgot_releases_refuses_until_repaired(
    consortium: Consortium, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir, state = tmp_path / "run", tmp_path / "state-site0"
    ledger_path = state / "privacy-ledger.jsonl"

    def coordinator(rounds: int) -> CoordinatorServer:
        config = consortium.coordinator_config(
            run_dir,
            roster=["site0"],
            rounds=rounds,
            min_nodes=1,
            startup_wait_s=20.0,
            node_wait_s=20.0,
            max_attempts=1,
            aggregation="plaintext",  # one node: secure aggregation needs two
        )
        return CoordinatorServer(config)

    first = coordinator(rounds=1)
    port = first.start()
    consortium.start_node(consortium.node_config("site0", port, state, policy=PLAINTEXT_ALLOWED))
    first.run()
    spent = PrivacyLedger.open(ledger_path, accountant="rdp").spent_epsilon()
    recorded = json.loads((run_dir / FILENAME).read_text())["nodes"]["site0"]["epsilon_spent"]
    assert spent > 0.5 and recorded == pytest.approx(spent)

    ledger_path.unlink()  # both files: the ledger's own checks cannot tell
    anchor_path(ledger_path).unlink()

    second = coordinator(rounds=2)
    port = second.start()
    node = consortium.start_node(
        consortium.node_config("site0", port, state, policy=PLAINTEXT_ALLOWED)
    )
    # Without the coordinator's record the node would train: its new ledger says 0.
    assert node.owner.ledger.spent_epsilon() == 0.0
    with pytest.raises(FederationFailed):
        second.run()
    (status,) = second.registry.statuses()
    assert "refuses to train" in status.ledger_alarm and f"{recorded:.4g}" in status.ledger_alarm
    assert "refuses to train" in caplog.text and "ledger_integrity" in caplog.text
    assert PrivacyLedger.open(ledger_path, accountant="rdp").releases() == []
    assert [r["round"] for r in rounds_of(run_dir)] == [1]

    # The operator carries the coordinator's figure into the ledger; the node then trains.
    repair(ledger_path, at_least=recorded, accept=True, unit="patient")
    assert node.owner.check_coordinator_record(recorded) is None
    node.stop()
