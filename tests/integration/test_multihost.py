"""primia across hosts: each party in its own network namespace (see ``netns.py``).

A coordinator host, three hospital hosts and the inference hosts, each with its own
address on a bridge; every process runs inside its host's namespace, so all traffic
crosses the virtual network with mutual TLS, as between institutions. Skipped, with the
reason, where namespaces cannot be made (no root); CI runs them.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import torch
from conftest import SITES, rounds_of, wait_until
from netns import Host, VirtualNetwork, unavailable
from safetensors.torch import load_file

from primia import pki
from primia.data import open_dataset
from primia.models import build_model
from primia.models.checkpoint import ModelSpec, save_model
from primia.train.ledger import PrivacyLedger

REASON = unavailable()
pytestmark = [
    pytest.mark.skipif(REASON is not None, reason=f"multi-host tests skipped: {REASON}"),
    pytest.mark.slow,
]

COORDINATOR_PORT = 50051
RELAY_PORT = 50052
ENV = {"OMP_NUM_THREADS": "1"}


@pytest.fixture
def network() -> Iterator[VirtualNetwork]:
    with VirtualNetwork() as net:
        yield net


def _primia(host: Host, arguments: list[str], log: Path) -> subprocess.Popen[bytes]:
    return host.run([sys.executable, "-m", "primia", *arguments], log=log, env=ENV)


def _listening(address: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((address, port)) == 0


def _round_trip(address: str, port: int) -> float:
    """Seconds from sending a malformed TLS record to the server's answer (an alert, or
    the connection closed)."""
    with socket.create_connection((address, port), timeout=10) as connection:
        started = time.monotonic()
        connection.sendall(b"\xff\x03\x03\x00\x01\x00")  # an unknown record type
        connection.recv(1)
        return time.monotonic() - started


def _tls(pki_dir: Path, name: str) -> dict[str, str]:
    return {k: str(v) for k, v in vars(pki.tls_files(pki_dir, name)).items()}


@dataclass
class Federation:
    coordinator: Host
    hospitals: dict[str, Host]
    run_dir: Path
    logs: list[Path]
    """The coordinator's log first, then one per hospital."""
    process: subprocess.Popen[bytes]
    """The coordinator's process."""

    def finish(self, timeout: float = 300) -> list[dict[str, Any]]:
        """Wait for the coordinator's process to exit cleanly; the rounds."""
        process = self.process
        wait_until(lambda: process.poll() is not None, timeout, "the federation", *self.logs)
        assert process.returncode == 0, self.logs[0].read_text()[-3000:]
        return rounds_of(self.run_dir)


def _start_federation(
    net: VirtualNetwork,
    pki_dir: Path,
    data: Path,
    tmp_path: Path,
    *,
    rounds: int,
    min_nodes: int,
    plan: dict[str, Any],
    dial_port: int = COORDINATOR_PORT,
    **overrides: Any,
) -> Federation:
    """A coordinator host and one host per site; the nodes dial the coordinator's address
    at ``dial_port`` (another port than the coordinator's when a relay sits between)."""
    coordinator = net.add_host("coordinator")
    hospitals = {site: net.add_host(site) for site in SITES}
    run_dir = tmp_path / "run"
    config = {
        "run_dir": str(run_dir),
        "listen": f"{coordinator.address}:{COORDINATOR_PORT}",
        "roster": list(SITES),
        "rounds": rounds,
        "min_nodes": min_nodes,
        "startup_wait_s": 60.0,
        "node_wait_s": 60.0,
        "round_timeout_s": 120.0,
        "final_test": False,
        "tls": _tls(pki_dir, "coordinator"),
        "model": {"architecture": "cnn", "width": 4, "image_size": 32},
        "plan": plan,
        **overrides,
    }
    (tmp_path / "coordinator.toml").write_text(tomli_w.dumps(config))
    serve = ["coordinator", "serve", "--config", str(tmp_path / "coordinator.toml")]
    process = _primia(coordinator, [*serve, "--no-progress"], tmp_path / "coordinator.log")
    for site, host in hospitals.items():
        node = {
            "coordinator": f"{coordinator.address}:{dial_port}",
            "state_dir": str(tmp_path / f"state-{site}"),
            "reconnect_max_s": 1.0,
            "exit_when_done": True,
            "tls": _tls(pki_dir, site),
            "data": {"path": str(data), "site": site},
            "privacy": {"epsilon_budget": 10.0, "accountant": "rdp"},
            "compute": {"threads": 1},
        }
        (tmp_path / f"{site}.toml").write_text(tomli_w.dumps(node))
        _primia(
            host,
            ["node", "serve", "--config", str(tmp_path / f"{site}.toml")],
            tmp_path / f"{site}.log",
        )
    logs = [tmp_path / name for name in ("coordinator.log", *(f"{s}.log" for s in SITES))]
    return Federation(coordinator, hospitals, run_dir, logs, process)


