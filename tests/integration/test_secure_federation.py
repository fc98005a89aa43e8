"""Secure aggregation over real gRPC with mutual TLS: masked inputs, a node lost mid-protocol."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import SITES, Consortium, rounds_of, run_federation

from primia.crypto.keys import KeyPair
from primia.crypto.secagg import AggregationServer, KeyRoster, MaskedInput
from primia.federated.coordinator import FederationFailed
from primia.federated.secure import SecureContribution
from primia.federated.tasks import LocalTraining
from primia.rpc.coordinator_server import CoordinatorServer


def test_a_node_lost_after_sharing_its_secrets_is_unmasked_away(
    consortium: Consortium, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """site2 shares its secrets and trains, then dies before uploading: the survivors' sum
    is still recovered (its pairwise masks are rebuilt from the shares of its mask key)."""
    server = CoordinatorServer(consortium.coordinator_config(tmp_path / "run", rounds=1))
    port = server.start()
    clients = {
        site: consortium.start_node(consortium.node_config(site, port, tmp_path / f"state-{site}"))
        for site in SITES
    }
    masked_input = SecureContribution.masked_input

    def die_at_site2(self: SecureContribution, trained: LocalTraining) -> MaskedInput:
        if self.client.node == "site2":
            clients["site2"].stop()  # cancels its stream, as a crash would
            raise ConnectionError("site2 lost power")
        return masked_input(self, trained)

    monkeypatch.setattr(SecureContribution, "masked_input", die_at_site2)
    report = run_federation(server)

    (record,) = rounds_of(tmp_path / "run")
    assert record["aggregation"] == "secure"
    assert record["contributors"] == ["site0", "site1"]
    assert "site2" in record["dropped"]
    assert all(record["train"][site]["clipped"] == 0 for site in ("site0", "site1"))
    assert report.test is not None and report.test.examples > 0


def test_keys_substituted_by_the_coordinator_are_detected_by_the_nodes(
    consortium: Consortium,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A coordinator that swaps site1's mask key for its own (to unmask site1's input) is
    caught by every node's signature check; the round is abandoned."""
    config = consortium.coordinator_config(tmp_path / "run", rounds=1, max_attempts=1)
    server = CoordinatorServer(config)
    port = server.start()
    for site in SITES:
        consortium.start_node(consortium.node_config(site, port, tmp_path / f"state-{site}"))
    close_keys = AggregationServer.close_keys

    def substitute(self: AggregationServer) -> KeyRoster:
        roster = close_keys(self)
        forged = KeyPair.generate().public
        keys = tuple(
            replace(k, mask_public=forged) if k.node == "site1" else k for k in roster.keys
        )
        return replace(roster, keys=keys)

    monkeypatch.setattr(AggregationServer, "close_keys", substitute)
    with caplog.at_level(logging.WARNING), pytest.raises(FederationFailed):
        run_federation(server)
    assert "are not signed by 'site1'" in caplog.text
    assert not (tmp_path / "run" / "rounds.jsonl").exists() or not rounds_of(tmp_path / "run")
