"""The data owner: get predictions for its images from a model it never sees.

>>> config = load_data_owner_config(Path("data-owner.toml"))     # doctest: +SKIP
>>> model = describe_model(config)                                 # doctest: +SKIP
>>> images = load_images([Path("x.png")], model.spec)              # doctest: +SKIP
>>> prediction = predict(images, config)                           # doctest: +SKIP
>>> prediction.probabilities                                       # doctest: +SKIP

:func:`predict` checks the images against the model's public description before it asks
for a session, so a wrong size or channel count costs no MPC. The data owner's party runs
in a process of its own with the session's deadline: if the model owner vanishes, the
call fails when the deadline passes instead of hanging.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import grpc
import torch

from primia.errors import PrimiaError
from primia.inference import processes
from primia.inference.inputs import check_images, probabilities
from primia.inference.parties import (
    DATA_OWNER,
    WORLD_SIZE,
    PartyStats,
    Rendezvous,
    use_network_interface,
)
from primia.inference.party_config import DataOwnerConfig
from primia.models.checkpoint import ModelSpec
from primia.rpc.codec import MessageError, spec_from_proto
from primia.rpc.generated import inference_pb2 as pb
from primia.rpc.generated import inference_pb2_grpc as pb_grpc
from primia.rpc.tls import secure_channel

CALL_TIMEOUT_S = 60.0
"""How long a Describe or OpenSession call may take (the latter starts processes)."""
DEADLINE_MARGIN_S = 30.0
"""The data owner's party outlives the model owner's deadline by this much at most."""


class PredictionFailed(PrimiaError):
    """The model owner refused the session, or the session did not finish."""


@dataclass(frozen=True)
class ServedModel:
    spec: ModelSpec
    max_batch: int


@dataclass(frozen=True)
class Prediction:
    logits: torch.Tensor
    probabilities: torch.Tensor
    spec: ModelSpec
    session_id: str
    seconds: float
    """From asking for the session to holding the logits."""
    stats: PartyStats


def describe_model(config: DataOwnerConfig) -> ServedModel:
    """The public description of the model the model owner serves."""
    with _channel(config) as channel:
        return _describe(config, pb_grpc.ModelOwnerStub(channel))


def predict(
    images: torch.Tensor, config: DataOwnerConfig, *, served: ServedModel | None = None
) -> Prediction:
    """Encrypted inference on ``images`` (N, C, S, S in [0, 1]); only this process learns
    the logits. ``served`` is the model's description if the caller has it already."""
    started = time.perf_counter()
    with _channel(config) as channel:
        stub = pb_grpc.ModelOwnerStub(channel)
        served = served or _describe(config, stub)
        check_images(images, served.spec, served.max_batch)
        request = pb.SessionRequest(input_shape=list(images.shape))
        offer = _call(config, stub.OpenSession, request)
    if offer.world_size != WORLD_SIZE or offer.rank != DATA_OWNER:
        raise PredictionFailed(
            f"the model owner offered rank {offer.rank} of {offer.world_size}; this version "
            f"joins as rank {DATA_OWNER} of {WORLD_SIZE}: upgrade one of the two"
        )
    spec = _spec(offer.model)
    use_network_interface(config.network_interface)
    party = processes.PartyProcess(
        f"data owner of session {offer.session_id}",
        processes.data_owner,
        (Rendezvous(offer.rendezvous_host, offer.rendezvous_port), spec, images.float().numpy()),
        threads=config.threads,
    )
    party.start()
    try:
        outcome = party.wait(offer.deadline_s + DEADLINE_MARGIN_S)
    finally:
        party.kill()
    if outcome is None:
        raise PredictionFailed(
            f"session {offer.session_id} did not finish within {offer.deadline_s:g} s; the "
            "model owner or the crypto provider may be gone"
        )
    if outcome.error is not None or outcome.logits is None or outcome.stats is None:
        raise PredictionFailed(f"session {offer.session_id} failed: {outcome.error}")
    logits = torch.from_numpy(outcome.logits)
    return Prediction(
        logits=logits,
        probabilities=probabilities(logits, spec.task),
        spec=spec,
        session_id=offer.session_id,
        seconds=time.perf_counter() - started,
        stats=outcome.stats,
    )


def _describe(config: DataOwnerConfig, stub: pb_grpc.ModelOwnerStub) -> ServedModel:
    description = _call(config, stub.Describe, pb.DescribeRequest())
    return ServedModel(_spec(description), description.max_batch)


def _spec(description: pb.ModelDescription) -> ModelSpec:
    try:
        return spec_from_proto(description.spec)
    except MessageError as error:
        raise PredictionFailed(f"the model owner described its model wrongly: {error}") from error


def _channel(config: DataOwnerConfig) -> grpc.Channel:
    return secure_channel(config.server, config.tls, server_name=config.server_name)


def _call(config: DataOwnerConfig, method: grpc.UnaryUnaryMultiCallable, request: Any) -> Any:
    try:
        return method(request, timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as error:
        raise PredictionFailed(
            f"the model owner at {config.server} answered {error.code().name}: {error.details()}"
        ) from error
