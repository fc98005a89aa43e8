"""All three parties on this machine, each in its own process: for tests and benchmarks.

>>> run = run_local(spec, model.state_dict(), images)      # doctest: +SKIP
>>> run.logits.shape, [party.peak_memory_bytes for party in run.parties]  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from primia.errors import PrimiaError
from primia.federated.weights import encode
from primia.inference import parties, processes
from primia.launch import free_port
from primia.models.checkpoint import ModelSpec


class InferenceFailed(PrimiaError):
    """A party of an encrypted inference session failed or did not finish in time."""


@dataclass(frozen=True)
class EncryptedRun:
    logits: torch.Tensor
    parties: tuple[parties.PartyStats, ...]
    """Model owner, data owner, crypto provider."""
    seconds: float
    """Wall time from starting the processes to the data owner's result."""


def run_local(
    spec: ModelSpec,
    state: dict[str, torch.Tensor],
    images: torch.Tensor,
    *,
    timeout_s: float = 600.0,
    threads: int = 1,
    model_owner: Callable[..., parties.PartyStats] = processes.model_owner,
    data_owner: Callable[..., tuple[np.ndarray, parties.PartyStats]] = processes.data_owner,
) -> EncryptedRun:
    """The logits of ``images`` under encrypted inference, the three parties on loopback.

    Each party runs with ``threads`` torch threads (1: three processes share two cores).
    ``model_owner`` and ``data_owner`` are the parties' functions, with the signatures of
    :func:`processes.model_owner` and :func:`processes.data_owner` (the benchmark passes
    plain CrypTen's to compare).
    """
    started = time.perf_counter()
    rendezvous = parties.Rendezvous("127.0.0.1", free_port())
    shape = tuple(images.shape)
    party_processes = [
        processes.PartyProcess(
            "model owner",
            model_owner,
            (rendezvous, spec, encode(state), shape),
            threads=threads,
        ),
        processes.PartyProcess(
            "data owner",
            data_owner,
            (rendezvous, spec, images.detach().cpu().float().numpy()),
            threads=threads,
        ),
        processes.PartyProcess(
            "crypto provider", processes.crypto_provider, (rendezvous,), threads=threads
        ),
    ]
    for party in party_processes:
        party.start()
    deadline = started + timeout_s
    try:
        # the data owner first: its result is the latency; the others end right after it
        data = _outcome(party_processes[1], deadline, timeout_s)
        seconds = time.perf_counter() - started
        model = _outcome(party_processes[0], deadline, timeout_s)
        dealer = _outcome(party_processes[2], deadline, timeout_s)
    finally:
        for party in party_processes:
            party.kill()
    assert data.logits is not None
    stats = tuple(o.stats for o in (model, data, dealer) if o.stats is not None)
    return EncryptedRun(torch.from_numpy(data.logits), stats, seconds)


def _outcome(
    party: processes.PartyProcess, deadline: float, timeout_s: float
) -> processes.PartyOutcome:
    outcome = party.wait(max(deadline - time.perf_counter(), 0.0))
    if outcome is None:
        raise InferenceFailed(f"the {party.name} did not finish within {timeout_s:g} s")
    if outcome.error is not None:
        raise InferenceFailed(outcome.error)
    return outcome
