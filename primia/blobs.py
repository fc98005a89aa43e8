"""Blobs on a gRPC stream: a payload cut into chunks, reassembled and verified on arrival.

A blob (weights or an update, as safetensors bytes) can be far larger than gRPC's message
limit, so it travels as ``Chunk`` messages (:class:`BlobChunk` here, written and read by
:mod:`primia.rpc.chunk_wire` in the gRPC layer) of ``CHUNK_SIZE`` bytes, in order, on one
stream. The first chunk carries the blob's total size and SHA-256. The receiver
(:class:`BlobAssembler`) accepts a chunk only at the offset it expects, never lets a blob
grow past its announced size or ``max_size``, and releases it only when the SHA-256 of
what arrived equals the announced digest: a truncated, reordered or corrupted blob is an
error, never a model.

Received blobs are written into buffers from a :class:`BufferPool`, which hands a buffer
out again once nothing refers to it: memory that already held a blob costs no page
faults, fresh memory about 0.5 ms per MB here (as much as the rest of receiving it).
"""

from __future__ import annotations

import hashlib
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from primia.errors import PrimiaError

MIB = 1 << 20
CHUNK_SIZE = 1 * MIB
"""Bytes per chunk: per-message overhead stays small, and 1 MiB measured fastest on
loopback with TLS (see docs/benchmarks.md)."""
MAX_CHUNK_SIZE = 4 * MIB
MAX_MESSAGE_SIZE = MAX_CHUNK_SIZE + 64 * 1024
"""The largest gRPC message either side accepts: one full chunk plus its framing."""
MAX_BLOB_SIZE = 4 * 1024 * MIB


class BlobError(PrimiaError):
    """A blob arrived incomplete, out of order, oversized or with the wrong digest."""


@dataclass(frozen=True)
class Blob:
    blob_id: str
    data: bytes | bytearray | memoryview
    """Received blobs are bytearrays, filled in place as their chunks arrive; treat
    them as read-only. A blob to send may view other memory (e.g. a masked vector)."""
    sha256: bytes

    @classmethod
    def of(cls, blob_id: str, data: bytes | bytearray | memoryview) -> Blob:
        return cls(blob_id, data, hashlib.sha256(data).digest())


@dataclass
class BlobChunk:
    """A piece of a blob: what a ``Chunk`` message carries, with the payload as a view
    (of the blob when sending, of the received message when receiving; see
    :mod:`primia.rpc.chunk_wire`)."""

    blob_id: str
    offset: int
    data: bytes | memoryview
    total_size: int = 0
    """The blob's size; on the first chunk (offset 0) only."""
    sha256: bytes = b""
    """The blob's SHA-256; on the first chunk only."""


class ChunkFields(Protocol):
    """What :class:`BlobAssembler` reads of a chunk: a :class:`BlobChunk`, or a generated
    ``Chunk`` message as the gRPC layer receives it (this module never imports protobuf)."""

    @property
    def blob_id(self) -> str: ...
    @property
    def offset(self) -> int: ...
    @property
    def data(self) -> bytes | memoryview: ...
    @property
    def total_size(self) -> int: ...
    @property
    def sha256(self) -> bytes: ...


def chunks_of(blob: Blob, chunk_size: int = CHUNK_SIZE) -> Iterator[BlobChunk]:
    """The chunks that carry ``blob``, in order (one empty chunk for an empty blob); their
    data are views of the blob's."""
    if not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be in (0, {MAX_CHUNK_SIZE}], got {chunk_size}")
    view = memoryview(blob.data)
    total = len(view)
    offset = 0
    while True:
        end = min(offset + chunk_size, total)
        chunk = BlobChunk(blob.blob_id, offset, view[offset:end])
        if offset == 0:
            chunk.total_size = total
            chunk.sha256 = blob.sha256
        yield chunk
        offset = end
        if offset >= total:
            return


class BufferPool:
    """Receive buffers, handed out again once nothing refers to them.

    A buffer is free when the pool holds the only reference to it. CPython counts
    references, and everything that reads a blob's memory holds one: the :class:`Blob`,
    a ``memoryview``, and the tensors ``torch.frombuffer`` returns (see
    :func:`primia.federated.weights.view_safetensors`), so a buffer is never rewritten
    while a model's weights still live in it. Only buffers of exactly the requested size
    are reused (a federation's weights and updates have the same size every round), and
    free buffers of other sizes are let go whenever a new buffer is kept. The pool
    tracks at most ``max_bytes`` of buffers, free or not; beyond that it drops free ones,
    oldest first, and stops tracking new ones.
    """

    def __init__(self, max_bytes: int = 2 * 1024 * MIB) -> None:
        self._max_bytes = max_bytes
        self._buffers: list[bytearray] = [bytearray()]
        self._unreferenced = sys.getrefcount(self._buffers[0])
        """The count of a buffer only the list refers to, as :meth:`_free` reads it."""
        self._buffers.clear()
        self._lock = threading.Lock()

    def _free(self, index: int) -> bool:
        return sys.getrefcount(self._buffers[index]) <= self._unreferenced

    def take(self, size: int) -> bytearray | None:
        """A free buffer of ``size`` bytes (its old contents still in it), or None."""
        with self._lock:
            for index in range(len(self._buffers)):
                if len(self._buffers[index]) == size and self._free(index):
                    return self._buffers[index]
        return None

    def keep(self, buffer: bytearray) -> None:
        """Track ``buffer`` (a new one, in use) to hand it out again once it is free.

        Free buffers of other sizes are let go: a blob of a new size means those are no
        longer expected (another model, or after a one-off probe)."""
        with self._lock:
            if not buffer or any(kept is buffer for kept in self._buffers):
                return
            index = 0
            while index < len(self._buffers):
                if len(self._buffers[index]) != len(buffer) and self._free(index):
                    del self._buffers[index]
                else:
                    index += 1
            self._buffers.append(buffer)
            excess = sum(len(kept) for kept in self._buffers) - self._max_bytes
            index = 0
            while excess > 0 and index < len(self._buffers) - 1:
                if self._free(index):
                    excess -= len(self._buffers.pop(index))
                else:
                    index += 1
            if excess > 0:
                self._buffers.pop()

    @property
    def tracked_bytes(self) -> int:
        with self._lock:
            return sum(len(buffer) for buffer in self._buffers)


