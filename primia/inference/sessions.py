"""Encrypted inference sessions as the model owner and the crypto provider keep them.

No transport here: the gRPC servicers (:mod:`primia.inference.service`) call these.

A session is one party process (:mod:`primia.inference.processes`) with a deadline:

    RUNNING ──(the party reports)──────────▶ DONE | FAILED
       └─────(the deadline passes: killed)─▶ EXPIRED

Sessions are isolated: each has its own rendezvous port and its own processes, so two data
owners' sessions never share a process group. A data owner that vanishes mid-session makes
the others' gloo calls fail (the session ends FAILED) or leaves them waiting (it ends
EXPIRED at its deadline); either way the process is gone and its port free.
"""

from __future__ import annotations

import enum
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from primia.errors import PrimiaError
from primia.inference import processes
from primia.inference.inputs import check_input_shape
from primia.inference.parties import WORLD_SIZE, Rendezvous
from primia.models.checkpoint import ModelSpec

log = logging.getLogger(__name__)

FINISHED_KEPT = 100
"""Finished sessions remembered (for status and tests)."""


class SessionRefused(PrimiaError):
    """A session was not opened; ``reason`` says whether the request or the server is at fault."""

    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Refusal(enum.Enum):
    INVALID = "invalid"
    """The request cannot be served as it is (wrong shape, too many images)."""
    BUSY = "busy"
    """The server runs its maximum of sessions; try again later."""
    UNAVAILABLE = "unavailable"
    """A party the session needs (the crypto provider) cannot be reached."""


class SessionState(enum.Enum):
    RUNNING = "running"
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
    port: int = 0
    state: SessionState = SessionState.RUNNING
    detail: str = ""


class SessionTable:
    """The sessions of one server: started, watched, reaped at their deadlines."""

    def __init__(self, *, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self._lock = threading.Lock()
        self._reaping = threading.Lock()
        self._running: dict[str, Session] = {}
        self.finished: list[Session] = []

    def reserve(self) -> None:
        """Raise :class:`SessionRefused` (BUSY) if no session can start now."""
        self.reap()
        with self._lock:
            if len(self._running) >= self.max_sessions:
                raise SessionRefused(
                    Refusal.BUSY,
                    f"the server runs its maximum of {self.max_sessions} sessions; "
                    "try again in a minute",
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
            if outcome is not None:
                session.state = SessionState.FAILED if outcome.error else SessionState.DONE
                session.detail = outcome.error or _describe(outcome)
            elif time.monotonic() > session.deadline:
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
        for session in self.running:
            session.party.kill()
        self.reap()


@dataclass(frozen=True)
class Offer:
    """Where and how the data owner joins a session (sent back as a SessionOffer)."""

    session_id: str
    rendezvous: Rendezvous
    spec: ModelSpec
    input_shape: tuple[int, ...]
    deadline_s: float
    world_size: int = WORLD_SIZE


Dealer = Callable[[str, Rendezvous, float], None]
"""Asks the crypto provider to join session ``id`` at ``rendezvous`` for ``deadline_s``;
raises :class:`SessionRefused` (UNAVAILABLE) when it cannot."""


class ModelOwnerSessions:
    """The model owner's side: opens sessions for data owners and runs its party in each."""

    def __init__(
        self,
        spec: ModelSpec,
        weights: bytes,
        *,
        dealer: Dealer,
        rendezvous_host: str,
        ports: range,
        max_sessions: int,
        max_batch: int,
        session_timeout_s: float,
        threads: int = 0,
    ) -> None:
        self.spec = spec
        self.max_batch = max_batch
        self.table = SessionTable(max_sessions=max_sessions)
        self._weights = weights
        self._dealer = dealer
        self._host = rendezvous_host
        self._ports = ports
        self._timeout_s = session_timeout_s
        self._threads = threads
        self._opening = threading.Lock()

    def open(self, input_shape: tuple[int, ...], peer: str) -> Offer:
        """Start the model owner's party for ``input_shape`` and bring in the dealer."""
        try:
            check_input_shape(input_shape, self.spec, self.max_batch)
        except PrimiaError as error:
            raise SessionRefused(Refusal.INVALID, str(error)) from error
        with self._opening:  # one at a time, so two sessions never pick the same port
            self.table.reserve()
            port = self._free_port()
            session_id = secrets.token_hex(8)
            rendezvous = Rendezvous(self._host, port)
            party = processes.PartyProcess(
                f"model owner of session {session_id}",
                processes.model_owner,
                (rendezvous, self.spec, self._weights, input_shape),
                threads=self._threads,
            )
            party.start()
            session = Session(
                session_id, peer, party, time.monotonic() + self._timeout_s, port=port
            )
            self.table.add(session)
        try:
            self._dealer(session_id, rendezvous, self._timeout_s)
        except Exception:
            party.kill()
            self.table.reap()
            raise
        log.info(
            "session %s opened for %s at %s, images %s",
            session_id,
            peer,
            rendezvous.url,
            "×".join(map(str, input_shape)),
        )
        return Offer(session_id, rendezvous, self.spec, input_shape, self._timeout_s)

    def _free_port(self) -> int:
        in_use = self.table.ports_in_use()
        for port in self._ports:
            if port not in in_use and _bindable(port):
                return port
        raise SessionRefused(
            Refusal.BUSY,
            f"no free rendezvous port in {self._ports.start}-{self._ports.stop - 1}; "
            "widen rendezvous_ports or wait for a session to end",
        )


class DealerSessions:
    """The crypto provider's side: one dealing process per session."""

    def __init__(self, *, max_sessions: int, session_timeout_s: float, threads: int = 1) -> None:
        self.table = SessionTable(max_sessions=max_sessions)
        self._timeout_s = session_timeout_s
        self._threads = threads

    def deal(self, session_id: str, rendezvous: Rendezvous, deadline_s: float, peer: str) -> None:
        """Join ``rendezvous`` as the dealer until the session ends or ``deadline_s`` passes
        (at most this provider's own ``session_timeout_s``)."""
        self.table.reserve()
        party = processes.PartyProcess(
            f"crypto provider of session {session_id}",
            processes.crypto_provider,
            (rendezvous,),
            threads=self._threads,
        )
        party.start()
        deadline = time.monotonic() + min(deadline_s, self._timeout_s)
        self.table.add(Session(session_id, peer, party, deadline))
        log.info("dealing for session %s of %s at %s", session_id, peer, rendezvous.url)


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError:
            return False
    return True


def _describe(outcome: processes.PartyOutcome) -> str:
    stats = outcome.stats
    if stats is None:
        return "finished"
    return (
        f"finished in {stats.seconds:.1f} s, {stats.rounds} rounds, "
        f"{stats.bytes_communicated / 1e6:.0f} MB communicated, "
        f"peak memory {stats.peak_memory_bytes / 1e9:.2f} GB"
    )
