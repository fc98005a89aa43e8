"""A federation from Python: a :class:`Coordinator` at the consortium, a :class:`Node` at
each hospital, and the run's outcome as a :class:`FederationResult`.

They do what ``primia coordinator serve`` and ``primia node serve`` do, over the same gRPC
with mutual TLS; the configurations are the typed ones those commands read from TOML.
``report.json`` in the run directory holds the same result as JSON.
"""

from __future__ import annotations

import threading

from primia.federated.coordinator_config import CoordinatorConfig
from primia.federated.result import (
    FederationResult,
)
from primia.federated.run_view import write_run_report
from primia.rpc.coordinator_server import CoordinatorServer
from primia.rpc.node_client import NodeClient
from primia.rpc.node_config import NodeConfig


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
        """Serve until the last round is done, then stop serving; the run's result (also
        in the run directory: ``report.json``, and ``report.html`` with its charts)."""
        result: FederationResult = self._server.run()  # the default job: the federation
        write_run_report(self._server.config.run_dir)
        return result

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
