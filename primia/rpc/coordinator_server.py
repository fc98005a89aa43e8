"""Start a coordinator: the gRPC server, the node registry, and the federation's rounds.

>>> server = CoordinatorServer(config)        # doctest: +SKIP
>>> report = server.run()  # serves until the last round is done  # doctest: +SKIP

:meth:`CoordinatorServer.start` only opens the port (tests and the status display use
it to run the rounds on their own thread). What the server runs over its nodes is its
*job*: the federation's rounds by default, or another (the transfer matrix) given by
``job``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

import grpc
import torch

from primia.errors import ConfigError
from primia.federated.coordinator import Federation, FederationStatus
from primia.federated.coordinator_config import CoordinatorConfig
from primia.federated.privacy_record import FILENAME as PRIVACY_RECORD
from primia.federated.privacy_record import PrivacyRecord
from primia.federated.registry import NodeRegistry
from primia.limits import DEFAULT_MAX_CALLS
from primia.rpc import methods
from primia.rpc.coordinator_service import CoordinatorService
from primia.rpc.guard import CallGuard, guarded_server
from primia.rpc.tls import server_credentials

log = logging.getLogger(__name__)


class Job(Protocol):
    """Work a coordinator runs over its connected nodes."""

    def run(self) -> Any: ...

    def status(self) -> FederationStatus: ...


class CoordinatorServer:
    def __init__(
        self,
        config: CoordinatorConfig,
        *,
        stop: threading.Event | None = None,
        job: Callable[[NodeRegistry], Job] | None = None,
    ) -> None:
        self.config = config
        self.registry = NodeRegistry(
            config.roster, privacy_record=PrivacyRecord(config.run_dir / PRIVACY_RECORD)
        )
        self.job: Job = (
            job(self.registry) if job is not None else Federation(config, self.registry, stop=stop)
        )
        ca_pem, _, _ = config.tls.read()
        # Each node holds a Join stream for the whole federation; room for status and probes.
        limits = config.limits.sized(max(DEFAULT_MAX_CALLS, 2 * len(config.roster) + 16))
        self.guard = CallGuard(limits, ca_pem, name="coordinator", long_lived=("Join",))
        self._service = CoordinatorService(
            registry=self.registry,
            ca_pem=ca_pem,
            status=self.job.status,
            guard=self.guard,
            status_access=config.status_access,
            # A job of its own (the transfer matrix) asks for several models and plans.
            plan=config.federation_plan() if job is None else None,
        )
        self._server: grpc.Server | None = None
        self.port = 0

    @property
    def federation(self) -> Federation:
        """The job, when it is the federation's rounds (the default)."""
        assert isinstance(self.job, Federation), "this server runs another job"
        return self.job

    def start(self) -> int:
        """Listen on ``config.listen``; return the port (useful with port 0)."""
        # The coordinator's tensor work (summing updates, encoding weights) is memory-bound;
        # with more threads, OpenMP's idle workers spin after every operation on the cores
        # the nodes' streams need (9% of two cores while ten updates arrived, measured).
        torch.set_num_threads(1)
        # A worker thread for every call the limits admit (each node's Join, and status
        # and probe calls); calls over a limit are refused at once, never queued.
        server = guarded_server(self.guard)
        methods.add_to_server(self._service, server)
        try:
            port = server.add_secure_port(self.config.listen, server_credentials(self.config.tls))
        except RuntimeError as error:
            raise ConfigError(f"cannot listen on {self.config.listen}: {error}") from error
        if port == 0:
            raise ConfigError(
                f"cannot listen on {self.config.listen}; is another coordinator using the port?"
            )
        server.start()
        self._server = server
        self.port = port
        log.info("coordinator listening on %s (port %d)", self.config.listen, port)
        return port

    def run(self) -> Any:
        """Serve and run the job (the federation) to its end; return what it returns."""
        if self._server is None:
            self.start()
        try:
            return self.job.run()
        finally:
            self.stop()

    def stop(self, grace: float = 5.0) -> None:
        if self._server is not None:
            for link in self.registry.every_link():
                link.close("the coordinator is shutting down")
            # Handlers end within a second of their stream (NodeSession.outbound).
            self._server.stop(grace).wait(timeout=grace + 10)
            self._service.join_readers(timeout=5)
            self._server = None
