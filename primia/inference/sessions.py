"""Encrypted inference sessions as the model owner and the crypto provider keep them.

No transport here: the gRPC servicers (:mod:`primia.rpc.inference_service`) call these.

A session is one party process (:mod:`primia.inference.processes`, taken warm from a
:class:`~primia.inference.processes.PartyPool`) with two deadlines:

    OPEN ──(its links are up)──▶ JOINED ──(the party reports)──▶ DONE | FAILED
      │                            └──(session deadline: killed)──▶ EXPIRED
      └──(join deadline passes: killed)───────────────────────────▶ EXPIRED

The join deadline (``join_timeout_s``, short) ends a session whose peers never come, so
sessions opened and abandoned cannot hold the server's slots; the session deadline
(``session_timeout_s``) bounds a joined one. A server runs at most ``max_sessions`` at
once and at most ``max_sessions_per_caller`` for one caller (certificate name); beyond,
the caller is refused (BUSY, gRPC RESOURCE_EXHAUSTED) with a message naming the limit.

Sessions are isolated: each has its own processes and its own links, admitting only the
peers named for it (:mod:`primia.inference.links`).
"""

from __future__ import annotations

import enum
import functools
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from primia.errors import ModelError, PrimiaError
from primia.federated.weights import encode
from primia.inference import processes
from primia.inference.inputs import check_input_shape
from primia.inference.links import LinkPeer, LinkPlan
from primia.inference.parties import CRYPTO_PROVIDER, DATA_OWNER, MODEL_OWNER, WORLD_SIZE
from primia.models import model_names
from primia.models.checkpoint import ModelSpec, find_checkpoint, load_model, read_spec
from primia.models.compat import encrypted_problems
from primia.models.plugins import plugin_needed
from primia.pki import TLSFiles, identity_of

log = logging.getLogger(__name__)

FINISHED_KEPT = 100
"""Finished sessions remembered (for status and tests)."""
LISTEN_TIMEOUT_S = 120.0
"""How long a party process may take to listen for its peers (a cold one imports CrypTen)."""
DATA_OWNER_ROLES = ("node", "inference")
SERVER_ROLES = ("inference",)


class SessionRefused(PrimiaError):
    """A session was not opened; ``reason`` says whether the request or the server is at fault."""

    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Refusal(enum.Enum):
    INVALID = "invalid"
    """The request cannot be served as it is (wrong shape, too many images)."""
    BUSY = "busy"
    """The server, or this caller, is at a limit on open sessions; try again later."""
    UNAVAILABLE = "unavailable"
    """A party the session needs (the crypto provider) cannot be reached."""
    FORBIDDEN = "forbidden"
    """The caller may not ask this (a model owner the crypto provider does not deal for, a
    port outside the range configured for it)."""
    DUPLICATE = "duplicate"
    """The session id names a session this server already runs."""


class SessionState(enum.Enum):
    OPEN = "open"
    JOINED = "joined"
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"


@dataclass
class Session:
    id: str
    peer: str
    party: processes.PartyProcess
    deadline: float
    """On the monotonic clock."""
    join_deadline: float
    port: int = 0
    state: SessionState = SessionState.OPEN
    detail: str = ""


