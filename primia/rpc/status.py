"""Ask a running coordinator for its state (``primia status``)."""

from __future__ import annotations

import grpc

from primia.errors import PrimiaError
from primia.federated.coordinator import FederationStatus
from primia.pki import TLSFiles
from primia.rpc import codec
from primia.rpc.generated import federation_pb2 as pb
from primia.rpc.generated import federation_pb2_grpc as pb_grpc
from primia.rpc.tls import secure_channel


class StatusUnavailable(PrimiaError):
    """The coordinator could not be asked."""


def fetch_status(
    address: str, files: TLSFiles, *, server_name: str = "coordinator", timeout: float = 10.0
) -> FederationStatus:
    with secure_channel(address, files, server_name=server_name) as channel:
        try:
            reply = pb_grpc.CoordinatorStub(channel).GetStatus(pb.StatusRequest(), timeout=timeout)
        except grpc.RpcError as error:
            raise StatusUnavailable(
                f"cannot get the status from {address} ({error.code().name}: {error.details()}); "
                "check that the coordinator runs there and that your certificate is from its CA"
            ) from error
    return codec.status_of(reply)
