"""One party of one encrypted inference session, in a process of its own; a pool of them.

Every party runs in a fresh process: CrypTen keeps its communicator in module globals, so
two sessions in one process would mix; a process can be killed when its session runs past
its deadline; and a crash cannot take the serving process down. Processes are spawned,
never forked: a forked child whose parent had started PyTorch's OpenMP pool deadlocks in
its first convolution.

Starting a process and importing torch and CrypTen takes seconds, so a process starts
*before* its session (:class:`PartyPool`): it imports everything, then waits on its pipe
for one job, runs it, and exits. A process never runs a second job, so nothing of one
session (shares, seeds, CrypTen's globals) can reach the next.

The pipe carries, child to parent::

    ("ready", 0) → ("listening", port)? → ("joined", 0)? → ("ok", result) | ("error", text)

and the job parent to child: a function and its arguments, plain values only (a model
plug-in travels as its reference, which the child imports, never as code or an object).
It links a party to the process that started it on the same
machine (the same party, never another one).
"""

from __future__ import annotations

import enum
import logging
import multiprocessing
import multiprocessing.connection
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors

from primia.inference import parties
from primia.models.checkpoint import ModelSpec
from primia.models.plugins import load_plugins

log = logging.getLogger(__name__)

_SPAWN = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class PartyOutcome:
    """How a party's process ended: its statistics, or the error that stopped it."""

    stats: parties.PartyStats | None = None
    logits: np.ndarray | None = None
    error: str | None = None