class SessionTable:
    """The sessions of one server: started, watched, reaped at their deadlines."""

    def __init__(self, *, max_sessions: int, max_sessions_per_caller: int | None = None) -> None:
        self.max_sessions = max_sessions
        self.max_sessions_per_caller = max_sessions_per_caller or max_sessions
        self._lock = threading.Lock()
        self._reaping = threading.Lock()
        self._running: dict[str, Session] = {}
        self.finished: list[Session] = []
        self.pool: processes.PartyPool | None = None

    def reserve(self, caller: str, session_id: str | None = None) -> None:
        """Raise :class:`SessionRefused` (BUSY, naming the limit) if ``caller`` may not
        start a session now, or (DUPLICATE) if ``session_id`` is running: the table holds
        one session per id, and a second would hide the first from the limits and the
        reaper. Call it and :meth:`add` under one lock of the caller's."""
        self.reap()
        with self._lock:
            if session_id is not None and session_id in self._running:
                raise SessionRefused(
                    Refusal.DUPLICATE,
                    f"session {session_id} is already running here; name each session once "
                    "(a new session needs a new id)",
                )
            if len(self._running) >= self.max_sessions:
                raise SessionRefused(
                    Refusal.BUSY,
                    f"the server runs its maximum of {self.max_sessions} sessions "
                    "(max_sessions); try again in a minute",
                )
            held = sum(session.peer == caller for session in self._running.values())
            if held >= self.max_sessions_per_caller:
                raise SessionRefused(
                    Refusal.BUSY,
                    f"{caller} holds {held} open sessions, its limit "
                    f"(max_sessions_per_caller = {self.max_sessions_per_caller}); finish one "
                    "or wait for it to be ended",
                )

    def add(self, session: Session) -> None:
        with self._lock:
            self._running[session.id] = session

    @property
    def running(self) -> list[Session]:
        with self._lock:
            return list(self._running.values())

    def ports_in_use(self) -> set[int]:
        return {session.port for session in self.running}

    def reap(self) -> list[Session]:
        """End the sessions whose party finished or whose deadline passed; return them."""
        with self._reaping:  # the reaper thread and a new request may both call this
            return self._reap()

    def _reap(self) -> list[Session]:
        ended = []
        for session in self.running:
            outcome = session.party.wait(0)
            now = time.monotonic()
            if session.state is SessionState.OPEN and session.party.joined:
                session.state = SessionState.JOINED
            if outcome is not None and outcome.error and session.state is SessionState.OPEN:
                session.state = SessionState.EXPIRED
                session.detail = f"its peers did not join within join_timeout_s: {outcome.error}"
            elif outcome is not None:
                session.state = SessionState.FAILED if outcome.error else SessionState.DONE
                session.detail = outcome.error or _describe(outcome)
            elif session.state is SessionState.OPEN and now > session.join_deadline:
                session.state = SessionState.EXPIRED
                session.detail = "its peers did not join within join_timeout_s; stopped it"
            elif now > session.deadline:
                session.state = SessionState.EXPIRED
                session.detail = "its deadline passed before the session ended; stopped it"
            else:
                continue
            session.party.kill()
            ended.append(session)
        with self._lock:
            for session in ended:
                self._running.pop(session.id, None)
            self.finished = (self.finished + ended)[-FINISHED_KEPT:]
        for session in ended:
            level = logging.INFO if session.state is SessionState.DONE else logging.WARNING
            log.log(
                level,
                "session %s (%s) %s: %s",
                session.id,
                session.peer,
                session.state.value,
                session.detail,
            )
        return ended

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
        for session in self.running:
            session.party.kill()
        self.reap()


@dataclass(frozen=True)
class Endpoint:
    """Where a party's MPC links listen."""

    host: str
    port: int


@dataclass(frozen=True)
class Offer:
    """Where and how the data owner joins a session (sent back as a SessionOffer)."""

    session_id: str
    model_owner: Endpoint
    crypto_provider: Endpoint
    crypto_provider_name: str
    spec: ModelSpec
    input_shape: tuple[int, ...]
    deadline_s: float
    join_timeout_s: float
    world_size: int = WORLD_SIZE


Dealer = Callable[[str, int, float, str], Endpoint]
"""Asks the crypto provider to deal for session ``id`` (the model owner's MPC port, the
deadline, the data owner's name); returns where its party listens for the data owner, or
raises :class:`SessionRefused` (UNAVAILABLE) when it cannot."""


@dataclass(frozen=True)
class Limits:
    """A server's limits on sessions (see the module's docstring)."""

    max_sessions: int
    max_sessions_per_caller: int
    session_timeout_s: float
    join_timeout_s: float


