"""The demo: a federation of three hospitals on synthetic radiographs, on one machine.

It synthesizes a multi-site chest radiograph dataset, makes a consortium (a CA and a
certificate per participant), writes a ``coordinator.toml`` and one ``node-<site>.toml``
per hospital, starts the coordinator and one node per site as separate processes on
loopback (mutual TLS, as in production), shows the federation's live status over the
same ``GetStatus`` call ``primia status`` uses, and shuts everything down when the rounds
are done. Each node reads only its own site's images and trains with DP-SGD; the
coordinator combines the updates by secure aggregation, so it learns only their sum
(``aggregation="plaintext"`` to compare). ``make demo`` runs ``primia demo``.

Everything stays in ``settings.out``: the data, ``pki/``, the configuration files (run
them yourself with ``primia coordinator serve`` / ``primia node serve``), ``logs/``, the
nodes' ledgers in ``state-<site>/`` and the coordinator's run directory ``run/``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from primia import pki
from primia.config import write_toml
from primia.data.synth import SynthConfig, write_dataset
from primia.errors import ConfigError, PrimiaError
from primia.federated.coordinator import FederationStatus
from primia.federated.coordinator_config import CoordinatorConfig, ModelConfig
from primia.federated.data_owner import ComputeSettings, DataSettings, PrivacySettings
from primia.federated.plan import DPPlan, TrainPlan
from primia.federated.policy import AcceptedModel, NodePolicy
from primia.federated.registry import NodeStatus
from primia.federated.result import FederationResult
from primia.launch import free_port, start_primia, stop_all, tail
from primia.rpc.node_config import NodeConfig
from primia.rpc.status import StatusUnavailable, fetch_status

MARKER = ".primia-demo"
COORDINATOR = "coordinator"


class DemoFailed(PrimiaError):
    """A process of the demo failed; the message points at its log."""


@dataclass(frozen=True)
class DemoSettings:
    out: Path = Path("runs/demo")
    sites: int = 3
    patients_per_site: int = 300
    images_per_patient: int = 4
    image_size: int = 48
    model: str = "resnet9"
    width: int = 16
    rounds: int = 6
    epochs_per_round: int = 3
    batch_size: int = 256
    lr: float = 5e-3
    epsilon_per_round: float = 0.8
    epsilon_budget: float = 10.0
    delta: float = 1e-5
    min_nodes: int = 2
    aggregation: Literal["secure", "plaintext"] = "secure"
    seed: int = 0
    timeout_s: float = 1800.0
    progress: bool = True


@dataclass(frozen=True)
class DemoResult:
    out: Path
    result: FederationResult
    seconds: float


def run_demo(
    settings: DemoSettings, *, on_status: Callable[[FederationStatus], None] | None = None
) -> DemoResult:
    """Run the demo (see the module docstring); ``on_status`` sees the live status.

    ``settings.out`` is emptied first, but only if an earlier demo made it (it holds the
    marker file); any other non-empty folder is refused rather than deleted.
    """
    if settings.aggregation not in ("secure", "plaintext"):
        raise ConfigError(
            f"aggregation {settings.aggregation!r} is unknown; use secure (the default) or "
            "plaintext"
        )
    started = time.perf_counter()
    out = _fresh_folder(settings.out)
    sites = [f"site{k}" for k in range(settings.sites)]
    write_dataset(
        out / "data",
        SynthConfig(
            sites=settings.sites,
            patients_per_site=settings.patients_per_site,
            images_per_patient=settings.images_per_patient,
            size=settings.image_size,
            seed=settings.seed,
        ),
        progress=settings.progress,
    )
    pki.init_ca(out / "pki", "primia-demo")
    coordinator_tls = pki.issue(out / "pki", COORDINATOR, "coordinator")
    for site in sites:
        pki.issue(out / "pki", site, "node")
    port = free_port()
    _write_configs(out, settings, sites, port)

    logs = out / "logs"
    logs.mkdir()
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        processes[COORDINATOR] = start_primia(
            COORDINATOR,
            ["coordinator", "serve", "--config", "coordinator.toml", "--no-progress"],
            out,
            logs,
        )
        for site in sites:
            processes[site] = start_primia(
                site,
                ["node", "serve", "--config", f"node-{site}.toml", "--exit-when-done"],
                out,
                logs,
            )
        _wait_for_coordinator(
            processes, f"127.0.0.1:{port}", coordinator_tls, settings, on_status, logs
        )
        _wait_for_nodes(processes, sites)
    finally:
        stop_all(processes.values())
    report = json.loads((out / "run" / "report.json").read_text())
    return DemoResult(
        out=out,
        result=FederationResult.from_mapping(report),
        seconds=time.perf_counter() - started,
    )


def _fresh_folder(out: Path) -> Path:
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise ConfigError(
                f"{out} is not empty and was not made by primia demo; choose another --out"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).touch()
    return out


def _write_configs(out: Path, settings: DemoSettings, sites: list[str], port: int) -> None:
    """The coordinator's and each node's configuration file, built as the typed configs
    that ``primia coordinator serve`` and ``primia node serve`` read back (paths relative to
    ``out``, as the files are)."""
    pki_dir = Path("pki")
    coordinator = CoordinatorConfig(
        tls=pki.tls_files(pki_dir, COORDINATOR),
        roster=sites,
        run_dir=Path("run"),
        listen=f"127.0.0.1:{port}",
        rounds=settings.rounds,
        min_nodes=min(settings.min_nodes, len(sites)),
        aggregation=settings.aggregation,
        node_wait_s=300.0,
        seed=settings.seed,
        model=ModelConfig(
            architecture=settings.model, width=settings.width, image_size=settings.image_size
        ),
        plan=TrainPlan(
            epochs=settings.epochs_per_round,
            batch_size=settings.batch_size,
            lr=settings.lr,
            dp=DPPlan(enabled=True, epsilon=settings.epsilon_per_round, delta=settings.delta),
        ),
    )
    write_toml(coordinator, out / "coordinator.toml")
    for site in sites:
        node = NodeConfig(
            tls=pki.tls_files(pki_dir, site),
            # The demo's sites share one synthetic manifest; each node reads only its own.
            data=DataSettings(path=Path("data"), site=site, seed=settings.seed),
            coordinator=f"127.0.0.1:{port}",
            coordinator_name=COORDINATOR,
            state_dir=Path(f"state-{site}"),
            reconnect_max_s=5.0,
            privacy=PrivacySettings(epsilon_budget=settings.epsilon_budget, delta=settings.delta),
            # Three nodes and a coordinator share the machine's cores: one thread each.
            compute=ComputeSettings(threads=1, max_physical_batch_size=64),
            # What each hospital takes part in: the consortium's model only, and plaintext
            # aggregation only when the demo is run to compare with it.
            policy=NodePolicy(
                aggregation=("secure", "plaintext")
                if settings.aggregation == "plaintext"
                else ("secure",),
                min_participants=max(2, min(3, len(sites))),
                models=(AcceptedModel(settings.model, settings.width),),
            ),
        )
        write_toml(node, out / f"node-{site}.toml")


def _wait_for_coordinator(
    processes: dict[str, subprocess.Popen[bytes]],
    address: str,
    tls: pki.TLSFiles,
    settings: DemoSettings,
    on_status: Callable[[FederationStatus], None] | None,
    logs: Path,
) -> None:
    timeout = settings.timeout_s
    deadline = time.monotonic() + timeout
    coordinator = processes[COORDINATOR]
    while coordinator.poll() is None:
        if time.monotonic() > deadline:
            raise DemoFailed(f"the federation did not finish in {timeout:.0f} s; see {logs}")
        if on_status is not None:
            on_status(_status_or_placeholder(address, tls, processes, settings))
        time.sleep(0.5)
    if coordinator.returncode != 0:
        log = logs / f"{COORDINATOR}.log"
        raise DemoFailed(
            f"the coordinator failed (exit {coordinator.returncode}); the end of {log}:\n"
            + tail(log)
        )


def _status_or_placeholder(
    address: str,
    tls: pki.TLSFiles,
    processes: dict[str, subprocess.Popen[bytes]],
    settings: DemoSettings,
) -> FederationStatus:
    """The coordinator's status, or, until it answers, one that says what is coming."""
    try:
        return fetch_status(address, tls, server_name=COORDINATOR, timeout=2.0)
    except StatusUnavailable:
        names = [name for name in processes if name != COORDINATOR]
        return FederationStatus(
            run_id="",
            state="starting",
            round=0,
            rounds=settings.rounds,
            min_nodes=settings.min_nodes,
            nodes=[NodeStatus(name, activity="starting") for name in names],
            history=[],
        )


def _wait_for_nodes(processes: dict[str, subprocess.Popen[bytes]], sites: list[str]) -> None:
    for site in sites:
        try:
            processes[site].wait(timeout=30)
        except subprocess.TimeoutExpired:
            continue  # stopped below; the federation itself has finished
