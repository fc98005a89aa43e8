"""primia.rpc.methods registers the Coordinator service by hand (to put chunk_wire on Join
and Probe); it must serve every method the contract declares, with the same kind of
streaming, or a method added to the proto would be answered UNIMPLEMENTED."""

from types import SimpleNamespace

import grpc

from primia.rpc import methods
from primia.rpc.generated import federation_pb2 as pb


class _RecordingServer:
    def __init__(self) -> None:
        self.handlers: list[grpc.GenericRpcHandler] = []

    def add_generic_rpc_handlers(self, handlers: tuple[grpc.GenericRpcHandler, ...]) -> None:
        self.handlers.extend(handlers)


def test_every_method_of_the_contract_is_served_with_its_streaming_kind() -> None:
    server = _RecordingServer()
    service = SimpleNamespace(Join=object(), GetStatus=object(), Probe=object())
    methods.add_to_server(service, server)  # type: ignore[arg-type]
    (handler,) = server.handlers
    descriptor = pb.DESCRIPTOR.services_by_name["Coordinator"]
    assert descriptor.full_name == methods.SERVICE
    for method in descriptor.methods:
        served = handler.service(SimpleNamespace(method=f"/{methods.SERVICE}/{method.name}"))
        assert served is not None, f"{method.name} is not registered in primia.rpc.methods"
        assert (served.request_streaming, served.response_streaming) == (
            method.client_streaming,
            method.server_streaming,
        ), method.name
