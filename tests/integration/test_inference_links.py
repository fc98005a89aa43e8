"""The MPC links of encrypted inference admit only the session's parties and carry only
ciphertext; the crypto provider cannot be steered; session limits hold per caller.

Real gRPC servers on loopback with mutual TLS and real CrypTen party processes.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import torch

from primia import pki
from primia.inference import wire
from primia.inference.links import HELLO, MAGIC, LinkPeer, LinkPlan, bind_listener, establish
from primia.inference.party_config import (
    CryptoProviderConfig,
    DataOwnerConfig,
    ModelOwnerConfig,
    ModelOwnerEntry,
)
from primia.inference.sessions import SessionState
from primia.models.checkpoint import ModelSpec, save_model
from primia.rpc.generated import inference_pb2 as pb
from primia.rpc.generated import inference_pb2_grpc as pb_grpc
from primia.rpc.inference_client import join_session
from primia.rpc.inference_server import crypto_provider_server, model_owner_server
from primia.rpc.tls import secure_channel

pytestmark = pytest.mark.slow

TOLERANCE = 0.05  # justified in test_encrypted_inference.py
SPEC = ModelSpec("cnn", num_outputs=3, width=4, image_size=32, label_names=("a", "b", "c"))
OWNER_PORTS = (29900, 29949)


class Servers:
    def __init__(self, pki_dir: Path, model_path: Path, *, join_timeout_s: float) -> None:
        self.pki_dir = pki_dir
        self.dealer = crypto_provider_server(
            CryptoProviderConfig(
                tls=pki.tls_files(pki_dir, "crypto-provider"),
                listen="127.0.0.1:0",
                mpc_ports=(29950, 29999),
                model_owners=(ModelOwnerEntry("model-owner", "127.0.0.1", OWNER_PORTS),),
                join_timeout_s=join_timeout_s,
                pool_size=1,
            )
        )
        dealer_port = self.dealer.start()
        self.owner = model_owner_server(
            ModelOwnerConfig(
                tls=pki.tls_files(pki_dir, "model-owner"),
                listen="127.0.0.1:0",
                crypto_provider=f"127.0.0.1:{dealer_port}",
                rendezvous_ports=OWNER_PORTS,
                max_batch=4,
                max_sessions=4,
                max_sessions_per_caller=1,
                join_timeout_s=join_timeout_s,
                pool_size=1,
            ),
            model_path,
        )
        self.owner.start()

    def data_owner(self, name: str) -> DataOwnerConfig:
        return DataOwnerConfig(
            tls=pki.tls_files(self.pki_dir, name),
            server=f"127.0.0.1:{self.owner.port}",
            crypto_providers=("crypto-provider",),
            threads=1,
        )

    def open(self, name: str, shape: tuple[int, ...]) -> pb.SessionOffer:
        files = pki.tls_files(self.pki_dir, name)
        address = f"127.0.0.1:{self.owner.port}"
        with secure_channel(address, files, server_name="model-owner") as channel:
            return pb_grpc.ModelOwnerStub(channel).OpenSession(
                pb.SessionRequest(input_shape=list(shape)), timeout=300
            )

    def deal(self, name: str, request: pb.DealRequest) -> pb.DealReceipt:
        files = pki.tls_files(self.pki_dir, name)
        address = f"127.0.0.1:{self.dealer.port}"
        with secure_channel(address, files, server_name="crypto-provider") as channel:
            return pb_grpc.CryptoProviderStub(channel).Deal(request, timeout=300)

    def stop(self) -> None:
        self.owner.stop()
        self.dealer.stop()


@pytest.fixture
def model(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    module = SPEC.build().eval()
    path = tmp_path / "model.safetensors"
    save_model(path, module, SPEC)
    return module, path


@pytest.fixture
def servers(
    consortium_pki: Path, model: tuple[torch.nn.Module, Path], request: pytest.FixtureRequest
) -> Iterator[Servers]:
    running = Servers(consortium_pki, model[1], join_timeout_s=getattr(request, "param", 120.0))
    yield running
    running.stop()


def _intrude(port: int, files: pki.TLSFiles | None, offer: pb.SessionOffer) -> bytes | Exception:
    """Connect to ``port`` as an intruder (trusting any server), send the data owner's hello
    for the session, and return what could be read (or the error that stopped it)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if files is not None:
        context.load_cert_chain(str(files.certificate), str(files.key))
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)  # the port is open
    try:
        connection = context.wrap_socket(raw)
        connection.sendall(HELLO.pack(MAGIC, offer.session_id.encode(), 1, 1))
        return connection.recv(1 << 16)
    except (OSError, ssl.SSLError) as error:
        return error
    finally:
        raw.close()


def test_intruders_are_refused_at_every_mpc_port_and_the_session_completes(
    servers: Servers, model: tuple[torch.nn.Module, Path], foreign_pki: Path
) -> None:
    images = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(5))
    offer = servers.open("site0", tuple(images.shape))
    wrong_name = pki.tls_files(servers.pki_dir, "site1")
    # the wrong-name certificate is a valid consortium certificate: only the session's
    # name check can refuse it
    assert pki.verify_peer(wrong_name.certificate.read_bytes(), wrong_name.ca.read_bytes())
    intruders = {
        "no certificate": None,
        "foreign CA, the data owner's name": pki.tls_files(foreign_pki, "site0"),
        "consortium, wrong name": wrong_name,
    }
    for port in (offer.rendezvous_port, offer.crypto_provider_port):
        for who, files in intruders.items():
            result = _intrude(port, files, offer)
            assert isinstance(result, Exception) or result == b"", (who, port, result)

    prediction = join_session(offer, images, servers.data_owner("site0"))

    with torch.no_grad():
        plain = model[0](images)
    assert (prediction.logits - plain).abs().max().item() < TOLERANCE
    for server in (servers.owner, servers.dealer):
        deadline = time.monotonic() + 60
        while server.table.running and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [session.state for session in server.table.finished] == [SessionState.DONE]


