"""The coordinator refuses peers it must not serve and survives any single bad message."""

from __future__ import annotations

import hashlib
import queue
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from conftest import Consortium

from primia import pki
from primia.cli import main
from primia.rpc import codec
from primia.rpc.coordinator_server import CoordinatorServer
from primia.rpc.generated import federation_pb2 as pb
from primia.rpc.generated import federation_pb2_grpc as pb_grpc
from primia.rpc.status import StatusUnavailable, fetch_status
from primia.rpc.tls import secure_channel


@pytest.fixture
def server(consortium: Consortium, tmp_path: Path) -> Iterator[CoordinatorServer]:
    coordinator = CoordinatorServer(consortium.coordinator_config(tmp_path / "run"))
    coordinator.start()
    yield coordinator
    coordinator.stop(grace=0)


def _hello(version: int = codec.PROTOCOL_VERSION) -> pb.NodeMessage:
    return pb.NodeMessage(
        hello=pb.Hello(
            protocol_version=version,
            dataset=pb.DatasetSummary(task="multilabel", train_examples=10),
            privacy=pb.PrivacyState(epsilon_budget=10, delta=1e-5),
        )
    )


def _join(server: CoordinatorServer, files: pki.TLSFiles, messages: list[pb.NodeMessage]):  # type: ignore[no-untyped-def]
    """Open a Join stream, send ``messages``, and return (channel, response iterator, queue)."""
    outbound: queue.Queue[pb.NodeMessage | None] = queue.Queue()
    for message in messages:
        outbound.put(message)
    channel = secure_channel(f"127.0.0.1:{server.port}", files, server_name="coordinator")
    responses = pb_grpc.CoordinatorStub(channel).Join(iter(outbound.get, None), timeout=30)
    return channel, responses, outbound


def _refusal(server: CoordinatorServer, files: pki.TLSFiles) -> grpc.RpcError:
    channel, responses, outbound = _join(server, files, [_hello()])
    with channel, pytest.raises(grpc.RpcError) as refused:
        next(responses)
    outbound.put(None)
    return refused.value


def _alive(server: CoordinatorServer, consortium: Consortium) -> None:
    status = fetch_status(f"127.0.0.1:{server.port}", consortium.nodes["site0"], timeout=5)
    assert status.rounds == 2


def test_join_refuses_wrong_role_and_names_off_the_roster(
    server: CoordinatorServer, consortium: Consortium, caplog: pytest.LogCaptureFixture
) -> None:
    viewer = pki.tls_files(consortium.pki_dir, "viewer")  # role inference
    refused = _refusal(server, viewer)
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "role inference" in refused.details()
    stranger = pki.tls_files(consortium.pki_dir, "stranger")  # a node, not on the roster
    refused = _refusal(server, stranger)
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "not on the coordinator's roster" in refused.details()
    assert "stranger is not on the coordinator's roster" in caplog.text  # the log says why
    _alive(server, consortium)


def test_join_refuses_other_cas_expired_and_missing_certificates(
    server: CoordinatorServer, consortium: Consortium, tmp_path: Path
) -> None:
    pki.init_ca(tmp_path / "other", "test-consortium")
    impostor = pki.issue(tmp_path / "other", "site0", "node")
    assert _refusal(server, impostor).code() == grpc.StatusCode.UNAVAILABLE  # TLS handshake
    expired_dir = tmp_path / "expired"
    expired_dir.mkdir()
    for name in ("ca.pem", "ca.key"):
        shutil.copy(consortium.pki_dir / name, expired_dir / name)  # ca.key stays 0600
    expired = pki.issue(
        expired_dir, "site1", "node", not_before=datetime.now(UTC) - timedelta(days=10), days=1
    )
    assert _refusal(server, expired).code() == grpc.StatusCode.UNAVAILABLE
    ca_pem = (consortium.pki_dir / "ca.pem").read_bytes()
    anonymous = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    options = [("grpc.ssl_target_name_override", "coordinator")]
    address = f"127.0.0.1:{server.port}"
    with (
        grpc.secure_channel(address, anonymous, options=options) as channel,
        pytest.raises(grpc.RpcError),
    ):
        pb_grpc.CoordinatorStub(channel).GetStatus(pb.StatusRequest(), timeout=10)
    _alive(server, consortium)


