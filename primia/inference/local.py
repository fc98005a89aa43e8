"""All three parties on this machine, each a fresh process: for tests, demos and benchmarks.

Processes are spawned, never forked: a forked child whose parent had started PyTorch's
OpenMP pool deadlocks in its first convolution. Each party runs with one torch thread.
"""

from __future__ import annotations

import multiprocessing
import queue
import socket
from typing import Any

import torch
from safetensors.torch import load as load_safetensors

from primia.errors import PrimiaError
from primia.federated.weights import encode
from primia.inference import parties
from primia.models.checkpoint import ModelSpec


class InferenceFailed(PrimiaError):
    """A party of an encrypted inference session failed or did not finish in time."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_local(
    spec: ModelSpec,
    state: dict[str, torch.Tensor],
    images: torch.Tensor,
    *,
    timeout_s: float = 600.0,
) -> torch.Tensor:
    """The logits of ``images`` under encrypted inference, the three parties on loopback."""
    rendezvous = parties.Rendezvous("127.0.0.1", free_port())
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[Any] = context.Queue()
    weights = encode(state)
    processes = [
        context.Process(target=_crypto_provider, args=(rendezvous,), name="crypto-provider"),
        context.Process(
            target=_model_owner,
            args=(rendezvous, spec, weights, tuple(images.shape)),
            name="model-owner",
        ),
        context.Process(
            target=_data_owner, args=(rendezvous, spec, images, results), name="data-owner"
        ),
    ]
    for process in processes:
        process.start()
    try:
        outcome, value = results.get(timeout=timeout_s)
    except queue.Empty:
        raise InferenceFailed(f"no result within {timeout_s:g} s") from None
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    if outcome != "ok":
        raise InferenceFailed(f"the data owner failed: {value}")
    return torch.from_numpy(value)


def _crypto_provider(rendezvous: parties.Rendezvous) -> None:
    torch.set_num_threads(1)
    parties.crypto_provider(rendezvous)


def _model_owner(
    rendezvous: parties.Rendezvous, spec: ModelSpec, weights: bytes, shape: tuple[int, ...]
) -> None:
    torch.set_num_threads(1)
    parties.model_owner(rendezvous, spec, load_safetensors(weights), shape)


def _data_owner(
    rendezvous: parties.Rendezvous, spec: ModelSpec, images: torch.Tensor, results: Any
) -> None:
    torch.set_num_threads(1)
    try:
        logits = parties.data_owner(rendezvous, spec, images)
    except Exception as error:  # reported to the parent, which raises InferenceFailed
        results.put(("error", f"{type(error).__name__}: {error}"))
        raise
    results.put(("ok", logits.numpy()))