class ModelOwnerSessions:
    """The model owner's side: opens sessions for data owners and runs its party in each."""

    def __init__(
        self,
        spec: ModelSpec,
        weights: bytes,
        *,
        dealer: Dealer,
        tls: TLSFiles,
        crypto_provider_name: str,
        rendezvous_host: str,
        ports: tuple[int, int],
        limits: Limits,
        max_batch: int,
        pool: processes.PartyPool,
        plugins: tuple[str, ...] = (),
    ) -> None:
        self.spec = spec
        self._party = functools.partial(processes.model_owner, plugins=plugins)
        self.max_batch = max_batch
        self.limits = limits
        self.table = SessionTable(
            max_sessions=limits.max_sessions,
            max_sessions_per_caller=limits.max_sessions_per_caller,
        )
        self.table.pool = pool
        self._weights = weights
        self._dealer = dealer
        self._tls = tls
        self._dealer_name = crypto_provider_name
        self._host = rendezvous_host
        self._ports = ports
        self._pool = pool
        self._opening = threading.Lock()

    def open(self, input_shape: tuple[int, ...], peer: str) -> Offer:
        """Start the model owner's party for ``input_shape`` and bring in the dealer."""
        try:
            check_input_shape(input_shape, self.spec, self.max_batch)
        except PrimiaError as error:
            raise SessionRefused(Refusal.INVALID, str(error)) from error
        if peer == self._dealer_name:
            raise SessionRefused(Refusal.FORBIDDEN, f"{peer} is this server's crypto provider")
        session_id = secrets.token_hex(8)
        plan = LinkPlan(
            session_id,
            MODEL_OWNER,
            (
                LinkPeer(DATA_OWNER, peer, DATA_OWNER_ROLES),
                LinkPeer(CRYPTO_PROVIDER, self._dealer_name, SERVER_ROLES),
            ),
            self._tls,
            listen_host=self._host,
            listen_ports=self._ports,
            join_timeout_s=self.limits.join_timeout_s,
        )
        with self._opening:  # the limits hold for requests that arrive together
            self.table.reserve(peer)
            party = self._pool.take(
                f"model owner of session {session_id}",
                self._party,
                (plan, self.spec, self._weights, input_shape),
            )
            now = time.monotonic()
            session = Session(
                session_id,
                peer,
                party,
                deadline=now + self.limits.session_timeout_s,
                join_deadline=now + self.limits.join_timeout_s + LISTEN_TIMEOUT_S,
            )
            self.table.add(session)
        try:
            port = _listening(party)
            session.port = port
            session.join_deadline = time.monotonic() + self.limits.join_timeout_s
            dealer = self._dealer(session_id, port, self.limits.session_timeout_s, peer)
        except Exception:
            party.kill()
            self.table.reap()
            raise
        log.info(
            "session %s opened for %s at %s:%d, images %s",
            session_id,
            peer,
            self._host,
            port,
            "×".join(map(str, input_shape)),
        )
        return Offer(
            session_id,
            Endpoint(self._host, port),
            dealer,
            self._dealer_name,
            self.spec,
            input_shape,
            self.limits.session_timeout_s,
            self.limits.join_timeout_s,
        )


@dataclass(frozen=True)
class DealFor:
    """A model owner the crypto provider deals for: its name and its MPC address."""

    name: str
    host: str
    ports: tuple[int, int]


