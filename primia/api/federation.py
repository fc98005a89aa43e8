"""A federation from Python: a :class:`Coordinator` at the consortium, a :class:`Node` at
each hospital, and the run's outcome as a :class:`FederationResult`.

They do what ``primia coordinator serve`` and ``primia node serve`` do, over the same gRPC
with mutual TLS; the configurations are the typed ones those commands read from TOML.
``report.json`` in the run directory holds the same result as JSON.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from primia.federated.coordinator_config import CoordinatorConfig
from primia.rpc.coordinator_server import CoordinatorServer
from primia.rpc.node_client import NodeClient
from primia.rpc.node_config import NodeConfig


@dataclass(frozen=True)
class RoundResult:
    """One completed round: who contributed, who did not, and the global model's
    validation figures pooled over the nodes."""

    round: int
    contributors: tuple[str, ...]
    left_out: tuple[str, ...]
    """Nodes that dropped out or refused the round's task."""
    validation_loss: float | None
    validation_mean_auroc: float | None
    seconds: float


@dataclass(frozen=True)
class FinalEvaluation:
    """The final model on every node's held-out test patients, pooled."""

    examples: int
    loss: float | None
    mean_auroc: float | None
    auroc: Mapping[str, float | None]
    """AUROC per label (None where a label has one class only)."""


@dataclass(frozen=True)
class NodeResult:
    """What a node contributed and what it spent, as its own ledger reported it."""

    rounds_contributed: int
    epsilon_spent: float
    epsilon_budget: float


@dataclass(frozen=True)
class FederationResult:
    run_id: str
    rounds: tuple[RoundResult, ...]
    test: FinalEvaluation | None
    """None when the coordinator was configured without a final test."""
    nodes: Mapping[str, NodeResult]
    model: Path
    """The final global model (safetensors with its spec)."""

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> FederationResult:
        """The result of a run's report (what :meth:`Coordinator.run` and ``report.json``
        hold)."""
        test = report.get("test")
        return cls(
            run_id=str(report["run_id"]),
            rounds=tuple(
                RoundResult(
                    round=int(entry["round"]),
                    contributors=tuple(entry["contributors"]),
                    left_out=tuple(entry["dropped"]),
                    validation_loss=entry["validation_loss"],
                    validation_mean_auroc=entry["validation_mean_auroc"],
                    seconds=float(entry["seconds"]),
                )
                for entry in report["rounds"]
            ),
            test=None
            if test is None
            else FinalEvaluation(
                examples=int(test["examples"]),
                loss=test.get("loss"),
                mean_auroc=test.get("mean_auroc"),
                auroc=MappingProxyType(dict(test.get("auroc", {}))),
            ),
            nodes=MappingProxyType(
                {
                    name: NodeResult(
                        rounds_contributed=int(node["rounds_contributed"]),
                        epsilon_spent=float(node["epsilon_spent"]),
                        epsilon_budget=float(node["epsilon_budget"]),
                    )
                    for name, node in report["nodes"].items()
                }
            ),
            model=Path(report["model"]),
        )


class Coordinator:
    """The consortium's coordinator: serves the nodes on ``config.listen`` and runs the
    federation's rounds (resuming from ``config.run_dir`` after a restart)."""

    def __init__(self, config: CoordinatorConfig) -> None:
        self._server = CoordinatorServer(config)

    def start(self) -> int:
        """Open the port (before :meth:`run`, to learn a port chosen by the system with
        ``listen = "127.0.0.1:0"``); returns the port."""
        return self._server.start()

    def run(self) -> FederationResult:
        """Serve until the last round is done, then stop serving; the run's result."""
        return FederationResult.from_report(self._server.run())

    def stop(self) -> None:
        """Stop serving (a running :meth:`run` fails with the rounds it has)."""
        self._server.stop()


class Node:
    """A hospital's data-owner node: dials the coordinator, trains with DP-SGD on its own
    images, charges every release to its privacy ledger, and refuses what its limits and
    budget do not allow."""

    def __init__(self, config: NodeConfig) -> None:
        self._client = NodeClient.from_config(config)
        self._thread: threading.Thread | None = None

    def serve(self) -> None:
        """Stay connected (reconnecting with back-off) until :meth:`stop` or, with
        ``exit_when_done``, until a federation finishes."""
        self._client.serve()

    def start(self) -> None:
        """:meth:`serve` on a background thread (several nodes in one process, as in
        tests and examples)."""
        self._thread = threading.Thread(target=self._client.serve, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._client.stop()
        if self._thread is not None:
            self._thread.join(timeout)
