"""Hostile clients for the abuse tests and benchmarks: calls that never send, junk blobs.

Each speaks to a real server over mutual TLS with a consortium certificate, as a member
who misbehaves would.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc

from primia.pki import TLSFiles
from primia.rpc import codec
from primia.rpc.generated import federation_pb2 as pb
from primia.rpc.tls import secure_channel


def _identity(data: bytes) -> bytes:
    return data


@dataclass
class IdleCalls:
    """Calls opened to ``methods`` that never send a message, held until :meth:`close`."""

    address: str
    files: TLSFiles
    server_name: str
    methods: tuple[str, ...]
    count: int
    _release: threading.Event = field(default_factory=threading.Event)
    _channels: list[grpc.Channel] = field(default_factory=list)
    futures: list[grpc.Future] = field(default_factory=list)

    def open(self) -> IdleCalls:
        channel = secure_channel(self.address, self.files, server_name=self.server_name)
        self._channels.append(channel)
        for index in range(self.count):
            method = self.methods[index % len(self.methods)]
            call = channel.stream_unary(
                method, request_serializer=_identity, response_deserializer=_identity
            )
            self.futures.append(call.future(self._silence(), timeout=600))
        return self

    def _silence(self) -> Iterator[bytes]:
        self._release.wait()
        return
        yield b""  # a generator that sends nothing until released

    def codes(self, timeout: float) -> list[tuple[grpc.StatusCode, str]]:
        """The status of each call that has ended within ``timeout`` seconds."""
        ended = []
        for future in self.futures:
            try:
                error = future.exception(timeout=timeout)
            except grpc.FutureTimeoutError:
                continue
            if isinstance(error, grpc.RpcError):
                ended.append((error.code(), error.details() or ""))
        return ended

    def close(self) -> None:
        self._release.set()
        for future in self.futures:
            future.cancel()
        for channel in self._channels:
            channel.close()


def hello(device: str = "cpu") -> pb.NodeMessage:
    return pb.NodeMessage(
        hello=pb.Hello(
            protocol_version=codec.PROTOCOL_VERSION,
            device=device,
            dataset=pb.DatasetSummary(task="multilabel", train_examples=10),
            privacy=pb.PrivacyState(epsilon_budget=10, delta=1e-5),
        )
    )


def junk_blobs(count: int, size: int, prefix: str = "junk") -> Iterator[pb.NodeMessage]:
    """``count`` complete, well-formed blobs of ``size`` bytes that no result will name
    (one payload shared by all, so the sender's own memory stays flat)."""
    data = b"\x5a" * size
    digest = hashlib.sha256(data).digest()
    for index in range(count):
        chunk = pb.Chunk(
            blob_id=f"{prefix}-{index}", offset=0, data=data, total_size=size, sha256=digest
        )
        yield pb.NodeMessage(chunk=chunk)


def rss_bytes() -> int:
    """This process's resident memory, from /proc."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")
