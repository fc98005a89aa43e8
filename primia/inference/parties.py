"""The three parties of an encrypted inference session, each in its own process.

Ranks: 0 the model owner, 1 the data owner, 2 the crypto provider (CrypTen's TTP dealer,
which deals Beaver triples and learns nothing of inputs or weights). They meet at a
rendezvous (``tcp://host:port``, gloo over TCP). CrypTen's default "trusted first party"
provider lets party 0 generate every triple, so the model owner could unmask the image;
it is never used: :func:`join` sets the TTP provider before CrypTen starts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from primia.inference.compat import import_crypten
from primia.inference.encrypted import EncryptedModel
from primia.models.checkpoint import ModelSpec

MODEL_OWNER = 0
DATA_OWNER = 1
CRYPTO_PROVIDER = 2
WORLD_SIZE = 2
"""The computing parties; the crypto provider joins as rank WORLD_SIZE."""


@dataclass(frozen=True)
class Rendezvous:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"


@contextmanager
def join(rendezvous: Rendezvous, rank: int) -> Iterator[Any]:
    """Start CrypTen as ``rank`` with the TTP provider; yields the ``crypten`` module."""
    crypten = import_crypten()
    crypten.cfg.mpc.provider = "TTP"
    os.environ.update(
        {
            "WORLD_SIZE": str(WORLD_SIZE),
            "RANK": str(rank),
            "RENDEZVOUS": rendezvous.url,
            "DISTRIBUTED_BACKEND": "gloo",
        }
    )
    crypten.init()
    try:
        yield crypten
    finally:
        crypten.uninit()


def crypto_provider(rendezvous: Rendezvous) -> None:
    """Deal correlated randomness until the model owner ends the session."""
    with join(rendezvous, CRYPTO_PROVIDER) as crypten:
        crypten.mpc.provider.TTPServer()


def model_owner(
    rendezvous: Rendezvous,
    spec: ModelSpec,
    state: dict[str, torch.Tensor],
    input_shape: tuple[int, ...],
) -> None:
    """Share the weights, run the model on the data owner's shared images; learn nothing."""
    model = spec.build()
    model.load_state_dict(state)
    with join(rendezvous, MODEL_OWNER) as crypten:
        encrypted = EncryptedModel(model, src=MODEL_OWNER, crypten=crypten)
        images = crypten.cryptensor(torch.zeros(input_shape), src=DATA_OWNER)
        encrypted(images).get_plain_text(dst=DATA_OWNER)


def data_owner(rendezvous: Rendezvous, spec: ModelSpec, images: torch.Tensor) -> torch.Tensor:
    """Share the images, run the model owner's shared model; return the logits (only here)."""
    model = spec.build()  # the architecture only: the weights come shared from the owner
    with join(rendezvous, DATA_OWNER) as crypten:
        encrypted = EncryptedModel(model, src=MODEL_OWNER, crypten=crypten)
        shared = crypten.cryptensor(images, src=DATA_OWNER)
        logits: torch.Tensor = encrypted(shared).get_plain_text(dst=DATA_OWNER)
    return logits
