"""Failures across processes: a node killed mid-round, a coordinator killed and restarted."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import tomli_w
from conftest import SITES, Consortium, rounds_of, wait_until

from primia.federated.plan import DPPlan, PlanLimits, TrainPlan
from primia.federated.policy import NodePolicy
from primia.rpc.coordinator_server import CoordinatorServer
from primia.train.ledger import PrivacyLedger


def _primia(arguments: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "primia", *arguments],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )


def test_a_node_killed_mid_round_is_a_dropout(consortium: Consortium, tmp_path: Path) -> None:
    # Long enough local training that the kill lands while the node trains.
    plan = TrainPlan(epochs=40, batch_size=8, lr=3e-3, dp=DPPlan(epsilon=1.0))
    server = CoordinatorServer(consortium.coordinator_config(tmp_path / "run", plan=plan))
    port = server.start()
    limits = PlanLimits(max_epochs=100)
    # Round 2 runs without the killed node: its two survivors must accept a round of two.
    survivors = NodePolicy(min_participants=2)
    for site in ("site0", "site1"):
        consortium.start_node(
            consortium.node_config(
                site, port, tmp_path / f"state-{site}", limits=limits, policy=survivors
            )
        )
    node = consortium.node_config("site2", port, tmp_path / "state-site2")
    config = {
        "coordinator": node.coordinator,
        "state_dir": str(node.state_dir),
        "tls": {k: str(v) for k, v in vars(node.tls).items()},
        "data": {"path": str(node.data.path), "site": "site2"},
        "privacy": {"epsilon_budget": 10.0, "accountant": "rdp"},
        "compute": {"threads": 1},
        "limits": {"max_epochs": 100},
    }
    (tmp_path / "node.toml").write_text(tomli_w.dumps(config))
    victim = _primia(["node", "serve", "--config", str(tmp_path / "node.toml")], tmp_path / "n.log")
    runner = threading.Thread(target=server.run)
    runner.start()
    try:

        def site2_trains() -> bool:
            status = {s.name: s for s in server.registry.statuses()}["site2"]
            return "epoch" in status.activity

        wait_until(site2_trains, 120, "site2 to start training")
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        runner.join(timeout=240)
        assert not runner.is_alive()
    finally:
        if victim.poll() is None:
            victim.kill()

    first, second = rounds_of(tmp_path / "run")
    assert first["contributors"] == ["site0", "site1"]
    assert "site2" in first["dropped"]
    assert second["contributors"] == ["site0", "site1"]
    # The killed node's release was reserved before its first step and never completed:
    # its ledger counts it in full (over-reports, never under-reports).
    ledger = PrivacyLedger.open(tmp_path / "state-site2" / "privacy-ledger.jsonl", accountant="rdp")
    (release,) = ledger.releases()
    assert not release.completed and ledger.spent_epsilon() > 0.9


def test_a_restarted_coordinator_resumes(consortium: Consortium, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run_dir = tmp_path / "run"
    config = {
        "run_dir": str(run_dir),
        "listen": f"127.0.0.1:{port}",
        "roster": list(SITES),
        "rounds": 3,
        "min_nodes": 3,
        "startup_wait_s": 30.0,
        "tls": {k: str(v) for k, v in vars(consortium.coordinator).items()},
        "model": {"architecture": "cnn", "image_size": 32},
        "plan": {"epochs": 3, "batch_size": 8, "dp": {"epsilon": 1.0}},
    }
    config_path = tmp_path / "coordinator.toml"
    config_path.write_text(tomli_w.dumps(config))
    serve = ["coordinator", "serve", "--config", str(config_path), "--no-progress"]
    coordinator = _primia(serve, tmp_path / "first.log")
    for site in SITES:
        consortium.start_node(consortium.node_config(site, port, tmp_path / f"state-{site}"))
    try:
        wait_until(lambda: len(rounds_of(run_dir)) >= 1, 180, "the first round")
        coordinator.send_signal(signal.SIGKILL)
        coordinator.wait()
        done = rounds_of(run_dir)
        coordinator = _primia(serve, tmp_path / "second.log")
        assert coordinator.wait(timeout=240) == 0, (tmp_path / "second.log").read_text()
    finally:
        if coordinator.poll() is None:
            coordinator.kill()

    rounds = rounds_of(run_dir)
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert rounds[: len(done)] == done  # completed rounds are kept, not redone
    assert "resuming run" in (tmp_path / "second.log").read_text()
    report = json.loads((run_dir / "report.json").read_text())
    assert [r["round"] for r in report["rounds"]] == [1, 2, 3]
    # The run's page, with every node's ε per round across the restart.
    page = (run_dir / "report.html").read_text()
    assert "ε spent per node after each round" in page and page.count("<polyline") >= 3
