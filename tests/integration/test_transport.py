"""The transport over a real gRPC server on loopback with mutual TLS: a 100 MB tensor
arrives intact, every kind of wrong peer is refused, and a damaged or malformed upload is
answered with an error while the server keeps serving."""

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
import torch
from safetensors.torch import save as save_safetensors

from primia.blobs import MIB, Blob
from primia.cli import main
from primia.federated.coordinator_config import CoordinatorConfig, ModelConfig
from primia.pki import Role, TLSFiles, init_ca, issue, tls_files
from primia.rpc.coordinator_server import CoordinatorServer
from primia.rpc.generated import federation_pb2 as pb
from primia.rpc.generated import federation_pb2_grpc as pb_grpc
from primia.rpc.probe import ProbeFailed, probe
from primia.rpc.tls import secure_channel


@dataclass(frozen=True)
class Federation:
    address: str
    pki: Path


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("transport")
    pki = root / "pki"
    init_ca(pki, "Transport Test")
    config = CoordinatorConfig(
        tls=issue(pki, "coordinator", "coordinator"),
        roster=["hospital-a"],
        run_dir=root / "run",
        listen="127.0.0.1:0",
        min_nodes=1,
        aggregation="plaintext",
        model=ModelConfig(architecture="cnn", image_size=32),
    )
    issue(pki, "hospital-a", "node")
    server = CoordinatorServer(config)
    port = server.start()
    yield Federation(f"127.0.0.1:{port}", pki)
    server.stop(grace=0)


def _channel(federation: Federation) -> grpc.Channel:
    """A mutual-TLS channel of hospital-a, for calls that probe() does not make."""
    files = tls_files(federation.pki, "hospital-a")
    return secure_channel(federation.address, files, server_name="coordinator")


def _assert_serving(federation: Federation) -> None:
    result = probe(federation.address, tls_files(federation.pki, "hospital-a"), size=MIB + 1)
    assert result.verified and result.size == MIB + 1


def test_a_100_mb_tensor_is_streamed_and_verified(federation: Federation) -> None:
    tensor = torch.randn(26_214_400, generator=torch.Generator().manual_seed(0))
    payload = save_safetensors({"w": tensor})  # 100 MiB of float32 and a small header
    assert len(payload) > 100 * MIB
    result = probe(federation.address, tls_files(federation.pki, "hospital-a"), payload=payload)
    assert result.verified
    assert result.size == len(payload)
    assert result.megabytes_per_second == pytest.approx(len(payload) / 1e6 / result.seconds)


def test_a_coordinator_may_probe_itself(federation: Federation) -> None:
    assert probe(federation.address, tls_files(federation.pki, "coordinator"), size=10).verified


def test_an_empty_blob_round_trips(federation: Federation) -> None:
    result = probe(federation.address, tls_files(federation.pki, "hospital-a"), payload=b"")
    assert result.verified and result.size == 0


def test_a_certificate_from_another_ca_is_refused(federation: Federation, tmp_path: Path) -> None:
    init_ca(tmp_path, "Impostors")
    # Same name as a roster member: only the CA differs.
    impostor = issue(tmp_path, "hospital-a", "node")
    files = TLSFiles(federation.pki / "ca.pem", impostor.certificate, impostor.key)
    with pytest.raises(ProbeFailed, match="UNAVAILABLE") as refused:
        probe(federation.address, files, size=10)
    assert federation.address in str(refused.value)
    _assert_serving(federation)