StartFederation = Callable[..., Federation]


@pytest.fixture
def start_federation(
    network: VirtualNetwork, consortium_pki: Path, synth_data: Path, tmp_path: Path
) -> StartFederation:
    """:func:`_start_federation` on this test's network, certificates, data and folder."""
    return functools.partial(_start_federation, network, consortium_pki, synth_data, tmp_path)


def test_a_federation_with_secure_aggregation_runs_across_hosts(
    start_federation: StartFederation,
) -> None:
    federation = start_federation(
        rounds=2,
        min_nodes=3,
        plan={"epochs": 1, "batch_size": 8, "dp": {"epsilon": 1.0}},
    )
    rounds = federation.finish()
    assert [r["round"] for r in rounds] == [1, 2]
    for record in rounds:
        assert record["aggregation"] == "secure"
        assert sorted(record["contributors"]) == sorted(SITES)


def test_a_hospital_whose_link_is_cut_mid_round_drops_out_and_rejoins(
    start_federation: StartFederation, tmp_path: Path
) -> None:
    federation = start_federation(
        rounds=2,
        min_nodes=2,
        plan={"epochs": 6, "batch_size": 8, "dp": {"epsilon": 1.0}},
        secure_aggregation={"step_timeout_s": 8.0},
        rejoin_wait_s=60.0,  # round 2 waits for the victim to reconnect
    )
    victim = federation.hospitals["site2"]
    victim_log, coordinator_log = tmp_path / "site2.log", tmp_path / "coordinator.log"
    wait_until(
        lambda: "round 1: training" in victim_log.read_text(),
        120,
        "the victim to start training",
        victim_log,
        coordinator_log,
    )
    victim.link_down()
    wait_until(
        lambda: "site2 dropped out" in coordinator_log.read_text(),
        120,
        "the coordinator to drop the victim",
        coordinator_log,
    )
    victim.link_up()
    first, second = federation.finish()
    assert sorted(first["contributors"]) == ["site0", "site1"]
    assert "site2" in first["dropped"]
    assert "site2" in second["contributors"]


def test_encrypted_inference_between_three_hosts(
    network: VirtualNetwork, consortium_pki: Path, synth_data: Path, tmp_path: Path
) -> None:
    model_owner = network.add_host("model-owner")
    crypto_provider = network.add_host("crypto-provider")
    hospital = network.add_host("hospital")
    spec = ModelSpec("cnn", num_outputs=4, width=4, image_size=32)
    torch.manual_seed(0)
    model = build_model("cnn", num_classes=4, width=4).eval()
    save_model(tmp_path / "model.safetensors", model, spec)
    common = {"network_interface": "eth0"}
    configs = {
        "crypto-provider": {
            "listen": f"{crypto_provider.address}:50062",
            "mpc_host": crypto_provider.address,
            # the one model owner it deals for, and the only address it dials for it
            "model_owners": [
                {"name": "model-owner", "host": model_owner.address, "ports": [29500, 29509]}
            ],
            "tls": _tls(consortium_pki, "crypto-provider"),
            **common,
        },
        "model-owner": {
            "listen": f"{model_owner.address}:50061",
            "rendezvous_host": model_owner.address,
            "rendezvous_ports": [29500, 29509],
            "crypto_provider": f"{crypto_provider.address}:50062",
            "tls": _tls(consortium_pki, "model-owner"),
            **common,
        },
        "data-owner": {
            "server": f"{model_owner.address}:50061",
            "tls": _tls(consortium_pki, "site0"),
            **common,
        },
    }
    for name, values in configs.items():
        (tmp_path / f"{name}.toml").write_text(tomli_w.dumps(values))
    logs = [tmp_path / f"{name}.log" for name in configs]
    _primia(
        crypto_provider,
        ["infer", "crypto-provider", "--config", str(tmp_path / "crypto-provider.toml")],
        logs[0],
    )
    serve = ["infer", "serve", "--model", str(tmp_path / "model.safetensors")]
    _primia(model_owner, [*serve, "--config", str(tmp_path / "model-owner.toml")], logs[1])
    wait_until(lambda: _listening(crypto_provider.address, 50062), 60, "the crypto provider", *logs)
    wait_until(lambda: _listening(model_owner.address, 50061), 60, "the model owner", *logs)

    dataset = open_dataset(synth_data, image_size=32)
    image_path = dataset.records[0].path
    out = tmp_path / "predictions.json"
    predict = ["infer", "predict", "--config", str(tmp_path / "data-owner.toml")]
    client = _primia(hospital, [*predict, "--image", str(image_path), "--out", str(out)], logs[2])
    assert client.wait(timeout=300) == 0, logs[2].read_text()[-3000:]

    (row,) = json.loads(out.read_text())["images"]
    encrypted = torch.tensor(list(row["probabilities"].values()))
    with torch.no_grad():
        plain = model(dataset[0][0].unsqueeze(0)).sigmoid()[0]
    assert torch.allclose(encrypted, plain, atol=1e-2)


