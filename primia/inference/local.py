"""All three parties on this machine, each in its own process: for tests and benchmarks.

>>> run = run_local(spec, model.state_dict(), images)      # doctest: +SKIP
>>> run.logits.shape, [party.peak_memory_bytes for party in run.parties]  # doctest: +SKIP

By default the parties meet over the mutual-TLS links the servers use, with a throwaway
consortium (a CA and three certificates in a temporary folder); ``secure=False`` runs
CrypTen's own unauthenticated gloo process group instead (benchmarks compare the two).
"""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from primia import pki
from primia.errors import PrimiaError
from primia.federated.weights import encode
from primia.inference import parties, processes
from primia.inference.links import LinkPeer, LinkPlan
from primia.launch import free_port
from primia.models.checkpoint import ModelSpec

NAMES = ("model-owner", "data-owner", "crypto-provider")
JOIN_TIMEOUT_S = 60.0


class InferenceFailed(PrimiaError):
    """A party of an encrypted inference session failed or did not finish in time."""


@dataclass(frozen=True)
class EncryptedRun:
    logits: torch.Tensor
    parties: tuple[parties.PartyStats, ...]
    """Model owner, data owner, crypto provider."""
    seconds: float
    """Wall time from giving the parties their jobs to the data owner's result (with a
    ``pool``, its processes were started before)."""


def local_plans(pki_dir: Path, session_id: str = "local") -> dict[int, LinkPlan]:
    """The link plans of the three parties on loopback, the model owner's and the crypto
    provider's ports still to be filled in (see :func:`run_local`)."""
    files = {rank: pki.tls_files(pki_dir, name) for rank, name in enumerate(NAMES)}
    model, data, dealer = (
        LinkPeer(0, NAMES[0], ("inference",)),
        LinkPeer(1, NAMES[1], ("node",)),
        LinkPeer(2, NAMES[2], ("inference",)),
    )
    listen = {"listen_host": "127.0.0.1", "join_timeout_s": JOIN_TIMEOUT_S}
    return {
        0: LinkPlan(session_id, 0, (data, dealer), files[0], **listen),  # type: ignore[arg-type]
        1: LinkPlan(session_id, 1, (model, dealer), files[1]),
        2: LinkPlan(session_id, 2, (model, data), files[2], **listen),  # type: ignore[arg-type]
    }


def local_consortium(directory: Path) -> Path:
    """A CA and the three parties' certificates in ``directory``."""
    pki.init_ca(directory, "local")
    pki.issue(directory, NAMES[0], "inference")
    pki.issue(directory, NAMES[1], "node")
    pki.issue(directory, NAMES[2], "inference")
    return directory


def run_local(
    spec: ModelSpec,
    state: dict[str, torch.Tensor],
    images: torch.Tensor,
    *,
    timeout_s: float = 600.0,
    threads: int = 1,
    secure: bool = True,
    pool: processes.PartyPool | None = None,
    model_owner: Callable[..., parties.PartyStats] = processes.model_owner,
    data_owner: Callable[..., tuple[np.ndarray, parties.PartyStats]] = processes.data_owner,
    crypto_provider: Callable[..., parties.PartyStats] = processes.crypto_provider,
    plain: bool = False,
) -> EncryptedRun:
    """The logits of ``images`` under encrypted inference, the three parties on loopback.

    Each party runs with ``threads`` torch threads (1: three processes share two cores),
    in a process from ``pool`` if given (warm), else started now. ``model_owner``,
    ``data_owner`` and ``crypto_provider`` are the parties' functions, with the signatures
    of :func:`processes.model_owner`, :func:`processes.data_owner` and
    :func:`processes.crypto_provider` (the benchmark passes plain CrypTen's to compare,
    tests deviating parties); all three get ``plain`` (True: CrypTen's own dealing and
    multiplication, without :mod:`primia.inference.acceleration`).
    """
    parts = (model_owner, data_owner, crypto_provider)
    if plain:
        parts = tuple(functools.partial(part, plain=True) for part in parts)  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as scratch:
        plans = local_plans(local_consortium(Path(scratch))) if secure else None
        return _run(spec, state, images, plans, timeout_s, threads, pool, *parts)