def test_a_client_without_a_certificate_is_refused(federation: Federation) -> None:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(federation.pki / "ca.pem").read_bytes()
    )
    options = [("grpc.ssl_target_name_override", "coordinator")]
    with (
        grpc.secure_channel(federation.address, credentials, options=options) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        pb_grpc.CoordinatorStub(channel).Probe(_chunks(b"abc"), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    _assert_serving(federation)


@pytest.mark.parametrize(
    ("name", "role", "reason"),
    [
        ("viewer", "inference", "viewer has role inference; Probe needs node or coordinator"),
        ("hospital-z", "node", "hospital-z is not on the coordinator's roster"),
    ],
)
def test_a_peer_without_the_right_is_denied(
    federation: Federation, name: str, role: Role, reason: str
) -> None:
    files = issue(federation.pki, name, role)
    with pytest.raises(ProbeFailed, match=reason) as refused:
        probe(federation.address, files, size=10)
    assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert "roster" in str(refused.value)  # the hint says what to fix


def test_an_expired_certificate_is_refused(federation: Federation, tmp_path: Path) -> None:
    # The same CA and a name on the roster: only the validity differs.
    for file in ("ca.pem", "ca.key"):
        shutil.copy(federation.pki / file, tmp_path / file)
    expired = issue(
        tmp_path, "hospital-a", "node", not_before=datetime.now(UTC) - timedelta(days=10), days=1
    )
    with pytest.raises(ProbeFailed) as refused:
        probe(federation.address, expired, size=10)
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE  # TLS refuses it at the handshake
    _assert_serving(federation)


def _chunks(data: bytes, *, sha256: bytes | None = None) -> Iterator[pb.Chunk]:
    """``data`` as one hand-made chunk, announcing ``sha256`` (default: the right one)."""
    blob = Blob.of("hand-made", data)
    yield pb.Chunk(
        blob_id=blob.blob_id,
        data=data,
        total_size=len(data),
        sha256=blob.sha256 if sha256 is None else sha256,
    )


def _wrong_offset() -> Iterator[pb.Chunk]:
    blob = Blob.of("hand-made", b"0123456789")
    yield pb.Chunk(blob_id=blob.blob_id, offset=0, data=b"01234", total_size=10, sha256=blob.sha256)
    yield pb.Chunk(blob_id=blob.blob_id, offset=7, data=b"789")


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        (lambda: _chunks(b"weights", sha256=bytes(32)), "corrupted in transit"),
        (_wrong_offset, "chunk at offset 7, expected 5"),
    ],
    ids=["wrong-digest", "wrong-offset"],
)
def test_corrupted_chunks_are_data_loss(federation: Federation, chunks, message: str) -> None:
    with _channel(federation) as channel, pytest.raises(grpc.RpcError) as refused:
        pb_grpc.CoordinatorStub(channel).Probe(chunks(), timeout=10)
    assert refused.value.code() == grpc.StatusCode.DATA_LOSS
    assert message in refused.value.details()
    _assert_serving(federation)


def test_bytes_that_are_not_protobuf_are_an_error(federation: Federation) -> None:
    with _channel(federation) as channel, pytest.raises(grpc.RpcError) as refused:
        call = channel.stream_unary(
            "/primia.v1.Coordinator/Probe",
            request_serializer=lambda raw: raw,
            response_deserializer=pb.ProbeReceipt.FromString,
        )
        call(iter([b"\xff\xff\xff garbage"]), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # the guard's, not INTERNAL
    assert "could not be parsed" in (refused.value.details() or "")
    _assert_serving(federation)


def test_primia_check_reports_the_throughput(federation: Federation, capsys) -> None:
    files = tls_files(federation.pki, "hospital-a")
    tls = ["--ca", str(files.ca), "--cert", str(files.certificate), "--key", str(files.key)]
    assert main(["check", "--coordinator", federation.address, *tls, "--megabytes", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"uploaded 2 MB to {federation.address} in ")
    assert out.rstrip().endswith("MB/s, SHA-256 verified")

    # Nothing listens on port 1: the error says so and what to check.
    assert main(["check", "--coordinator", "127.0.0.1:1", *tls, "--megabytes", "1"]) == 2
    error = capsys.readouterr().err
    assert "UNAVAILABLE" in error and "Is the coordinator running at 127.0.0.1:1" in error


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "give a payload, or a size"),
        ({"size": -1}, "give a payload, or a size"),
        ({"size": 3, "payload": b"ab"}, "the payload holds 2 bytes"),
        ({"size": 3, "chunk_size": 0}, "chunk_size must be in"),
    ],
)
def test_bad_arguments_fail_before_connecting(arguments: dict, message: str) -> None:
    files = TLSFiles(Path("ca.pem"), Path("node.pem"), Path("node.key"))  # never read
    with pytest.raises(ValueError, match=message):
        probe("127.0.0.1:1", files, **arguments)