class Stage(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    """Imported everything; waiting for its job."""
    WORKING = "working"
    LISTENING = "listening"
    JOINED = "joined"
    """Its links to the session's peers are up."""
    ENDED = "ended"


class PartyProcess:
    """A spawned process with ``threads`` torch threads that runs one party's job.

    ``target`` returns the party's :class:`~primia.inference.parties.PartyStats` (the data
    owner: its logits and its statistics); it is called with the job's arguments and a
    ``progress`` callback (:data:`parties.Progress`). Without ``target`` the process waits
    for :meth:`assign`.
    """

    def __init__(
        self,
        name: str,
        target: Callable[..., Any] | None = None,
        args: tuple[Any, ...] = (),
        *,
        threads: int,
    ) -> None:
        self.name = name
        self._pipe, child = _SPAWN.Pipe(duplex=True)
        self._child: multiprocessing.connection.Connection | None = child
        self._process = _SPAWN.Process(target=_serve, args=(child, threads), name=name, daemon=True)
        self._job = (target, args) if target is not None else None
        self.stage = Stage.STARTING
        self.port: int | None = None
        self._joined = False
        self._outcome: PartyOutcome | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        self._process.start()
        assert self._child is not None
        self._child.close()  # the child holds the only other end: its exit ends the pipe
        self._child = None
        if self._job is not None:
            self.assign(self.name, *self._job)

    def assign(self, name: str, target: Callable[..., Any], args: tuple[Any, ...]) -> None:
        """Give the process its one job."""
        with self._lock:
            if self.stage not in (Stage.STARTING, Stage.READY):
                raise RuntimeError(f"{self.name} already has a job")
            self.name = name
            try:
                self._pipe.send(("job", target, args))
            except OSError as error:
                self._end(PartyOutcome(error=f"{name}: its process is gone ({error})"))
                return
            self.stage = Stage.WORKING

    @property
    def running(self) -> bool:
        return self._process.is_alive()

    @property
    def pid(self) -> int | None:
        """The process's id once started (one process, one session: a new id each)."""
        return self._process.pid

    @property
    def joined(self) -> bool:
        """Whether its links came up."""
        self.wait(0)
        return self._joined

    def ready(self, timeout_s: float) -> bool:
        """Whether it has imported everything (waiting up to ``timeout_s`` for it)."""
        self._pump(timeout_s, until=lambda: self.stage is not Stage.STARTING)
        return self.stage is not Stage.STARTING and self._outcome is None

    def listening(self, timeout_s: float) -> int | None:
        """The port it listens on for its peers, once it does (None: not within
        ``timeout_s``, or it ended first)."""
        self._pump(timeout_s, until=lambda: self.port is not None)
        return self.port

    def wait(self, timeout_s: float) -> PartyOutcome | None:
        """The outcome once the party is done, or None if it still runs after ``timeout_s``."""
        self._pump(timeout_s, until=lambda: False)
        return self._outcome

    def _pump(self, timeout_s: float, until: Callable[[], bool]) -> None:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._outcome is None and not until():
                remaining = max(deadline - time.monotonic(), 0.0)
                if not self._pipe.poll(remaining):
                    return
                self._receive()

    def _receive(self) -> None:
        try:
            kind, value = self._pipe.recv()
        except (EOFError, OSError):  # the process died without reporting (killed, or a crash in C)
            self._process.join(timeout=5)
            self._end(
                PartyOutcome(
                    error=f"{self.name} exited with code {self._process.exitcode} and no result"
                )
            )
            return
        if kind == "ready":
            self.stage = Stage.READY if self.stage is Stage.STARTING else self.stage
        elif kind == "listening":
            self.port, self.stage = int(value), Stage.LISTENING
        elif kind == "joined":
            self.stage, self._joined = Stage.JOINED, True
        elif kind == "error":
            self._end(PartyOutcome(error=f"{self.name}: {value}"))
        elif isinstance(value, tuple):
            logits, stats = value
            self._end(PartyOutcome(stats=stats, logits=logits))
        else:
            self._end(PartyOutcome(stats=value))

    def _end(self, outcome: PartyOutcome) -> None:
        self._outcome = outcome
        self.stage = Stage.ENDED
        self._process.join(timeout=30)

    def kill(self) -> None:
        """Stop the process if it still runs (a no-op once it has ended)."""
        if self._process.is_alive():
            self._process.kill()
        self._process.join(timeout=10)
        self.wait(0)  # what it reported before it stopped; then the pipe's end


class PartyPool:
    """Up to ``size`` started, idle party processes; :meth:`take` hands one out (or starts
    one if none is idle) and a background thread starts its replacement."""

    def __init__(self, size: int, *, threads: int, name: str = "party") -> None:
        self.size = size
        self._threads = threads
        self._name = name
        self._idle: list[PartyProcess] = []
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._closed = False
        self._refiller = threading.Thread(target=self._refill, name=f"{name}-pool", daemon=True)
        if size > 0:
            self._wanted.set()
            self._refiller.start()

    def take(self, name: str, target: Callable[..., Any], args: tuple[Any, ...]) -> PartyProcess:
        """A process running ``target(*args)``: a warm one if the pool has one."""
        with self._lock:
            process = self._idle.pop(0) if self._idle else None
            self._wanted.set()
        if process is None or not process.running:
            if process is not None:
                process.kill()
            process = PartyProcess(name, threads=self._threads)
            process.start()
        process.assign(name, target, args)
        return process

    def prestart(self, count: int, timeout_s: float = 300.0) -> None:
        """Start ``count`` idle processes now and wait until they are ready."""
        started = [
            PartyProcess(f"idle {self._name} process", threads=self._threads) for _ in range(count)
        ]
        for process in started:
            process.start()
        for process in started:
            process.ready(timeout_s)
        with self._lock:
            self._idle.extend(started)

    def wait_warm(self, timeout_s: float) -> bool:
        """Wait until ``size`` idle processes are ready (benchmarks time warm sessions)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                idle = list(self._idle)
            if len(idle) >= self.size and all(p.ready(0) for p in idle):
                return True
            if idle:
                idle[-1].ready(min(1.0, max(deadline - time.monotonic(), 0.0)))
            else:
                time.sleep(0.2)
        return False

    @property
    def idle(self) -> int:
        with self._lock:
            return len(self._idle)

    def idle_pids(self) -> list[int | None]:
        """The process ids of the idle processes, oldest first."""
        with self._lock:
            return [process.pid for process in self._idle]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._wanted.set()
        for process in idle:
            process.kill()

    def _refill(self) -> None:
        while self._wanted.wait():
            with self._lock:
                if self._closed:
                    return
                self._idle = [process for process in self._idle if process.running]
                missing = self.size - len(self._idle)
                if missing <= 0:
                    self._wanted.clear()
                    continue
            process = PartyProcess(f"idle {self._name} process", threads=self._threads)
            try:
                process.start()
            except OSError as error:
                log.warning("could not start a %s process: %s", self._name, error)
                continue
            with self._lock:
                if self._closed:
                    process.kill()
                    return
                self._idle.append(process)


def crypto_provider(
    meeting: parties.Meeting,
    progress: parties.Progress = parties.no_progress,
    *,
    plain: bool = False,
) -> parties.PartyStats:
    return parties.crypto_provider(meeting, progress, plain=plain)


def model_owner(
    meeting: parties.Meeting,
    spec: ModelSpec,
    weights: bytes,
    shape: tuple[int, ...],
    progress: parties.Progress = parties.no_progress,
    *,
    plain: bool = False,
    plugins: tuple[str, ...] = (),
) -> parties.PartyStats:
    """The model owner's party; ``weights`` are safetensors bytes (the pipe copies them).
    ``plugins`` are the references of the model plug-ins to load first (this process is
    not the one that loaded them; its operator allowed them in the parent's config)."""
    load_plugins(plugins)
    return parties.model_owner(
        meeting, spec, load_safetensors(weights), shape, progress, plain=plain
    )


def data_owner(
    meeting: parties.Meeting,
    spec: ModelSpec,
    images: np.ndarray,
    progress: parties.Progress = parties.no_progress,
    *,
    plain: bool = False,
    plugins: tuple[str, ...] = (),
) -> tuple[np.ndarray, parties.PartyStats]:
    """The data owner's party: the logits of ``images``; ``plugins`` as for
    :func:`model_owner`."""
    load_plugins(plugins)
    logits, stats = parties.data_owner(
        meeting, spec, torch.from_numpy(images), progress, plain=plain
    )
    return logits.numpy(), stats


def _serve(pipe: multiprocessing.connection.Connection, threads: int) -> None:
    """A party process: import what a session needs, report ready, run one job, exit."""
    if threads > 0:
        torch.set_num_threads(threads)
    from primia.inference.compat import import_crypten

    import_crypten()
    pipe.send(("ready", 0))
    try:
        message = pipe.recv()
    except EOFError:  # the pool closed before giving it a job
        return
    _, target, args = message

    def progress(event: str, value: int) -> None:
        pipe.send((event, value))

    try:
        value = target(*args, progress=progress)
    except BaseException as error:  # reported to the parent, which decides what it means
        pipe.send(("error", f"{type(error).__name__}: {error}"))
        raise
    pipe.send(("ok", value))