def test_the_crypto_provider_deals_only_for_configured_model_owners_and_addresses(
    servers: Servers,
) -> None:
    request = pb.DealRequest(
        session_id="s1", rendezvous_port=OWNER_PORTS[0], deadline_s=60, data_owner_name="site0"
    )
    # an `inference` certificate that is not a configured model owner
    with pytest.raises(grpc.RpcError) as refused:
        servers.deal("viewer", request)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "not among the model owners" in (refused.value.details() or "")
    # the configured model owner, steering to a port outside its configured range
    outside = pb.DealRequest(
        session_id="s2", rendezvous_port=22, deadline_s=60, data_owner_name="site0"
    )
    with pytest.raises(grpc.RpcError) as refused:
        servers.deal("model-owner", outside)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "outside model-owner's configured ports" in (refused.value.details() or "")
    # a request cannot name a host at all
    assert "rendezvous_host" not in pb.DealRequest.DESCRIPTOR.fields_by_name
    assert not servers.dealer.table.running
    # the same request from the configured model owner is dealt for (the check can fail)
    receipt = servers.deal("model-owner", request)
    assert receipt.host == "127.0.0.1" and 29950 <= receipt.port <= 29999
    servers.dealer.table.close()


@pytest.mark.parametrize("servers", [3.0], indirect=True)
def test_sessions_are_limited_per_caller_and_unjoined_ones_are_reaped(servers: Servers) -> None:
    shape = (1, 1, 32, 32)
    first = servers.open("site1", shape)
    with pytest.raises(grpc.RpcError) as refused:
        servers.open("site1", shape)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_sessions_per_caller = 1" in (refused.value.details() or "")
    # another data owner is not blocked by site1's session
    other = servers.open("site2", shape)
    assert other.session_id != first.session_id
    # neither is joined: both are ended at the join deadline, and site1 may open again
    deadline = time.monotonic() + 60
    while servers.owner.table.running and time.monotonic() < deadline:
        servers.owner.table.reap()
        time.sleep(0.2)
    states = [session.state for session in servers.owner.table.finished]
    assert states == [SessionState.EXPIRED, SessionState.EXPIRED]
    assert "join_timeout_s" in servers.owner.table.finished[0].detail
    assert servers.open("site1", shape).session_id


def test_a_captured_link_does_not_carry_the_plaintext(consortium_pki: Path) -> None:
    """Two parties' links through a relay that records every byte: a known tensor crosses
    both ways intact, and its bytes are nowhere in the capture. The same relay captures
    them from a plaintext link, so the check can fail."""
    known = torch.arange(4096, dtype=torch.int64) * 0x0101010101 + 0x5A5A5A5A
    listener = bind_listener("127.0.0.1", (0, 0))
    relay = _Relay(listener.getsockname()[1])
    plans = {
        0: LinkPlan(
            "capture",
            0,
            (LinkPeer(1, "site0", ("node",)),),
            _files(consortium_pki, "model-owner"),
            listen_host="127.0.0.1",
        ),
        1: LinkPlan(
            "capture",
            1,
            (LinkPeer(0, "model-owner", ("inference",), "127.0.0.1", relay.port),),
            _files(consortium_pki, "site0"),
        ),
    }
    received: dict[int, torch.Tensor] = {}

    def listen() -> None:
        links = establish(plans[0], listener)
        received[0] = links.recv_tensor(1)
        links.send_tensor(1, known)
        links.close()

    thread = threading.Thread(target=listen)
    thread.start()
    links = establish(plans[1])
    links.send_tensor(0, known)
    received[1] = links.recv_tensor(0)
    links.close()
    thread.join(timeout=30)
    relay.stop()

    assert torch.equal(received[0], known) and torch.equal(received[1], known)
    payload = bytes(wire.tensor_payload(known))
    captured = relay.captured()
    assert len(captured) > 2 * len(payload)  # both copies crossed the relay
    for offset in (0, 1024, len(payload) - 64):
        assert payload[offset : offset + 32] not in captured

    plain = _Relay(_plain_sink())
    with socket.create_connection(("127.0.0.1", plain.port)) as sender:
        sender.sendall(wire.tensor_header(known) + payload)
    time.sleep(0.5)
    plain.stop()
    assert payload[1024 : 1024 + 32] in plain.captured()


def _files(directory: Path, name: str) -> pki.TLSFiles:
    return pki.tls_files(directory, name)


def _plain_sink() -> int:
    sink = socket.create_server(("127.0.0.1", 0))

    def drain() -> None:
        connection, _ = sink.accept()
        while connection.recv(1 << 16):
            pass
        connection.close()
        sink.close()

    threading.Thread(target=drain, daemon=True).start()
    return int(sink.getsockname()[1])


class _Relay:
    """A TCP relay on loopback to ``target`` that keeps a copy of every byte."""

    def __init__(self, target: int) -> None:
        self._target = target
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = int(self._server.getsockname()[1])
        self._chunks: list[bytes] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def captured(self) -> bytes:
        with self._lock:
            return b"".join(self._chunks)

    def stop(self) -> None:
        self._stopped.set()
        self._threads[0].join(timeout=5)
        self._server.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(("127.0.0.1", self._target))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(1 << 16):
                with self._lock:
                    self._chunks.append(chunk)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