class DealerSessions:
    """The crypto provider's side: one dealing process per session, only for the model
    owners of its configuration, dialling only the address configured for each."""

    def __init__(
        self,
        *,
        tls: TLSFiles,
        model_owners: tuple[DealFor, ...],
        mpc_host: str,
        mpc_ports: tuple[int, int],
        limits: Limits,
        pool: processes.PartyPool,
    ) -> None:
        self.limits = limits
        self.table = SessionTable(
            max_sessions=limits.max_sessions,
            max_sessions_per_caller=limits.max_sessions_per_caller,
        )
        self.table.pool = pool
        self._tls = tls
        self._own_name = identity_of(tls.read()[1]).name
        self._model_owners = {entry.name: entry for entry in model_owners}
        self._host = mpc_host
        self._ports = mpc_ports
        self._pool = pool
        self._dealing = threading.Lock()

    def deal(
        self, session_id: str, port: int, deadline_s: float, data_owner: str, caller: str
    ) -> Endpoint:
        """Deal for ``caller``'s session ``session_id`` with ``data_owner``, until it ends
        or ``deadline_s`` passes (at most this provider's own ``session_timeout_s``);
        return where this party listens for the data owner."""
        entry = self._model_owners.get(caller)
        if entry is None:
            raise SessionRefused(
                Refusal.FORBIDDEN,
                f"{caller} is not among the model owners this crypto provider deals for; "
                "its operator adds it under [[model_owners]]",
            )
        first, last = entry.ports
        if not first <= port <= last:
            raise SessionRefused(
                Refusal.FORBIDDEN,
                f"port {port} is outside {caller}'s configured ports {first}-{last}",
            )
        if not data_owner or data_owner in (caller, self._own_name):
            raise SessionRefused(
                Refusal.INVALID, f"the data owner {data_owner!r} cannot be a party of its own"
            )
        plan = LinkPlan(
            session_id,
            CRYPTO_PROVIDER,
            (
                LinkPeer(MODEL_OWNER, caller, SERVER_ROLES, entry.host, port),
                LinkPeer(DATA_OWNER, data_owner, DATA_OWNER_ROLES),
            ),
            self._tls,
            listen_host=self._host,
            listen_ports=self._ports,
            join_timeout_s=self.limits.join_timeout_s,
        )
        with self._dealing:
            self.table.reserve(caller, session_id)
            party = self._pool.take(
                f"crypto provider of session {session_id}", processes.crypto_provider, (plan,)
            )
            now = time.monotonic()
            session = Session(
                session_id,
                caller,
                party,
                deadline=now + min(deadline_s, self.limits.session_timeout_s),
                join_deadline=now + self.limits.join_timeout_s + LISTEN_TIMEOUT_S,
            )
            self.table.add(session)
        try:
            session.port = _listening(party)
        except Exception:
            party.kill()
            self.table.reap()
            raise
        session.join_deadline = time.monotonic() + self.limits.join_timeout_s
        log.info("dealing for session %s of %s with %s", session_id, caller, data_owner)
        return Endpoint(self._host, session.port)


def _listening(party: processes.PartyProcess) -> int:
    port = party.listening(LISTEN_TIMEOUT_S)
    if port is None:
        outcome = party.wait(0)
        raise SessionRefused(
            Refusal.UNAVAILABLE,
            f"the {party.name} did not start listening: "
            f"{outcome.error if outcome else f'not within {LISTEN_TIMEOUT_S:g} s'}",
        )
    return port


def _describe(outcome: processes.PartyOutcome) -> str:
    stats = outcome.stats
    if stats is None:
        return "finished"
    return (
        f"finished in {stats.seconds:.1f} s, {stats.rounds} rounds, "
        f"{stats.bytes_communicated / 1e6:.0f} MB communicated, "
        f"peak memory {stats.peak_memory_bytes / 1e9:.2f} GB"
    )


def load_served_model(path: Path) -> tuple[ModelSpec, bytes]:
    """The spec and safetensors weights of the model :func:`find_checkpoint` finds.

    Refused here, before any session, naming the layer, when encrypted inference cannot
    run the model (a plug-in's ``nn.Identity``, in-place ReLU, BatchNorm, own forward...),
    or when it names a plug-in this party has not loaded."""
    checkpoint = find_checkpoint(path)
    spec = read_spec(checkpoint)
    if spec.architecture not in model_names():
        needed = plugin_needed(spec.architecture, switch="allow_plugins")
        raise ModelError(f"{checkpoint}: {needed}")
    model, spec = load_model(checkpoint)
    check_encryptable(model, spec)
    return spec, encode(model.state_dict())


def check_encryptable(model: nn.Module, spec: ModelSpec) -> None:
    """Raise :class:`ModelError` with every layer encrypted inference cannot evaluate
    (:func:`primia.models.compat.encrypted_problems`)."""
    problems = encrypted_problems(model)
    if problems:
        raise ModelError(
            f"the model {spec.architecture!r} cannot run encrypted: {'; '.join(problems)}"
        )
