"""A consortium for federation tests: certificates, configs, and nodes run in threads.

Servers are real (gRPC on loopback with mutual TLS); nodes train for real with DP-SGD on
the session's tiny synthetic dataset, each on its own site. Accounting uses RDP in these
tests: the PRV accountant's calibration takes seconds at the tiny datasets' high
sampling rates, and the composition logic under test is the same.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from primia import pki
from primia.federated.coordinator_config import CoordinatorConfig, ModelConfig
from primia.federated.data_owner import ComputeSettings, DataSettings, PrivacySettings
from primia.federated.plan import DPPlan, TrainPlan
from primia.federated.result import FederationResult
from primia.inference.party_config import CryptoProviderConfig, ModelOwnerConfig, ModelOwnerEntry
from primia.rpc.coordinator_server import CoordinatorServer
from primia.rpc.inference_server import InferenceServer, crypto_provider_server, model_owner_server
from primia.rpc.node_client import NodeClient
from primia.rpc.node_config import NodeConfig

SITES = ("site0", "site1", "site2")


def rounds_of(run_dir: Path) -> list[dict[str, Any]]:
    """The lines of a run directory's ``rounds.jsonl`` (none before the first round)."""
    path = run_dir / "rounds.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_federation(server: CoordinatorServer, timeout: float = 240) -> FederationResult:
    """Run ``server``'s federation in a thread (so a test's own threads keep going); its
    result, or the error it raised."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = server.run()
        except Exception as error:
            outcome["error"] = error

    runner = threading.Thread(target=run)
    runner.start()
    runner.join(timeout=timeout)
    assert not runner.is_alive(), "the federation did not finish"
    if "error" in outcome:
        raise outcome["error"]
    result: FederationResult = outcome["result"]
    return result


def wait_until(condition: Callable[[], bool], timeout: float, what: str, *logs: Path) -> None:
    """Poll ``condition``; on timeout fail with ``what`` and the end of each log."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in logs)
            raise AssertionError(f"timed out waiting for {what}\n{tails}")
        time.sleep(0.1)


def start_inference_servers(
    pki_dir: Path,
    model_path: Path,
    *,
    owner_ports: tuple[int, int] = (29700, 29799),
    dealer_ports: tuple[int, int] = (29800, 29899),
    session_timeout_s: float = 120.0,
    join_timeout_s: float = 30.0,
    dealer_port: int = 0,
    **owner_options: Any,
) -> tuple[InferenceServer, InferenceServer]:
    """A crypto provider and a model owner serving ``model_path`` on loopback (mutual TLS),
    started; ``dealer_port`` set: the model owner dials that port instead of the
    provider's; ``owner_options``: more of the model owner's settings."""
    dealer = crypto_provider_server(
        CryptoProviderConfig(
            tls=pki.tls_files(pki_dir, "crypto-provider"),
            listen="127.0.0.1:0",
            mpc_ports=dealer_ports,
            model_owners=(ModelOwnerEntry("model-owner", "127.0.0.1", owner_ports),),
            join_timeout_s=join_timeout_s,
        )
    )
    port = dealer.start()
    values: dict[str, Any] = {
        "tls": pki.tls_files(pki_dir, "model-owner"),
        "listen": "127.0.0.1:0",
        "crypto_provider": f"127.0.0.1:{dealer_port or port}",
        "rendezvous_ports": owner_ports,
        "max_batch": 4,
        "max_sessions_per_caller": 2,
        "session_timeout_s": session_timeout_s,
        "join_timeout_s": join_timeout_s,
    }
    values.update(owner_options)
    owner = model_owner_server(ModelOwnerConfig(**values), model_path)
    owner.start()
    return owner, dealer


@dataclass
class Consortium:
    pki_dir: Path
    data: Path
    coordinator: pki.TLSFiles
    nodes: dict[str, pki.TLSFiles]
    clients: list[NodeClient] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    ended: dict[str, BaseException | None] = field(default_factory=dict)
    """How each node's ``serve`` ended, by site: None when it returned, else what it
    raised (absent while it runs)."""

    def coordinator_config(self, run_dir: Path, **overrides: Any) -> CoordinatorConfig:
        values: dict[str, Any] = {
            "tls": self.coordinator,
            "roster": list(SITES),
            "run_dir": run_dir,
            "listen": "127.0.0.1:0",
            "rounds": 2,
            "min_nodes": 2,
            "startup_wait_s": 20.0,
            "node_wait_s": 30.0,
            "round_timeout_s": 120.0,
            "max_attempts": 2,
            "progress": False,
            "model": ModelConfig(architecture="cnn", image_size=32),
            "plan": TrainPlan(epochs=1, batch_size=8, lr=3e-3, dp=DPPlan(epsilon=1.0)),
        }
        values.update(overrides)
        return CoordinatorConfig(**values)

    def node_config(self, site: str, port: int, state_dir: Path, **overrides: Any) -> NodeConfig:
        values: dict[str, Any] = {
            "tls": self.nodes[site],
            "data": DataSettings(path=self.data, site=site),
            "coordinator": f"127.0.0.1:{port}",
            "state_dir": state_dir,
            "privacy": PrivacySettings(epsilon_budget=10.0, accountant="rdp"),
            "compute": ComputeSettings(threads=1, max_physical_batch_size=16),
            "reconnect_max_s": 1.0,
            "exit_when_done": True,
        }
        values.update(overrides)
        return NodeConfig(**values)

    def start_node(self, config: NodeConfig) -> NodeClient:
        client = NodeClient.from_config(config, default_image_size=32)
        site = str(config.data.site)

        def serve() -> None:
            try:
                client.serve()
            except BaseException as error:
                self.ended[site] = error
            else:
                self.ended[site] = None

        thread = threading.Thread(target=serve, name=site, daemon=True)
        thread.start()
        self.clients.append(client)
        self.threads.append(thread)
        return client


@pytest.fixture(scope="session")
def consortium_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    pki.init_ca(directory, "test-consortium")
    pki.issue(directory, "coordinator", "coordinator")
    for site in SITES:
        pki.issue(directory, site, "node")
    pki.issue(directory, "viewer", "inference")
    pki.issue(directory, "model-owner", "inference")
    pki.issue(directory, "crypto-provider", "inference")
    pki.issue(directory, "stranger", "node")
    return directory


@pytest.fixture(scope="session")
def foreign_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another CA, with a node certificate named site0 (a name on the roster)."""
    directory = tmp_path_factory.mktemp("foreign")
    pki.init_ca(directory, "other-consortium")
    pki.issue(directory, "site0", "node")
    return directory


@pytest.fixture
def consortium(consortium_pki: Path, synth_data: Path) -> Iterator[Consortium]:
    kit = Consortium(
        pki_dir=consortium_pki,
        data=synth_data,
        coordinator=pki.tls_files(consortium_pki, "coordinator"),
        nodes={site: pki.tls_files(consortium_pki, site) for site in SITES},
    )
    yield kit
    for client in kit.clients:
        client.stop()
    for thread in kit.threads:
        thread.join(timeout=10)


@pytest.fixture
def data(synth_data: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic dataset, so each test has its own privacy ledger."""
    copy = tmp_path / "data"
    shutil.copytree(synth_data, copy)
    return copy
