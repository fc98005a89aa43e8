"""Members of the consortium abusing the coordinator (issue 22), against a real server on
loopback with mutual TLS; after each attack the honest nodes are still served.

Each test shows the attack's effect would be there without the limit: the calls are
held, the blobs arrive complete, the fields are well-formed protobuf; only the
coordinator's limits stop them.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from abuse import IdleCalls, hello, junk_blobs, rss_bytes
from conftest import Consortium, run_federation, wait_until

from primia import pki
from primia.blobs import MIB
from primia.federated.policy import NodePolicy
from primia.federated.result import FederationResult
from primia.limits import ServerLimits
from primia.rpc.coordinator_server import CoordinatorServer
from primia.rpc.generated import federation_pb2 as pb
from primia.rpc.generated import federation_pb2_grpc as pb_grpc
from primia.rpc.status import fetch_status
from primia.rpc.tls import secure_channel

METHODS = tuple(f"/primia.v1.Coordinator/{name}" for name in ("Join", "GetStatus", "Probe"))


def _server(consortium: Consortium, tmp_path: Path, **overrides: Any) -> CoordinatorServer:
    config = consortium.coordinator_config(
        tmp_path / "run",
        rounds=1,
        startup_wait_s=2.0,
        final_test=False,
        **overrides,
    )
    server = CoordinatorServer(config)
    server.start()
    return server


def _round(server: CoordinatorServer, consortium: Consortium, tmp_path: Path) -> FederationResult:
    """Run one round with the honest nodes site0 and site1 (whose policy accepts a secure
    round of two); return the report."""
    for site in ("site0", "site1"):
        consortium.start_node(
            consortium.node_config(
                site, server.port, tmp_path / f"s-{site}", policy=NodePolicy(min_participants=2)
            )
        )
    return run_federation(server, timeout=180)


ACCEPT = pb.NodeMessage(plan_answer=pb.PlanAnswer(accepted=True))
"""A node's acceptance of the run's plan: only then do the rounds (and tests) count it."""


def _join(port: int, files: pki.TLSFiles, first: pb.NodeMessage):  # type: ignore[no-untyped-def]
    outbound: queue.Queue[pb.NodeMessage | None] = queue.Queue()
    outbound.put(first)
    channel = secure_channel(f"127.0.0.1:{port}", files, server_name="coordinator")
    responses = pb_grpc.CoordinatorStub(channel).Join(iter(outbound.get, None), timeout=60)
    return channel, responses, outbound


def test_idle_calls_neither_stop_the_coordinator_nor_delay_a_round(
    consortium: Consortium, tmp_path: Path
) -> None:
    server = _server(consortium, tmp_path, limits=ServerLimits(first_message_s=2.0))
    address = f"127.0.0.1:{server.port}"
    holders = [
        consortium.nodes["site2"],  # on the roster
        pki.tls_files(consortium.pki_dir, "viewer"),  # role inference
        pki.tls_files(consortium.pki_dir, "stranger"),  # a node, not on the roster
    ]
    # 30 calls that never send their first message: before the limits, they held every
    # worker thread (2 x roster + 8) and the nodes below could not join.
    attackers = [IdleCalls(address, files, "coordinator", METHODS, 10).open() for files in holders]
    try:
        report = _round(server, consortium, tmp_path)
        ended = [outcome for attacker in attackers for outcome in attacker.codes(timeout=30)]
    finally:
        for attacker in attackers:
            attacker.close()
    assert report.nodes["site0"].rounds_contributed == 1
    assert report.nodes["site1"].rounds_contributed == 1
    assert len(ended) == 30, "every idle call was ended by the coordinator"
    codes = {code for code, _ in ended}
    assert codes <= {
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.PERMISSION_DENIED,  # Join with a certificate that may not join
    }
    assert any("limits.max_calls_per_peer" in detail for _, detail in ended)
    assert any("limits.first_message_s" in detail for _, detail in ended)


def test_junk_blobs_are_refused_beyond_the_limit_and_memory_stays_bounded(
    consortium: Consortium, tmp_path: Path
) -> None:
    server = _server(consortium, tmp_path)
    blobs, size, kept = 160, 1 * MIB, ServerLimits().max_blobs_kept
    bound = 48 * MIB  # kept blobs, one in flight and gRPC's buffers; the junk is 160 MiB
    baseline = rss_bytes()
    try:
        channel, responses, outbound = _join(server.port, consortium.nodes["site1"], hello())
        with channel:
            assert next(responses).WhichOneof("kind") == "welcome"
            for index, message in enumerate(junk_blobs(blobs, size)):
                outbound.put(message)
                if index >= kept:  # each blob past the limit is answered, then dropped
                    detail = next(responses).error.detail
                    assert "limits.max_blobs_kept" in detail, detail
            peak = rss_bytes() - baseline
            outbound.put(None)
        wait_until(lambda: not server.registry.connected(), 30, "site1 to leave")
        after = rss_bytes() - baseline
    finally:
        server.stop(grace=0)
    assert peak < bound, f"RSS grew {peak / MIB:.0f} MiB during {blobs} MiB of junk blobs"
    assert after < bound, f"RSS stayed {after / MIB:.0f} MiB above its start after the stream"


def test_oversized_and_control_character_fields(
    consortium: Consortium, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = _server(consortium, tmp_path)
    address = f"127.0.0.1:{server.port}"
    big = "x" * (3 * MIB)
    try:
        # A device name of 3 MiB: refused, naming the limit.
        channel, responses, outbound = _join(server.port, consortium.nodes["site0"], hello(big))
        with channel, pytest.raises(grpc.RpcError) as refused:
            next(responses)
        outbound.put(None)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limits.max_text" in (refused.value.details() or "")
        # A newline in the device cannot forge a log line; a 3 MiB progress stage is refused.
        forged = "cpu\nINFO primia: site1 contributed 1000000 examples"
        channel, responses, outbound = _join(server.port, consortium.nodes["site1"], hello(forged))
        with channel:
            assert next(responses).WhichOneof("kind") == "welcome"
            outbound.put(pb.NodeMessage(progress=pb.TaskProgress(stage=big, fraction=0.5)))
            assert "limits.max_text" in next(responses).error.detail
            # Both fields together made GetStatus's reply too large for every caller.
            status = fetch_status(address, consortium.coordinator, timeout=10)
            outbound.put(None)
    finally:
        server.stop(grace=0)
    row = next(node for node in status.nodes if node.name == "site1")
    assert len(row.activity) < 2000 and len(row.device) < 2000
    joined = [r.getMessage() for r in caplog.records if "site1 joined" in r.getMessage()]
    assert joined and all("\n" not in line for line in joined)
    assert "cpu\\nINFO primia" in joined[0]


def test_a_second_connection_of_a_node_is_refused_while_the_first_lives(
    consortium: Consortium, tmp_path: Path
) -> None:
    server = _server(consortium, tmp_path)
    site0 = consortium.nodes["site0"]
    try:
        first, first_responses, first_outbound = _join(server.port, site0, hello())
        assert next(first_responses).WhichOneof("kind") == "welcome"
        first_outbound.put(ACCEPT)
        wait_until(lambda: bool(server.registry.connected()), 30, "the plan to be accepted")
        channel, responses, outbound = _join(server.port, site0, hello("cuda"))
        with channel, pytest.raises(grpc.RpcError) as refused:
            next(responses)
        outbound.put(None)
        assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "already connected" in (refused.value.details() or "")
        # The first stream was not evicted: it is still the node's link, and alive.
        (link,) = server.registry.connected()
        assert link.alive() and link.info.device == "cpu"
        # The node restarts: its old stream dies, and the new one gets in.
        first_outbound.put(None)
        first.close()
        wait_until(lambda: not server.registry.connected(), 30, "the old stream to be dropped")
        channel, responses, outbound = _join(server.port, site0, hello("cuda"))
        with channel:
            assert next(responses).WhichOneof("kind") == "welcome"
            outbound.put(ACCEPT)
            wait_until(lambda: bool(server.registry.connected()), 30, "the plan to be accepted")
            (link,) = server.registry.connected()
            assert link.info.device == "cuda"
            outbound.put(None)
    finally:
        server.stop(grace=0)


def _fuzz_inputs(rng: random.Random, count: int) -> Iterator[tuple[str, list[bytes]]]:
    """(method, serialized messages): valid messages, mutated ones, and random bytes."""
    chunk = pb.Chunk(blob_id="b", offset=0, data=b"abc", total_size=3, sha256=b"\1" * 32)
    messages = [
        hello(),
        pb.NodeMessage(chunk=chunk),
        pb.NodeMessage(train_result=pb.TrainResult(task_id="t", update_blob="b")),
        pb.NodeMessage(progress=pb.TaskProgress(stage="s", fraction=2.0)),
        pb.NodeMessage(refused=pb.TaskRefused(task_id="t", detail="d")),
        pb.NodeMessage(keys=pb.KeyAdvertisement(task_id="t")),
        pb.StatusRequest(),
        chunk,
    ]
    samples = [message.SerializeToString() for message in messages]

    def mutate(data: bytes) -> bytes:
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            choice = rng.random()
            if choice < 0.4 and mutated:
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            elif choice < 0.6 and mutated:
                del mutated[rng.randrange(len(mutated)) :]
            elif choice < 0.8:
                mutated[rng.randrange(len(mutated) + 1) : 0] = rng.randbytes(rng.randint(1, 8))
            else:
                mutated += rng.choice(samples)
        return bytes(mutated)

    for _ in range(count):
        method = rng.choice(METHODS)
        sent = []
        if method.endswith("Join") and rng.random() < 0.5:
            sent.append(samples[0])  # past Hello, into a session
        for _ in range(rng.randint(1, 3)):
            kind = rng.random()
            if kind < 0.2:
                sent.append(rng.randbytes(rng.randint(0, 64)))
            elif kind < 0.4:
                sent.append(rng.choice(samples))
            else:
                sent.append(mutate(rng.choice(samples)))
        yield method, sent


def test_fuzzed_messages_on_every_method_then_a_round_completes(
    consortium: Consortium, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inputs = 300
    server = _server(consortium, tmp_path)
    holders = [consortium.nodes["site2"], pki.tls_files(consortium.pki_dir, "viewer")]
    channels = [
        secure_channel(f"127.0.0.1:{server.port}", files, server_name="coordinator")
        for files in holders
    ]
    outcomes: dict[grpc.StatusCode, int] = {}
    try:
        for index, (method, messages) in enumerate(_fuzz_inputs(random.Random(22), inputs)):
            call = channels[index % len(channels)].stream_stream(
                method, request_serializer=lambda b: b, response_deserializer=lambda b: b
            )
            responses = call(iter(messages), timeout=10)
            try:
                for _ in responses:
                    pass
                code = grpc.StatusCode.OK
            except grpc.RpcError as error:
                code = error.code()
            outcomes[code] = outcomes.get(code, 0) + 1
    finally:
        for channel in channels:
            channel.close()
    assert sum(outcomes.values()) == inputs
    assert grpc.StatusCode.UNKNOWN not in outcomes, outcomes  # no handler crashed
    assert grpc.StatusCode.INTERNAL not in outcomes, outcomes
    assert "Traceback" not in caplog.text and "Exception calling application" not in caplog.text
    report = _round(server, consortium, tmp_path)
    assert report.nodes["site0"].rounds_contributed == 1
    assert report.nodes["site1"].rounds_contributed == 1


def test_a_probe_silent_mid_stream_is_ended_and_probes_run_one_at_a_time(
    consortium: Consortium, tmp_path: Path
) -> None:
    server = _server(consortium, tmp_path, limits=ServerLimits(silence_s=1.0))
    release = threading.Event()
    first = pb.Chunk(blob_id="p", offset=0, data=b"a" * 10, total_size=20, sha256=b"\1" * 32)

    def stalled() -> Iterator[bytes]:
        yield first.SerializeToString()  # half the blob, then nothing
        release.wait()

    try:
        with secure_channel(
            f"127.0.0.1:{server.port}", consortium.nodes["site2"], server_name="coordinator"
        ) as channel:
            probe = channel.stream_unary(
                METHODS[2], request_serializer=lambda b: b, response_deserializer=lambda b: b
            )
            held = probe.future(stalled(), timeout=30)
            probing = server._service._probing  # the names whose probe is running
            wait_until(lambda: "site2" in probing, 10, "the first probe to start")
            with pytest.raises(grpc.RpcError) as second:
                probe(iter([first.SerializeToString()]), timeout=30)
            assert second.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "one at a time" in (second.value.details() or "")
            error = held.exception(timeout=20)
            assert isinstance(error, grpc.RpcError)
            assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "limits.silence_s" in (error.details() or "")
    finally:
        release.set()
        server.stop(grace=0)