RECEIVE_BUFFERS = BufferPool()
"""The process's pool: the sessions of a coordinator share it, and a node's reconnected
streams find the buffers of the old ones."""


class _Partial:
    def __init__(self, total_size: int, sha256: bytes, reused: bytearray | None) -> None:
        # A reused buffer is overwritten in place. Otherwise each chunk is appended to a
        # new buffer as it arrives and then freed, so the next chunk reuses its memory:
        # holding the chunks to join them at the end costs a second copy of the blob into
        # freshly faulted pages. The new buffer grows with what arrives (realloc moves its
        # pages, not its bytes), never to a size that was only announced.
        self.buffer = reused if reused is not None else bytearray()
        self.reused = reused is not None
        self.received = 0
        self.total_size = total_size
        self.expected_sha256 = sha256
        self.hasher = hashlib.sha256()

    def write(self, data: bytes | memoryview) -> None:
        end = self.received + len(data)
        if self.reused:
            self.buffer[self.received : end] = data
        else:
            self.buffer += data
        self.received = end


class BlobAssembler:
    """Reassembles the blobs of one stream; several may be in flight, each in order."""

    def __init__(
        self,
        *,
        max_size: int = MAX_BLOB_SIZE,
        max_in_flight: int = 4,
        buffers: BufferPool = RECEIVE_BUFFERS,
    ) -> None:
        self._max_size = max_size
        self._buffers = buffers
        self._max_in_flight = max_in_flight
        self._partial: dict[str, _Partial] = {}

    def add(self, chunk: ChunkFields) -> Blob | None:
        """Take one chunk; return the blob it completes (verified), else None.

        Raises :class:`BlobError` (and forgets the blob) on any inconsistency.
        """
        blob_id = chunk.blob_id
        data = chunk.data  # each read of a protobuf bytes field copies it: read it once
        if not blob_id:
            raise BlobError("a chunk without a blob_id; every chunk names its blob")
        if len(data) > MAX_CHUNK_SIZE:
            raise BlobError(f"chunk of {len(data)} bytes exceeds {MAX_CHUNK_SIZE}")
        if chunk.offset == 0:
            partial = self._start(chunk)
        else:
            found = self._partial.get(blob_id)
            if found is None:
                raise BlobError(f"chunk at offset {chunk.offset} of unknown blob {blob_id!r}")
            partial = found
        received = partial.received
        if chunk.offset != received:
            del self._partial[blob_id]
            raise BlobError(
                f"blob {blob_id!r}: chunk at offset {chunk.offset}, expected {received}"
            )
        end = received + len(data)
        if end > partial.total_size:
            del self._partial[blob_id]
            raise BlobError(
                f"blob {blob_id!r} grows past its announced size of {partial.total_size} bytes"
            )
        partial.write(data)
        partial.hasher.update(data)
        if end < partial.total_size:
            return None
        del self._partial[blob_id]
        digest = partial.hasher.digest()
        if digest != partial.expected_sha256:
            raise BlobError(
                f"blob {blob_id!r} arrived with SHA-256 {digest.hex()[:16]}…, announced "
                f"{partial.expected_sha256.hex()[:16]}…; it was corrupted in transit"
            )
        if not partial.reused:
            self._buffers.keep(partial.buffer)
        return Blob(blob_id, partial.buffer, digest)

    def _start(self, chunk: ChunkFields) -> _Partial:
        if chunk.blob_id in self._partial:
            del self._partial[chunk.blob_id]
            raise BlobError(f"blob {chunk.blob_id!r} restarted before it was complete")
        if len(chunk.sha256) != 32:
            raise BlobError(f"blob {chunk.blob_id!r}: the first chunk must carry a SHA-256")
        if chunk.total_size > self._max_size:
            raise BlobError(
                f"blob {chunk.blob_id!r} announces {chunk.total_size} bytes, more than the "
                f"limit of {self._max_size}"
            )
        if len(self._partial) >= self._max_in_flight:
            raise BlobError(f"more than {self._max_in_flight} blobs in flight on one stream")
        reused = self._buffers.take(chunk.total_size) if chunk.total_size else None
        partial = _Partial(chunk.total_size, chunk.sha256, reused)
        self._partial[chunk.blob_id] = partial
        return partial

    def discard(self) -> None:
        """Forget every incomplete blob (the stream they came on has ended)."""
        self._partial.clear()