def _run(
    spec: ModelSpec,
    state: dict[str, torch.Tensor],
    images: torch.Tensor,
    plans: dict[int, LinkPlan] | None,
    timeout_s: float,
    threads: int,
    pool: processes.PartyPool | None,
    model_owner: Callable[..., parties.PartyStats],
    data_owner: Callable[..., tuple[np.ndarray, parties.PartyStats]],
    crypto_provider: Callable[..., parties.PartyStats],
) -> EncryptedRun:
    source: processes.PartyPool | _Started = pool or _Started(3, threads)
    weights, shape = encode(state), tuple(images.shape)
    pixels = images.detach().cpu().float().numpy()
    started = time.perf_counter()
    deadline = started + timeout_s
    taken: list[processes.PartyProcess] = []
    try:
        if plans is None:
            meeting: dict[int, parties.Meeting] = dict.fromkeys(
                range(3), parties.Rendezvous("127.0.0.1", free_port())
            )
        else:
            meeting = dict(plans)
        owner = source.take("model owner", model_owner, (meeting[0], spec, weights, shape))
        taken.append(owner)
        if plans is not None:
            owner_port = _port(owner, deadline)
            meeting[2] = _with_port(plans[2], 0, owner_port)
        dealer = source.take("crypto provider", crypto_provider, (meeting[2],))
        taken.append(dealer)
        if plans is not None:
            dealer_port = _port(dealer, deadline)
            meeting[1] = _with_port(_with_port(plans[1], 0, owner_port), 2, dealer_port)
        data = source.take("data owner", data_owner, (meeting[1], spec, pixels))
        taken.append(data)
        # the data owner first: its result is the latency; the others end right after it
        data_outcome = _outcome(data, deadline, timeout_s)
        seconds = time.perf_counter() - started
        model_outcome = _outcome(owner, deadline, timeout_s)
        dealer_outcome = _outcome(dealer, deadline, timeout_s)
    finally:
        for party in taken:
            party.kill()
    assert data_outcome.logits is not None
    outcomes = (model_outcome, data_outcome, dealer_outcome)
    stats = tuple(o.stats for o in outcomes if o.stats is not None)
    return EncryptedRun(torch.from_numpy(data_outcome.logits), stats, seconds)


class _Started:
    """``count`` processes started at once (cold, without a pool), handed out in turn."""

    def __init__(self, count: int, threads: int) -> None:
        self._processes = [processes.PartyProcess("party", threads=threads) for _ in range(count)]
        for process in self._processes:
            process.start()

    def take(
        self, name: str, target: Callable[..., object], args: tuple[object, ...]
    ) -> processes.PartyProcess:
        process = self._processes.pop(0)
        process.assign(name, target, args)
        return process


def _with_port(plan: LinkPlan, rank: int, port: int) -> LinkPlan:
    peers = tuple(
        LinkPeer(p.rank, p.name, p.roles, "127.0.0.1", port) if p.rank == rank else p
        for p in plan.peers
    )
    return LinkPlan(
        plan.session_id,
        plan.rank,
        peers,
        plan.tls,
        listen_host=plan.listen_host,
        listen_ports=plan.listen_ports,
        join_timeout_s=plan.join_timeout_s,
    )


def _port(party: processes.PartyProcess, deadline: float) -> int:
    port = party.listening(max(deadline - time.perf_counter(), 0.0))
    if port is None:
        outcome = party.wait(0)
        raise InferenceFailed(
            f"the {party.name} did not start listening: {outcome.error if outcome else 'timeout'}"
        )
    return port


def _outcome(
    party: processes.PartyProcess, deadline: float, timeout_s: float
) -> processes.PartyOutcome:
    outcome = party.wait(max(deadline - time.perf_counter(), 0.0))
    if outcome is None:
        raise InferenceFailed(f"the {party.name} did not finish within {timeout_s:g} s")
    if outcome.error is not None:
        raise InferenceFailed(outcome.error)
    return outcome
