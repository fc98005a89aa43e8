"""Federations over real gRPC with mutual TLS, real DP-SGD at every node."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import SITES, Consortium, rounds_of, run_federation

from primia.errors import ModelError
from primia.federated.coordinator import FederationFailed
from primia.federated.coordinator_config import ModelConfig
from primia.federated.data_owner import PrivacySettings
from primia.federated.plan import DPPlan, TrainPlan
from primia.models.checkpoint import load_model, save_model
from primia.rpc.coordinator_server import CoordinatorServer
from primia.rpc.status import fetch_status
from primia.train.ledger import PrivacyLedger


def test_two_round_federation(consortium: Consortium, tmp_path: Path) -> None:
    server = CoordinatorServer(consortium.coordinator_config(tmp_path / "run"))
    port = server.start()
    for site in SITES:
        consortium.start_node(consortium.node_config(site, port, tmp_path / f"state-{site}"))

    statuses = []
    watcher = threading.Thread(
        target=lambda: statuses.append(
            fetch_status(f"127.0.0.1:{port}", consortium.nodes["site0"], timeout=5)
        )
    )
    watcher.start()
    report = run_federation(server)
    watcher.join(timeout=10)

    rounds = rounds_of(tmp_path / "run")
    assert [r["round"] for r in rounds] == [1, 2]
    for record in rounds:
        assert record["contributors"] == list(SITES)
        assert record["validation"]["examples"] > 0
        assert set(record["validation"]["per_node"]) == set(SITES)
        # each node's release says what its ε protects: the patient, the nodes' default
        assert {node["unit"] for node in record["train"].values()} == {"patient"}
    assert (tmp_path / "run" / "checkpoints" / "round-0002.safetensors").exists()
    _, spec = load_model(tmp_path / "run" / "model.safetensors")
    assert spec.architecture == "cnn"
    assert report.test is not None and report.test.examples > 0
    assert list(report.nodes) == list(SITES)
    for site in SITES:
        ledger = PrivacyLedger.open(
            tmp_path / f"state-{site}" / "privacy-ledger.jsonl", accountant="rdp"
        )
        releases = ledger.releases()
        assert len(releases) == 2 and all(release.completed for release in releases)
        assert 1.0 < ledger.spent_epsilon() <= 2.0 + 1e-6  # two releases of ε ≤ 1, composed
        assert report.nodes[site].epsilon_spent == ledger.spent_epsilon()
        assert report.nodes[site].rounds_contributed == 2
    assert statuses and statuses[0].rounds == 2 and statuses[0].run_id == report.run_id


def test_a_node_out_of_budget_is_left_out(consortium: Consortium, tmp_path: Path) -> None:
    server = CoordinatorServer(consortium.coordinator_config(tmp_path / "run"))
    port = server.start()
    for site in SITES:
        budget = 1.1 if site == "site2" else 10.0  # enough for one round of ε = 1, not two
        config = consortium.node_config(
            site,
            port,
            tmp_path / f"state-{site}",
            privacy=PrivacySettings(epsilon_budget=budget, accountant="rdp"),
        )
        consortium.start_node(config)
    report = server.run()

    first, second = rounds_of(tmp_path / "run")
    assert first["contributors"] == list(SITES)
    assert second["contributors"] == ["site0", "site1"]
    assert "budget" in second["refused"]["site2"]
    ledger = PrivacyLedger.open(tmp_path / "state-site2" / "privacy-ledger.jsonl", accountant="rdp")
    assert len(ledger.releases()) == 1 and ledger.spent_epsilon() <= 1.1
    assert report.nodes["site2"].rounds_contributed == 1


def test_too_few_nodes_fails_the_round_with_a_clear_error(
    consortium: Consortium, tmp_path: Path
) -> None:
    config = consortium.coordinator_config(
        tmp_path / "run",
        min_nodes=2,
        startup_wait_s=0.5,
        node_wait_s=0.5,
        max_attempts=2,
        plan=TrainPlan(epochs=1, batch_size=8, dp=DPPlan(epsilon=1.0)),
    )
    server = CoordinatorServer(config)
    port = server.start()
    consortium.start_node(consortium.node_config("site0", port, tmp_path / "state-site0"))
    started = time.monotonic()
    with pytest.raises(FederationFailed, match="min_nodes=2"):
        server.run()
    assert time.monotonic() - started < 60


def test_federation_from_a_pre_trained_checkpoint_with_ws_and_ema(
    consortium: Consortium, tmp_path: Path
) -> None:
    """The coordinator's initial weights come from ``init`` (spec checked before serving);
    the nodes train the weight-standardised model and release the EMA of their iterates."""
    model_config = ModelConfig(architecture="cnn", image_size=32, ws=True)
    spec = model_config.spec()
    torch.manual_seed(123)
    start = spec.build()
    save_model(tmp_path / "public.safetensors", start, spec)
    plain = ModelConfig(architecture="cnn", image_size=32)
    with pytest.raises(ModelError, match=r"ws differ.*ws=True.*ws=False"):
        CoordinatorServer(
            consortium.coordinator_config(
                tmp_path / "refused", model=plain, init=tmp_path / "public.safetensors"
            )
        )
    # lr 1e-12 (Adam's steps are about lr): the released model stays at the start it got
    plan = TrainPlan(epochs=1, batch_size=8, lr=1e-12, ema_decay=0.9, dp=DPPlan(epsilon=1.0))
    config = consortium.coordinator_config(
        tmp_path / "run",
        rounds=1,
        model=model_config,
        plan=plan,
        init=tmp_path / "public.safetensors",
    )
    server = CoordinatorServer(config)
    port = server.start()
    for site in SITES:
        consortium.start_node(consortium.node_config(site, port, tmp_path / f"state-{site}"))
    run_federation(server)
    trained, trained_spec = load_model(tmp_path / "run" / "model.safetensors")
    assert trained_spec.ws
    for name, tensor in start.state_dict().items():
        torch.testing.assert_close(trained.state_dict()[name], tensor, rtol=0, atol=1e-6)