@pytest.mark.parametrize("link", ["narrow", "narrow and far"])
def test_rounds_complete_over_slow_links(
    start_federation: StartFederation, tmp_path: Path, link: str
) -> None:
    far = link == "narrow and far"
    federation = start_federation(
        rounds=2,
        min_nodes=3,
        plan={"epochs": 1, "batch_size": 8, "dp": {"epsilon": 1.0}},
        # ~78 k parameters: 0.3 MB of weights to each node, every round
        model={"architecture": "resnet9", "width": 8, "image_size": 32},
        dial_port=RELAY_PORT if far else COORDINATOR_PORT,
    )
    coordinator = federation.coordinator
    for host in (coordinator, *federation.hospitals.values()):
        host.limit_rate("2mbit")
    if far:  # 50 ms each way between every node and the coordinator: 100 ms round trips
        target = f"{coordinator.address}:{COORDINATOR_PORT}"
        coordinator.relay(RELAY_PORT, target, 50, log=tmp_path / "relay.log")
        for port in (COORDINATOR_PORT, RELAY_PORT):
            wait_until(lambda port=port: _listening(coordinator.address, port), 60, f"port {port}")
        assert _round_trip(coordinator.address, RELAY_PORT) >= 0.1
    rounds = federation.finish()
    assert [sorted(r["contributors"]) for r in rounds] == [sorted(SITES)] * 2
    # The coordinator sends 3 × 0.3 MB of weights a round through its 2 Mbit/s link: at
    # least 1.2 s (unshaped, such a round takes a fraction of a second).
    assert all(r["seconds"] >= 1.2 for r in rounds)


def test_a_coordinator_killed_mid_round_resumes_and_no_ledger_under_reports(
    start_federation: StartFederation, tmp_path: Path
) -> None:
    federation = start_federation(
        rounds=3,
        min_nodes=3,
        plan={"epochs": 6, "batch_size": 8, "dp": {"epsilon": 1.0}},
    )
    run_dir, logs = federation.run_dir, federation.logs
    first = federation.process
    wait_until(lambda: len(rounds_of(run_dir)) >= 1, 180, "the first round", *logs)
    wait_until(
        lambda: all("round 2: training" in (tmp_path / f"{s}.log").read_text() for s in SITES),
        120,
        "round 2 to start",
        *logs,
    )
    os.killpg(first.pid, signal.SIGKILL)  # mid-round: the nodes are training
    first.wait()
    for checkpoint in run_dir.rglob("*.safetensors"):  # every file whole, none half-written
        load_file(checkpoint)
    serve = ["coordinator", "serve", "--config", str(tmp_path / "coordinator.toml")]
    restarted = tmp_path / "restarted.log"
    federation.process = _primia(federation.coordinator, [*serve, "--no-progress"], restarted)
    federation.logs[0] = restarted
    assert [r["round"] for r in federation.finish()] == [1, 2, 3]
    assert "resuming run" in restarted.read_text()
    for site in SITES:
        # every training task a node started is in its ledger (the interrupted one too)
        started = (tmp_path / f"{site}.log").read_text().count(": training (")
        ledger = PrivacyLedger.open(
            tmp_path / f"state-{site}" / "privacy-ledger.jsonl", accountant="rdp"
        )
        assert len(ledger.releases()) == started >= 4
