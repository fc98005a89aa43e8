"""One party of one encrypted inference session, in a process of its own.

Every party runs in a fresh process: CrypTen keeps its communicator in module globals, so
two sessions in one process would mix; a process can be killed when its session runs past
its deadline (a data owner that vanished leaves gloo waiting on a socket for up to 30
minutes); and a crash cannot take the serving process down. Processes are spawned, never
forked: a forked child whose parent had started PyTorch's OpenMP pool deadlocks in its
first convolution.

A party's result (its statistics; the data owner's logits) comes back to the process that
started it over a local pipe: the same party on the same machine, never another party.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors

from primia.inference import parties
from primia.models.checkpoint import ModelSpec

_SPAWN = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class PartyOutcome:
    """How a party's process ended: its statistics, or the error that stopped it."""

    stats: parties.PartyStats | None = None
    logits: np.ndarray | None = None
    error: str | None = None


class PartyProcess:
    """A party running ``target(*args)`` in a spawned process with ``threads`` torch threads.

    ``target`` returns the party's :class:`~primia.inference.parties.PartyStats` (the data
    owner: its logits and its statistics).
    """

    def __init__(
        self, name: str, target: Callable[..., Any], args: tuple[Any, ...], *, threads: int
    ) -> None:
        self.name = name
        self._results, sender = _SPAWN.Pipe(duplex=False)
        self._sender: multiprocessing.connection.Connection | None = sender
        self._process = _SPAWN.Process(
            target=_run, args=(target, args, sender, threads), name=name, daemon=True
        )
        self._outcome: PartyOutcome | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        self._process.start()
        assert self._sender is not None
        self._sender.close()  # the child holds the only writer: its exit ends the pipe
        self._sender = None

    @property
    def running(self) -> bool:
        return self._process.is_alive()

    def wait(self, timeout_s: float) -> PartyOutcome | None:
        """The outcome once the party is done, or None if it still runs after ``timeout_s``."""
        with self._lock:
            if self._outcome is None and self._results.poll(timeout_s):
                self._outcome = self._receive()
            return self._outcome

    def _receive(self) -> PartyOutcome:
        try:
            kind, value = self._results.recv()
        except EOFError:  # the process died without reporting (killed, or a crash in C)
            self._process.join(timeout=5)
            return PartyOutcome(
                error=f"{self.name} exited with code {self._process.exitcode} and no result"
            )
        self._process.join(timeout=30)
        if kind == "error":
            return PartyOutcome(error=f"{self.name}: {value}")
        if isinstance(value, tuple):
            logits, stats = value
            return PartyOutcome(stats=stats, logits=logits)
        return PartyOutcome(stats=value)

    def kill(self) -> None:
        """Stop the process if it still runs (a no-op once it has ended)."""
        if self._process.is_alive():
            self._process.kill()
        self._process.join(timeout=10)


def crypto_provider(rendezvous: parties.Rendezvous) -> parties.PartyStats:
    return parties.crypto_provider(rendezvous)


def model_owner(
    rendezvous: parties.Rendezvous, spec: ModelSpec, weights: bytes, shape: tuple[int, ...]
) -> parties.PartyStats:
    """The model owner's party; ``weights`` are safetensors bytes (the spawn copies them)."""
    return parties.model_owner(rendezvous, spec, load_safetensors(weights), shape)


def data_owner(
    rendezvous: parties.Rendezvous, spec: ModelSpec, images: np.ndarray
) -> tuple[np.ndarray, parties.PartyStats]:
    logits, stats = parties.data_owner(rendezvous, spec, torch.from_numpy(images))
    return logits.numpy(), stats


def _run(
    target: Callable[..., Any],
    args: tuple[Any, ...],
    results: multiprocessing.connection.Connection,
    threads: int,
) -> None:
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        value = target(*args)
    except BaseException as error:  # reported to the parent, which decides what it means
        results.send(("error", f"{type(error).__name__}: {error}"))
        raise
    results.send(("ok", value))
