"""The gRPC servicers of encrypted inference: thin layers over :mod:`primia.inference.sessions`.

Each call checks the caller's certificate (role, and for the model owner an optional list
of names), turns the request into plain values, and maps a refusal onto a status code
whose detail is the refusal's message. A bad request never reaches a party process.
"""

from __future__ import annotations

import logging
import re

import grpc

from primia.inference.parties import CRYPTO_PROVIDER, DATA_OWNER
from primia.inference.sessions import DealerSessions, ModelOwnerSessions, Refusal, SessionRefused
from primia.limits import clean_text
from primia.models.checkpoint import ModelSpec
from primia.pki import Identity
from primia.rpc.codec import spec_to_proto
from primia.rpc.generated import inference_pb2 as pb
from primia.rpc.generated import inference_pb2_grpc as pb_grpc
from primia.rpc.tls import abort, authorize

log = logging.getLogger(__name__)

_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_STATUS = {
    Refusal.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    Refusal.BUSY: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Refusal.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Refusal.FORBIDDEN: grpc.StatusCode.PERMISSION_DENIED,
    Refusal.DUPLICATE: grpc.StatusCode.ALREADY_EXISTS,
}


def describe(spec: ModelSpec, max_batch: int) -> pb.ModelDescription:
    return pb.ModelDescription(spec=spec_to_proto(spec), max_batch=max_batch)


class ModelOwnerService(pb_grpc.ModelOwnerServicer):
    def __init__(
        self, sessions: ModelOwnerSessions, *, ca_pem: bytes, allowed: tuple[str, ...] = ()
    ) -> None:
        self._sessions = sessions
        self._ca_pem = ca_pem
        self._allowed = allowed

    def Describe(
        self, request: pb.DescribeRequest, context: grpc.ServicerContext
    ) -> pb.ModelDescription:
        self._authorize(context, "Describe")
        return describe(self._sessions.spec, self._sessions.max_batch)

    def OpenSession(
        self, request: pb.SessionRequest, context: grpc.ServicerContext
    ) -> pb.SessionOffer:
        identity = self._authorize(context, "OpenSession")
        try:
            offer = self._sessions.open(tuple(request.input_shape), identity.name)
        except SessionRefused as refusal:
            log.warning("refused a session for %s: %s", identity.name, refusal)
            abort(context, _STATUS[refusal.reason], str(refusal))
        return pb.SessionOffer(
            session_id=offer.session_id,
            rendezvous_host=offer.model_owner.host,
            rendezvous_port=offer.model_owner.port,
            world_size=offer.world_size,
            rank=DATA_OWNER,
            model=describe(offer.spec, self._sessions.max_batch),
            input_shape=list(offer.input_shape),
            deadline_s=offer.deadline_s,
            crypto_provider_host=offer.crypto_provider.host,
            crypto_provider_port=offer.crypto_provider.port,
            crypto_provider_name=offer.crypto_provider_name,
            join_timeout_s=offer.join_timeout_s,
        )

    def _authorize(self, context: grpc.ServicerContext, call: str) -> Identity:
        return authorize(
            context, self._ca_pem, call, roles=("node", "inference"), names=self._allowed
        )


class CryptoProviderService(pb_grpc.CryptoProviderServicer):
    def __init__(self, sessions: DealerSessions, *, ca_pem: bytes) -> None:
        self._sessions = sessions
        self._ca_pem = ca_pem

    def Deal(self, request: pb.DealRequest, context: grpc.ServicerContext) -> pb.DealReceipt:
        identity = authorize(context, self._ca_pem, "Deal", roles=("inference",))
        if not _SESSION_ID.fullmatch(request.session_id) or not request.data_owner_name:
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "Deal needs a session id (1-32 letters, digits, - or _) and the data owner's name",
            )
        name = request.data_owner_name
        if len(name) > 255 or clean_text(name, 255) != name:
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "Deal's data_owner_name must be at most 255 printable characters, got "
                f"{clean_text(name, 64)!r}",
            )
        if not 0 < request.rendezvous_port < 65536 or not request.deadline_s > 0:
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "Deal needs a port in 1-65535 and a positive deadline",
            )
        try:
            listening = self._sessions.deal(
                request.session_id,
                request.rendezvous_port,
                request.deadline_s,
                request.data_owner_name,
                identity.name,
            )
        except SessionRefused as refusal:
            log.warning("refused to deal for %s: %s", identity.name, refusal)
            abort(context, _STATUS[refusal.reason], str(refusal))
        return pb.DealReceipt(rank=CRYPTO_PROVIDER, host=listening.host, port=listening.port)
