"""The data owner: get predictions for its images from a model it never sees.

>>> config = load_data_owner_config(Path("data-owner.toml"))     # doctest: +SKIP
>>> model = describe_model(config)                                 # doctest: +SKIP
>>> images = load_images([Path("x.png")], model.spec)              # doctest: +SKIP
>>> prediction = predict(images, config)                           # doctest: +SKIP
>>> prediction.probabilities                                       # doctest: +SKIP

:func:`predict` checks the images against the model's public description before it asks
for a session, so a wrong size or channel count costs no MPC. The data owner's party runs
in a process of its own with the session's deadline: if the model owner vanishes, the
call fails when the deadline passes instead of hanging. Its MPC links admit only the model
owner (the name in ``server_name``) and the crypto provider the offer names (one of
``crypto_providers`` if that is set), both by their certificates. A
:class:`~primia.inference.processes.PartyPool` passed as ``pool`` keeps its processes warm
between predictions.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

import grpc
import torch

from primia.errors import PrimiaError
from primia.inference import processes
from primia.inference.inputs import check_images, probabilities
from primia.inference.links import LinkPeer, LinkPlan
from primia.inference.parties import (
    CRYPTO_PROVIDER,
    DATA_OWNER,
    MODEL_OWNER,
    WORLD_SIZE,
    PartyStats,
)
from primia.inference.party_config import DataOwnerConfig
from primia.models import model_names
from primia.models.checkpoint import ModelSpec
from primia.models.plugins import plugin_needed
from primia.rpc.codec import MessageError, spec_from_proto
from primia.rpc.generated import inference_pb2 as pb
from primia.rpc.generated import inference_pb2_grpc as pb_grpc
from primia.rpc.tls import secure_channel

CALL_TIMEOUT_S = 300.0
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
    images: torch.Tensor,
    config: DataOwnerConfig,
    *,
    served: ServedModel | None = None,
    pool: processes.PartyPool | None = None,
) -> Prediction:
    """Encrypted inference on ``images`` (N, C, S, S in [0, 1]); only this process learns
    the logits. ``served`` is the model's description if the caller has it already."""
    started = time.perf_counter()
    with _channel(config) as channel:
        stub = pb_grpc.ModelOwnerStub(channel)
        served = served or _describe(config, stub)
        check_buildable(served.spec)
        check_images(images, served.spec, served.max_batch)
        # without a pool, start the party process before asking, so that the session's
        # short join deadline is not spent importing CrypTen
        if pool is None:
            pool = processes.PartyPool(0, threads=config.threads)
            pool.prestart(1)
        request = pb.SessionRequest(input_shape=list(images.shape))
        offer = _call(config, stub.OpenSession, request)
    return join_session(offer, images, config, pool=pool, started=started)


def link_plan(offer: pb.SessionOffer, config: DataOwnerConfig) -> LinkPlan:
    """The data owner's links for ``offer``: to the model owner named ``server_name`` and
    to the crypto provider the offer names, if ``crypto_providers`` admits it."""
    if offer.world_size != WORLD_SIZE or offer.rank != DATA_OWNER:
        raise PredictionFailed(
            f"the model owner offered rank {offer.rank} of {offer.world_size}; this version "
            f"joins as rank {DATA_OWNER} of {WORLD_SIZE}: upgrade one of the two"
        )
    dealer = offer.crypto_provider_name
    if config.crypto_providers and dealer not in config.crypto_providers:
        raise PredictionFailed(
            f"the model owner named the crypto provider {dealer!r}, not one of "
            f"{', '.join(config.crypto_providers)} (crypto_providers)"
        )
    if not dealer or dealer == config.server_name:
        raise PredictionFailed(
            f"the model owner named {dealer!r} as the crypto provider: it must be a third party"
        )
    return LinkPlan(
        offer.session_id,
        DATA_OWNER,
        (
            LinkPeer(
                MODEL_OWNER,
                config.server_name,
                ("inference",),
                offer.rendezvous_host,
                offer.rendezvous_port,
            ),
            LinkPeer(
                CRYPTO_PROVIDER,
                dealer,
                ("inference",),
                offer.crypto_provider_host,
                offer.crypto_provider_port,
            ),
        ),
        config.tls,
        join_timeout_s=offer.join_timeout_s or 30.0,
    )


def join_session(
    offer: pb.SessionOffer,
    images: torch.Tensor,
    config: DataOwnerConfig,
    *,
    pool: processes.PartyPool | None = None,
    started: float | None = None,
) -> Prediction:
    """Run the data owner's party of the session ``offer`` describes on ``images``."""
    started = time.perf_counter() if started is None else started
    plan = link_plan(offer, config)
    spec = _spec(offer.model)
    check_buildable(spec)
    name = f"data owner of session {offer.session_id}"
    arguments = (plan, spec, images.float().numpy())
    party_function = functools.partial(processes.data_owner, plugins=config.plugins)
    if pool is None:
        party = processes.PartyProcess(name, party_function, arguments, threads=config.threads)
        party.start()
    else:
        party = pool.take(name, party_function, arguments)
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


def check_buildable(spec: ModelSpec) -> None:
    """Refuse, before any session, a served model this data owner cannot build: its party
    builds the architecture (the weights come shared), so a plug-in must be loaded here."""
    if spec.architecture not in model_names():
        raise PredictionFailed(plugin_needed(spec.architecture, switch="allow_plugins"))


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
