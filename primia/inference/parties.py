"""The three parties of an encrypted inference session, each in its own process.

Ranks: 0 the model owner, 1 the data owner, 2 the crypto provider (CrypTen's TTP dealer,
which deals Beaver triples and learns nothing of inputs or weights). They talk over the
session's mutual-TLS links (a :class:`~primia.inference.links.LinkPlan`, see
:mod:`primia.inference.links` and :mod:`primia.inference.communicator`). A
:class:`Rendezvous` instead runs CrypTen's own gloo process group, unauthenticated and
unencrypted: only benchmarks use it, to measure what the secured links cost. CrypTen's
default "trusted first party" provider lets party 0 generate every triple, so the model
owner could unmask the image; it is never used: :func:`join` sets the TTP provider before
CrypTen starts.
"""

from __future__ import annotations

import os
import resource
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from primia.inference import acceleration, communicator
from primia.inference.compat import import_crypten
from primia.inference.encrypted import EncryptedModel
from primia.inference.links import LinkPlan, bind_listener, establish
from primia.models.checkpoint import ModelSpec

MODEL_OWNER = 0
DATA_OWNER = 1
CRYPTO_PROVIDER = 2
WORLD_SIZE = 2
"""The computing parties; the crypto provider joins as rank WORLD_SIZE."""


@dataclass(frozen=True)
class Rendezvous:
    """A gloo rendezvous (unauthenticated, unencrypted; benchmarks only)."""

    host: str
    port: int

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"


ROLES = {MODEL_OWNER: "model owner", DATA_OWNER: "data owner", CRYPTO_PROVIDER: "crypto provider"}


@dataclass(frozen=True)
class PartyStats:
    """What one party spent on a session, from CrypTen's communication statistics."""

    role: str
    rounds: int
    """Messages this party sent or received (CrypTen counts each collective as one)."""
    bytes_communicated: int
    """Bytes of the tensors this party sent and received, as CrypTen counts them."""
    seconds: float
    """Wall time from joining the session to leaving it."""
    peak_memory_bytes: int
    """The process's peak resident memory."""


@dataclass
class _Session:
    crypten: Any
    rank: int
    started: float

    def stats(self) -> PartyStats:
        counts = self.crypten.comm.get().get_communication_stats()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return PartyStats(
            role=ROLES[self.rank],
            rounds=int(counts["rounds"]),
            bytes_communicated=int(counts["bytes"]),
            seconds=time.perf_counter() - self.started,
            # ru_maxrss is in KiB on Linux and in bytes on macOS
            peak_memory_bytes=int(peak) * (1 if sys.platform == "darwin" else 1024),
        )


Meeting = LinkPlan | Rendezvous
"""How a party meets its peers."""
Progress = Callable[[str, int], None]
"""Told ``("listening", port)`` once the party listens for its peers, ``("joined", 0)`` once
its links are up (see :mod:`primia.inference.processes`)."""


def no_progress(event: str, value: int) -> None:
    return None


@contextmanager
def join(
    meeting: Meeting, rank: int, progress: Progress = no_progress, *, plain: bool = False
) -> Iterator[_Session]:
    """Start CrypTen as ``rank`` with the TTP provider, counting what it communicates.

    Unless ``plain``, with primia's exact faster forms of CrypTen's dealing and Beaver
    multiplication (:mod:`primia.inference.acceleration`); the three parties of a session
    must agree on ``plain`` (only benchmarks set it, to measure plain CrypTen).
    """
    started = time.perf_counter()
    crypten = import_crypten()
    if not plain:
        acceleration.install()
    crypten.cfg.mpc.provider = "TTP"
    crypten.cfg.communicator.verbose = True
    if isinstance(meeting, LinkPlan):
        if meeting.rank != rank:
            raise ValueError(f"the link plan is rank {meeting.rank}'s, not rank {rank}'s")
        listener = None
        if meeting.listens:
            listener = bind_listener(meeting.listen_host, meeting.listen_ports)
            progress("listening", listener.getsockname()[1])
        links = establish(meeting, listener)
        progress("joined", 0)
        communicator.install(links, world_size=WORLD_SIZE, mirrored_requests=not plain)
    else:
        os.environ.update(
            {
                "WORLD_SIZE": str(WORLD_SIZE),
                "RANK": str(rank),
                "RENDEZVOUS": meeting.url,
                "DISTRIBUTED_BACKEND": "gloo",
            }
        )
    crypten.init()
    try:
        yield _Session(crypten, rank, started)
    finally:
        crypten.uninit()


def open_to(x: Any, rank: int) -> torch.Tensor | None:
    """The plaintext of CrypTensor ``x`` at ``rank``, None elsewhere (a collective: every
    party calls it).

    CrypTen 0.4.1's ``get_plain_text`` decodes negative values by dividing by 2^16 − 1
    instead of 2^16, which returns some values below −2 exactly 1 too low; the raw ring
    elements are divided here instead.
    """
    raw: torch.Tensor | None = x.reveal(dst=rank)
    return None if raw is None else (raw.double() / x.encoder.scale).float()


def crypto_provider(
    meeting: Meeting, progress: Progress = no_progress, *, plain: bool = False
) -> PartyStats:
    """Deal correlated randomness until the model owner ends the session (``plain``: as
    plain CrypTen deals, see :func:`join`)."""
    with (
        join(meeting, CRYPTO_PROVIDER, progress, plain=plain) as session,
        warnings.catch_warnings(),
    ):
        # TTPServer calls crypten.init() again, which warns that CrypTen is initialised
        warnings.filterwarnings("ignore", "CrypTen is already initialized")
        session.crypten.mpc.provider.TTPServer()
        return session.stats()


def model_owner(
    meeting: Meeting,
    spec: ModelSpec,
    state: dict[str, torch.Tensor],
    input_shape: tuple[int, ...],
    progress: Progress = no_progress,
    *,
    plain: bool = False,
) -> PartyStats:
    """Share the weights, run the model on the data owner's shared images; learn nothing."""
    model = spec.build()
    model.load_state_dict(state)
    with join(meeting, MODEL_OWNER, progress, plain=plain) as session:
        crypten = session.crypten
        encrypted = EncryptedModel(model, src=MODEL_OWNER, crypten=crypten)
        images = crypten.cryptensor(torch.zeros(input_shape), src=DATA_OWNER)
        open_to(encrypted(images), DATA_OWNER)
        return session.stats()


def data_owner(
    meeting: Meeting,
    spec: ModelSpec,
    images: torch.Tensor,
    progress: Progress = no_progress,
    *,
    plain: bool = False,
) -> tuple[torch.Tensor, PartyStats]:
    """Share the images, run the model owner's shared model; return the logits (only here)."""
    model = spec.build()  # the architecture only: the weights come shared from the owner
    with join(meeting, DATA_OWNER, progress, plain=plain) as session:
        crypten = session.crypten
        encrypted = EncryptedModel(model, src=MODEL_OWNER, crypten=crypten)
        shared = crypten.cryptensor(images, src=DATA_OWNER)
        logits = open_to(encrypted(shared), DATA_OWNER)
        assert logits is not None  # this party is DATA_OWNER
        return logits, session.stats()