def test_bad_messages_get_clear_errors_and_the_server_lives(
    server: CoordinatorServer, consortium: Consortium
) -> None:
    site0 = consortium.nodes["site0"]
    # A stream that does not start with Hello.
    channel, responses, outbound = _join(
        server, site0, [pb.NodeMessage(progress=pb.TaskProgress())]
    )
    with channel, pytest.raises(grpc.RpcError) as refused:
        next(responses)
    outbound.put(None)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Hello" in refused.value.details()
    # A node of another protocol version.
    channel, responses, outbound = _join(server, site0, [_hello(version=99)])
    with channel, pytest.raises(grpc.RpcError) as refused:
        next(responses)
    outbound.put(None)
    assert "protocol version 99" in refused.value.details()

    # A session that sends nonsense: each message is answered, the stream stays open.
    corrupt = pb.Chunk(blob_id="u", offset=0, data=b"abc", total_size=3, sha256=b"\0" * 32)
    gap = pb.Chunk(blob_id="v", offset=5, data=b"abc")
    nonsense = [
        pb.NodeMessage(chunk=corrupt),
        pb.NodeMessage(chunk=gap),
        pb.NodeMessage(train_result=pb.TrainResult(task_id="no-such-task")),
        pb.NodeMessage(refused=pb.TaskRefused(task_id="nor-this")),
        pb.NodeMessage(hello=_hello().hello),
    ]
    channel, responses, outbound = _join(server, consortium.nodes["site1"], [_hello()])
    with channel:
        assert next(responses).WhichOneof("kind") == "welcome"
        for message in nonsense:
            outbound.put(message)
        errors = [next(responses).error.detail for _ in nonsense]
        assert "corrupted in transit" in errors[0]
        assert "unknown blob" in errors[1]
        assert "no-such-task" in errors[2] and "nor-this" in errors[3]
        assert "unexpected hello" in errors[4]
        # After all that, a well-formed blob is taken without complaint: the next error
        # that comes back is the one for the bad chunk sent after it.
        good = pb.Chunk(blob_id="w", offset=0, data=b"ok", total_size=2)
        good.sha256 = hashlib.sha256(b"ok").digest()
        outbound.put(pb.NodeMessage(chunk=good))
        outbound.put(pb.NodeMessage(chunk=pb.Chunk(blob_id="late", offset=1, data=b"x")))
        assert "'late'" in next(responses).error.detail
        outbound.put(None)
    # Bytes that are not a protobuf message at all.
    with secure_channel(f"127.0.0.1:{server.port}", site0, server_name="coordinator") as channel:
        raw = channel.stream_stream(
            "/primia.v1.Coordinator/Join",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.RpcError):
            next(raw(iter([b"\xff\xfe not protobuf \x00"]), timeout=10))
    _alive(server, consortium)


def _primia_status(server: CoordinatorServer, files: pki.TLSFiles) -> int:
    return main(
        [
            "status",
            "--coordinator",
            f"127.0.0.1:{server.port}",
            "--ca",
            str(files.ca),
            "--cert",
            str(files.certificate),
            "--key",
            str(files.key),
        ]
    )


def test_primia_status_prints_the_federation(
    server: CoordinatorServer, consortium: Consortium, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _primia_status(server, consortium.coordinator)  # an operator sees every node
    out = capsys.readouterr().out
    assert code == 0
    assert server.federation.run_id in out and "site0" in out and "not connected" in out
    assert "site2" in out


def test_status_shows_a_node_its_own_row_and_others_nothing(
    server: CoordinatorServer, consortium: Consortium, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _primia_status(server, consortium.nodes["site2"]) == 0
    out = capsys.readouterr().out
    assert server.federation.run_id in out and "site2" in out
    assert "site0" not in out and "site1" not in out
    viewer = pki.tls_files(consortium.pki_dir, "viewer")  # role inference
    with pytest.raises(StatusUnavailable, match=r"PERMISSION_DENIED.*status_access"):
        fetch_status(f"127.0.0.1:{server.port}", viewer, timeout=5)
