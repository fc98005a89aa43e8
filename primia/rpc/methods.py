"""The ``Coordinator`` service's methods as both ends call them.

The generated stubs (de)serialize every message with the protobuf runtime. ``Join`` and
``Probe`` carry blobs, so here they read and write chunk messages with
:mod:`primia.rpc.chunk_wire` (same wire format, one copy of each payload instead of
five): a stream's messages are protobuf messages, or :class:`~primia.blobs.BlobChunk`
for chunks received, and pre-encoded ``bytes`` for chunks sent. ``GetStatus`` is left to
the generated code.
"""

from __future__ import annotations

from typing import Any

import grpc

from primia.rpc import chunk_wire
from primia.rpc.generated import federation_pb2 as pb

SERVICE = "primia.v1.Coordinator"


def add_to_server(service: Any, server: grpc.Server) -> None:
    """Serve ``service`` (a ``CoordinatorServicer``) on ``server``."""
    handlers = {
        "Join": grpc.stream_stream_rpc_method_handler(
            service.Join,
            request_deserializer=chunk_wire.parser(pb.NodeMessage, envelope=True),
            response_serializer=chunk_wire.serialize,
        ),
        "GetStatus": grpc.unary_unary_rpc_method_handler(
            service.GetStatus,
            request_deserializer=pb.StatusRequest.FromString,
            response_serializer=pb.StatusReply.SerializeToString,
        ),
        "Probe": grpc.stream_unary_rpc_method_handler(
            service.Probe,
            request_deserializer=chunk_wire.parser(pb.Chunk, envelope=False),
            response_serializer=pb.ProbeReceipt.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


def join(channel: grpc.Channel) -> grpc.StreamStreamMultiCallable:
    """A node's ``Join``: send NodeMessages (chunks as encoded bytes), receive
    CoordinatorMessages (chunks as BlobChunks)."""
    return channel.stream_stream(
        f"/{SERVICE}/Join",
        request_serializer=chunk_wire.serialize,
        response_deserializer=chunk_wire.parser(pb.CoordinatorMessage, envelope=True),
    )


def probe(channel: grpc.Channel) -> grpc.StreamUnaryMultiCallable:
    """``Probe``: send bare chunks (encoded bytes), receive a ProbeReceipt."""
    return channel.stream_unary(
        f"/{SERVICE}/Probe",
        request_serializer=chunk_wire.serialize,
        response_deserializer=pb.ProbeReceipt.FromString,
    )
