"""Start the model owner's and the crypto provider's gRPC servers.

>>> server = model_owner_server(config, Path("runs/demo"))   # doctest: +SKIP
>>> server.start(); server.wait()                             # doctest: +SKIP

Each server reaps its sessions once a second (:meth:`SessionTable.reap`), so a session
whose data owner vanished, or never came, is stopped at its deadline even when no new
request arrives. Each keeps ``pool_size`` party processes started (a
:class:`~primia.inference.processes.PartyPool`), so a session starts computing at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import grpc

from primia.errors import ConfigError
from primia.inference.party_config import CryptoProviderConfig, ModelOwnerConfig
from primia.inference.processes import PartyPool
from primia.inference.sessions import (
    Dealer,
    DealerSessions,
    DealFor,
    Endpoint,
    Limits,
    ModelOwnerSessions,
    Refusal,
    SessionRefused,
    SessionTable,
    load_served_model,
)
from primia.limits import ServerLimits
from primia.pki import TLSFiles
from primia.rpc.generated import inference_pb2 as pb
from primia.rpc.generated import inference_pb2_grpc as pb_grpc
from primia.rpc.guard import CallGuard, guarded_server
from primia.rpc.inference_service import CryptoProviderService, ModelOwnerService
from primia.rpc.tls import secure_channel, server_credentials

log = logging.getLogger(__name__)

DEAL_TIMEOUT_S = 150.0
"""How long the model owner waits for the crypto provider to accept a session (its party
process listening; a cold one on a busy machine takes a while)."""


class InferenceServer:
    """A gRPC server for one party, with the thread that reaps its sessions."""

    def __init__(
        self,
        *,
        name: str,
        listen: str,
        tls: TLSFiles,
        table: SessionTable,
        add_servicer: Callable[[grpc.Server], None],
        limits: ServerLimits | None = None,
    ) -> None:
        """Every call passes a :class:`~primia.rpc.guard.CallGuard` of ``limits``."""
        self.name = name
        self.table = table
        self.port = 0
        self._listen = listen
        self._tls = tls
        self._add_servicer = add_servicer
        self.guard = CallGuard(limits or ServerLimits(), tls.read()[0], name=name)
        self._server: grpc.Server | None = None
        self._stopped = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name=f"{name}-reaper", daemon=True)

    def start(self) -> int:
        """Listen; return the port (useful with port 0)."""
        server = guarded_server(self.guard)
        self._add_servicer(server)
        try:
            self.port = server.add_secure_port(self._listen, server_credentials(self._tls))
        except RuntimeError as error:
            raise ConfigError(f"cannot listen on {self._listen}: {error}") from error
        server.start()
        self._server = server
        self._reaper.start()
        log.info("%s listening on %s (port %d)", self.name, self._listen, self.port)
        return self.port

    def wait(self) -> None:
        """Serve until :meth:`request_stop` or :meth:`stop` is called."""
        self._stopped.wait()

    def request_stop(self) -> None:
        """Make :meth:`wait` return (safe in a signal handler)."""
        self._stopped.set()

    def stop(self) -> None:
        """Stop serving and end every running session."""
        self._stopped.set()
        if self._server is not None:
            self._server.stop(grace=2).wait()
        self.table.close()

    def _reap(self) -> None:
        while not self._stopped.wait(1.0):
            self.table.reap()


def remote_dealer(address: str, server_name: str, tls: TLSFiles) -> Dealer:
    """A :data:`Dealer` that asks the crypto provider at ``address`` over mutual TLS."""

    def deal(session_id: str, port: int, deadline_s: float, data_owner: str) -> Endpoint:
        with secure_channel(address, tls, server_name=server_name) as channel:
            request = pb.DealRequest(
                session_id=session_id,
                rendezvous_port=port,
                deadline_s=deadline_s,
                data_owner_name=data_owner,
            )
            try:
                receipt = pb_grpc.CryptoProviderStub(channel).Deal(request, timeout=DEAL_TIMEOUT_S)
            except grpc.RpcError as error:
                raise SessionRefused(
                    Refusal.UNAVAILABLE,
                    f"the crypto provider at {address} did not take the session: "
                    f"{error.code().name}: {error.details()}",
                ) from error
        if not receipt.host or not 0 < receipt.port < 65536:
            raise SessionRefused(
                Refusal.UNAVAILABLE, f"the crypto provider at {address} named no MPC port"
            )
        return Endpoint(receipt.host, receipt.port)

    return deal


def model_owner_server(
    config: ModelOwnerConfig, model: Path, *, dealer: Dealer | None = None
) -> InferenceServer:
    """The model owner's server for the model at ``model`` (see :func:`load_served_model`)."""
    spec, weights = load_served_model(model)
    ca_pem, _, _ = config.tls.read()
    sessions = ModelOwnerSessions(
        spec,
        weights,
        dealer=dealer
        or remote_dealer(config.crypto_provider, config.crypto_provider_name, config.tls),
        tls=config.tls,
        crypto_provider_name=config.crypto_provider_name,
        rendezvous_host=config.rendezvous_host,
        ports=config.ports,
        limits=Limits(
            max_sessions=config.max_sessions,
            max_sessions_per_caller=config.max_sessions_per_caller,
            session_timeout_s=config.session_timeout_s,
            join_timeout_s=config.join_timeout_s,
        ),
        max_batch=config.max_batch,
        pool=PartyPool(config.pool_size, threads=config.threads, name="model owner"),
        plugins=config.plugins,
    )
    service = ModelOwnerService(sessions, ca_pem=ca_pem, allowed=config.allowed_data_owners)
    return InferenceServer(
        name="model owner",
        listen=config.listen,
        tls=config.tls,
        table=sessions.table,
        add_servicer=lambda server: pb_grpc.add_ModelOwnerServicer_to_server(service, server),
        limits=config.limits,
    )


def crypto_provider_server(config: CryptoProviderConfig) -> InferenceServer:
    ca_pem, _, _ = config.tls.read()
    if not config.model_owners:
        log.warning("no [[model_owners]] configured: this crypto provider deals for no one")
    sessions = DealerSessions(
        tls=config.tls,
        model_owners=tuple(
            DealFor(entry.name, entry.host, (entry.ports[0], entry.ports[1]))
            for entry in config.model_owners
        ),
        mpc_host=config.mpc_host,
        mpc_ports=(config.mpc_ports[0], config.mpc_ports[1]),
        limits=Limits(
            max_sessions=config.max_sessions,
            max_sessions_per_caller=config.max_sessions_per_caller,
            session_timeout_s=config.session_timeout_s,
            join_timeout_s=config.join_timeout_s,
        ),
        pool=PartyPool(config.pool_size, threads=config.threads, name="crypto provider"),
    )
    service = CryptoProviderService(sessions, ca_pem=ca_pem)
    return InferenceServer(
        name="crypto provider",
        listen=config.listen,
        tls=config.tls,
        table=sessions.table,
        add_servicer=lambda server: pb_grpc.add_CryptoProviderServicer_to_server(service, server),
        limits=config.limits,
    )
