"""What cannot change is not retried, and a node never fails silently (issue 29).

Real gRPC with mutual TLS, real DP-SGD (RDP accounting, as in the other federation
tests). A node whose refusal would recur is refused at Join (or leaves the run at its
first such refusal) and the run stops at once, naming it; the healthy nodes' ledgers hold
no release for a round that could not complete, or hold it marked abandoned. Nodes with
TLS files that cannot work stop with ``primia check``'s diagnosis, and nodes started to
exit when done exit after a failed federation too.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import SITES, Consortium, rounds_of

from primia import pki
from primia.data.synth import FINDINGS
from primia.federated.coordinator import FederationFailed
from primia.federated.data_owner import DataSettings, PrivacySettings
from primia.rpc.coordinator_server import CoordinatorServer
from primia.rpc.node_client import FederationEnded, JoinRefused, NodeClient, PlanRefused
from primia.rpc.probe import ProbeFailed, probe
from primia.train.ledger import PrivacyLedger, Release


def _releases(tmp_path: Path, site: str) -> list[Release]:
    path = tmp_path / f"state-{site}" / "privacy-ledger.jsonl"
    if not path.exists():
        return []
    return PrivacyLedger.open(path, accountant="rdp").releases()


def _run(server: CoordinatorServer) -> BaseException | None:
    """The federation's rounds on this thread; what they raised, if anything."""
    try:
        server.job.run()
    except BaseException as error:
        return error
    return None


def _wait_ended(consortium: Consortium, sites: tuple[str, ...], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(site in consortium.ended for site in sites):
        assert time.monotonic() < deadline, f"nodes still serving: {consortium.ended}"
        time.sleep(0.1)


def test_labels_in_another_order_are_refused_at_join_and_no_round_charges_anyone(
    consortium: Consortium, tmp_path: Path
) -> None:
    server = CoordinatorServer(
        consortium.coordinator_config(tmp_path / "run", min_nodes=3, max_attempts=3)
    )
    port = server.start()
    reordered = {
        "site2": DataSettings(
            path=consortium.data, site="site2", label_columns=[*reversed(FINDINGS)]
        )
    }
    for site in SITES:
        overrides: dict[str, Any] = {"data": reordered[site]} if site in reordered else {}
        consortium.start_node(
            consortium.node_config(site, port, tmp_path / f"state-{site}", **overrides)
        )
    try:
        error = _run(server)
        status = {node.name: node for node in server.registry.statuses()}
    finally:
        server.stop()
    assert isinstance(error, FederationFailed)
    message = str(error)
    assert "site2 refused to join: incompatible_model" in message
    assert "data.label_columns" in message and "no round was retried" in message
    assert "privacy budget" not in message
    assert status["site2"].last_refusal.startswith("at join: incompatible_model")
    assert rounds_of(tmp_path / "run") == []
    for site in SITES:
        assert _releases(tmp_path, site) == []  # no round ran: nobody was charged
    _wait_ended(consortium, SITES, timeout=30)
    assert isinstance(consortium.ended["site2"], PlanRefused)
    assert "label_columns" in str(consortium.ended["site2"])
    for site in ("site0", "site1"):  # --exit-when-done nodes exit after the failure too
        assert isinstance(consortium.ended[site], FederationEnded)
        assert "site2 refused to join" in str(consortium.ended[site])


def test_a_budget_spent_mid_run_stops_the_run_without_retrying_the_round(
    consortium: Consortium, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """site2's budget holds one round (ε ≈ 1 each), not two: its refusal of round 2
    recurs, so round 2 is not tried again (max_attempts = 3) and the others' releases for
    its one attempt are marked abandoned, still charged."""
    server = CoordinatorServer(
        consortium.coordinator_config(
            tmp_path / "run", rounds=3, min_nodes=3, max_attempts=3, final_test=False
        )
    )
    port = server.start()
    for site in SITES:
        privacy = PrivacySettings(epsilon_budget=1.2 if site == "site2" else 10.0, accountant="rdp")
        consortium.start_node(
            consortium.node_config(site, port, tmp_path / f"state-{site}", privacy=privacy)
        )
    try:
        error = _run(server)
    finally:
        server.stop()
    assert isinstance(error, FederationFailed)
    assert "site2 refused round 2: budget_exceeded" in str(error)
    assert [record["round"] for record in rounds_of(tmp_path / "run")] == [1]
    for site in ("site0", "site1"):
        first, second = _releases(tmp_path, site)  # round 1, and round 2's one attempt
        assert first.abandoned == ""
        assert second.abandoned.startswith(f"{server.federation.run_id}-r2a1-{site}")
        assert "round 2, attempt 1" in second.abandoned
    assert len(_releases(tmp_path, "site2")) == 1
    assert sum("was never used" in r.getMessage() for r in caplog.records) >= 2


def _serve_briefly(consortium: Consortium, port: int, tmp_path: Path, tls: pki.TLSFiles) -> Any:
    """What serve() raises for a node with ``tls``, within 20 s (else it retries on)."""
    client = NodeClient.from_config(
        consortium.node_config("site0", port, tmp_path / "state", tls=tls), default_image_size=32
    )
    ended: list[BaseException] = []

    def serve() -> None:
        try:
            client.serve()
        except BaseException as error:
            ended.append(error)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    thread.join(timeout=20)
    client.stop()
    assert ended, "the node kept retrying"
    return ended[0]


def test_a_node_with_a_foreign_ca_stops_with_the_diagnosis_of_primia_check(
    consortium: Consortium, tmp_path: Path, foreign_pki: Path
) -> None:
    server = CoordinatorServer(consortium.coordinator_config(tmp_path / "run"))
    port = server.start()
    address = f"127.0.0.1:{port}"
    consortium_site0 = consortium.nodes["site0"]
    foreign = pki.tls_files(foreign_pki, "site0")
    try:
        # A certificate of another CA beside the consortium's ca.pem: the coordinator
        # closes the socket; the node's own files say why.
        mixed = pki.TLSFiles(consortium_site0.ca, foreign.certificate, foreign.key)
        # The other CA's files throughout: the handshake fails on the coordinator's
        # certificate.
        for files, expected in (
            (mixed, "does not verify against"),
            (foreign, "TLS handshake failed on a certificate"),
        ):
            error = _serve_briefly(consortium, port, tmp_path / expected[:4], files)
            assert isinstance(error, JoinRefused)
            with pytest.raises(ProbeFailed) as checked:
                probe(address, files, size=0)
            hint = str(checked.value).split(". ", 1)[1]
            assert expected in hint and "retrying cannot fix" in hint
            assert str(error).endswith(hint)  # the node says what primia check says
    finally:
        server.stop()


def test_nodes_that_exit_when_done_exit_after_a_failed_federation(
    consortium: Consortium, tmp_path: Path
) -> None:
    """min_nodes = 3, and site2 never comes: the run fails without a round."""
    server = CoordinatorServer(
        consortium.coordinator_config(
            tmp_path / "run", min_nodes=3, startup_wait_s=2.0, node_wait_s=2.0, max_attempts=1
        )
    )
    port = server.start()
    two = ("site0", "site1")
    for site in two:
        consortium.start_node(consortium.node_config(site, port, tmp_path / f"state-{site}"))
    try:
        error = _run(server)
    finally:
        server.stop()
    assert isinstance(error, FederationFailed)
    _wait_ended(consortium, two, timeout=30)
    for site in two:
        ended = consortium.ended[site]
        assert isinstance(ended, FederationEnded)
        assert "the federation failed" in str(ended) and "min_nodes=3" in str(ended)
