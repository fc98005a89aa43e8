"""Blobs on a gRPC stream: a payload cut into chunks, reassembled and verified on arrival.

A blob (weights or an update, as safetensors bytes) can be far larger than gRPC's message
limit, so it travels as :class:`Chunk` messages of ``CHUNK_SIZE`` bytes, in order, on one
stream. The first chunk carries the blob's total size and SHA-256. The receiver
(:class:`BlobAssembler`) accepts a chunk only at the offset it expects, never lets a blob
grow past its announced size or ``max_size``, and releases it only when the SHA-256 of
what arrived equals the announced digest: a truncated, reordered or corrupted blob is an
error, never a model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from primia.errors import PrimiaError
from primia.transport.generated import federation_pb2 as pb

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
    data: bytes | bytearray
    """Received blobs are bytearrays, filled in place as their chunks arrive; treat
    them as read-only."""
    sha256: bytes

    @classmethod
    def of(cls, blob_id: str, data: bytes | bytearray) -> Blob:
        return cls(blob_id, data, hashlib.sha256(data).digest())


def chunks_of(blob: Blob, chunk_size: int = CHUNK_SIZE) -> Iterator[pb.Chunk]:
    """The chunks that carry ``blob``, in order (one empty chunk for an empty blob)."""
    if not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be in (0, {MAX_CHUNK_SIZE}], got {chunk_size}")
    view = memoryview(blob.data)
    total = len(view)
    offset = 0
    while True:
        end = min(offset + chunk_size, total)
        chunk = pb.Chunk(blob_id=blob.blob_id, offset=offset, data=view[offset:end].tobytes())
        if offset == 0:
            chunk.total_size = total
            chunk.sha256 = blob.sha256
        yield chunk
        offset = end
        if offset >= total:
            return


class _Partial:
    def __init__(self, total_size: int, sha256: bytes) -> None:
        # Each chunk is appended to the blob's buffer as it arrives and then freed, so
        # the next chunk reuses its memory: holding the chunks to join them at the end
        # costs a second copy of the blob into freshly faulted pages. The buffer grows
        # with what arrives (realloc moves its pages, not its bytes), never to a size
        # that was only announced.
        self.buffer = bytearray()
        self.total_size = total_size
        self.expected_sha256 = sha256
        self.hasher = hashlib.sha256()


class BlobAssembler:
    """Reassembles the blobs of one stream; several may be in flight, each in order."""

    def __init__(self, *, max_size: int = MAX_BLOB_SIZE, max_in_flight: int = 4) -> None:
        self._max_size = max_size
        self._max_in_flight = max_in_flight
        self._partial: dict[str, _Partial] = {}

    def add(self, chunk: pb.Chunk) -> Blob | None:
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
        received = len(partial.buffer)
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
        partial.buffer += data
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
        return Blob(blob_id, partial.buffer, digest)

    def _start(self, chunk: pb.Chunk) -> _Partial:
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
        partial = _Partial(chunk.total_size, chunk.sha256)
        self._partial[chunk.blob_id] = partial
        return partial

    def discard(self) -> None:
        """Forget every incomplete blob (the stream they came on has ended)."""
        self._partial.clear()
