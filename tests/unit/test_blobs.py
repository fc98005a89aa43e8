"""Blobs cut into chunks and reassembled: every size round-trips, and a chunk that is out
of place, oversized or damaged is an error that forgets its blob, never a wrong blob."""

import os

import pytest
import torch

from primia.blobs import (
    CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    Blob,
    BlobAssembler,
    BlobError,
    BufferPool,
    chunks_of,
)
from primia.rpc.generated import federation_pb2 as pb

SMALL = 16  # a chunk size that makes many chunks of a few bytes


def _assemble(chunks: list[pb.Chunk], assembler: BlobAssembler | None = None) -> Blob:
    """Feed ``chunks`` in order; only the last may complete the blob."""
    assembler = assembler or BlobAssembler()
    *head, last = chunks
    for chunk in head:
        assert assembler.add(chunk) is None
    blob = assembler.add(last)
    assert blob is not None
    return blob


def _first(data: bytes, blob_id: str = "b") -> pb.Chunk:
    return next(chunks_of(Blob.of(blob_id, data), SMALL))


@pytest.mark.parametrize(
    ("size", "chunk_size", "count"),
    [
        (0, SMALL, 1),
        (1, SMALL, 1),
        (3 * SMALL, SMALL, 3),
        (3 * SMALL + 5, SMALL, 4),
        (2 * CHUNK_SIZE + 1, CHUNK_SIZE, 3),
        (MAX_CHUNK_SIZE, MAX_CHUNK_SIZE, 1),
    ],
)
def test_round_trip(size: int, chunk_size: int, count: int) -> None:
    sent = Blob.of("weights", os.urandom(size))
    chunks = list(chunks_of(sent, chunk_size))
    assert len(chunks) == count
    assert [c.offset for c in chunks] == [i * chunk_size for i in range(count)]
    assert all(len(c.data) <= chunk_size for c in chunks)
    # Only the first chunk announces the blob.
    assert (chunks[0].total_size, chunks[0].sha256) == (size, sent.sha256)
    assert all(c.total_size == 0 and not c.sha256 for c in chunks[1:])
    assert _assemble(chunks) == sent


def test_interleaved_blobs_are_each_reassembled() -> None:
    weights = Blob.of("weights", os.urandom(5 * SMALL))
    update = Blob.of("update", os.urandom(3 * SMALL + 1))
    w = list(chunks_of(weights, SMALL))
    u = list(chunks_of(update, SMALL))
    assembler = BlobAssembler()
    done = [assembler.add(c) for c in (w[0], u[0], u[1], w[1], w[2], u[2], u[3], w[3], w[4])]
    assert done == [None] * 6 + [update, None, weights]


def test_a_wrong_digest_is_refused_and_forgotten() -> None:
    assembler = BlobAssembler()
    chunks = list(chunks_of(Blob.of("b", b"x" * 40), SMALL))
    chunks[0].sha256 = bytes(32)
    with pytest.raises(BlobError, match="corrupted in transit"):
        _assemble(chunks, assembler)
    # Forgotten: the same blob sent again, intact, is accepted.
    assert _assemble(list(chunks_of(Blob.of("b", b"x" * 40), SMALL)), assembler).data == b"x" * 40


def test_a_damaged_byte_is_caught_by_the_digest() -> None:
    chunks = list(chunks_of(Blob.of("b", bytes(40)), SMALL))
    chunks[1].data = b"\x01" + chunks[1].data[1:]
    with pytest.raises(BlobError, match="SHA-256"):
        _assemble(chunks)


@pytest.mark.parametrize("offset", [SMALL - 1, SMALL + 1, 2 * SMALL])
def test_a_chunk_at_the_wrong_offset_is_refused_and_forgotten(offset: int) -> None:
    assembler = BlobAssembler()
    first, second, _ = chunks_of(Blob.of("b", bytes(3 * SMALL)), SMALL)
    assembler.add(first)
    second.offset = offset
    with pytest.raises(BlobError, match=f"chunk at offset {offset}, expected {SMALL}"):
        assembler.add(second)
    second.offset = SMALL
    with pytest.raises(BlobError, match="unknown blob"):
        assembler.add(second)


def test_a_first_chunk_must_start_at_offset_zero() -> None:
    chunk = _first(b"abc")
    chunk.offset = 3
    with pytest.raises(BlobError, match="unknown blob 'b'"):
        BlobAssembler().add(chunk)


def test_an_announced_size_over_the_limit_is_refused() -> None:
    assembler = BlobAssembler(max_size=10)
    assert assembler.add(_first(bytes(10))) is not None
    with pytest.raises(BlobError, match="announces 11 bytes, more than the limit of 10"):
        assembler.add(_first(bytes(11)))


def test_a_blob_cannot_grow_past_its_announced_size() -> None:
    assembler = BlobAssembler()
    first, second = chunks_of(Blob.of("b", bytes(SMALL + 4)), SMALL)
    first.total_size = SMALL + 2
    assert assembler.add(first) is None
    with pytest.raises(BlobError, match=f"grows past its announced size of {SMALL + 2}"):
        assembler.add(second)
    # A first chunk larger than its own announcement is refused as well.
    with pytest.raises(BlobError, match="grows past"):
        assembler.add(pb.Chunk(blob_id="c", data=b"abc", total_size=2, sha256=bytes(32)))


def test_a_restart_before_the_blob_is_complete_is_refused() -> None:
    assembler = BlobAssembler()
    first, *_ = chunks_of(Blob.of("b", bytes(2 * SMALL)), SMALL)
    assembler.add(first)
    with pytest.raises(BlobError, match="restarted before it was complete"):
        assembler.add(first)
    # Both attempts are forgotten: a third start is a fresh blob.
    assert _assemble(list(chunks_of(Blob.of("b", bytes(2 * SMALL)), SMALL)), assembler)


def test_the_number_of_blobs_in_flight_is_bounded() -> None:
    assembler = BlobAssembler(max_in_flight=2)
    pending = [list(chunks_of(Blob.of(name, bytes(2 * SMALL)), SMALL)) for name in "abc"]
    assembler.add(pending[0][0])
    assembler.add(pending[1][0])
    with pytest.raises(BlobError, match="more than 2 blobs in flight"):
        assembler.add(pending[2][0])
    assert assembler.add(pending[0][1]) is not None  # "a" completes and frees its place
    assert _assemble(pending[2], assembler).blob_id == "c"


def test_discard_forgets_incomplete_blobs() -> None:
    assembler = BlobAssembler(max_in_flight=1)
    first, second = chunks_of(Blob.of("b", bytes(2 * SMALL)), SMALL)
    assembler.add(first)
    assembler.discard()
    with pytest.raises(BlobError, match="unknown blob"):
        assembler.add(second)
    assert _assemble([first, second], assembler).data == bytes(2 * SMALL)


@pytest.mark.parametrize(
    ("chunk", "message"),
    [
        (pb.Chunk(data=b"x", total_size=1, sha256=bytes(32)), "without a blob_id"),
        (pb.Chunk(blob_id="b", data=b"x", total_size=1), "must carry a SHA-256"),
        (pb.Chunk(blob_id="b", total_size=1, sha256=bytes(31)), "must carry a SHA-256"),
        (
            pb.Chunk(blob_id="b", data=bytes(MAX_CHUNK_SIZE + 1), total_size=1 << 30),
            f"exceeds {MAX_CHUNK_SIZE}",
        ),
    ],
    ids=["no-id", "no-digest", "short-digest", "oversized-chunk"],
)
def test_malformed_chunks_are_refused(chunk: pb.Chunk, message: str) -> None:
    with pytest.raises(BlobError, match=message):
        BlobAssembler().add(chunk)


@pytest.mark.parametrize("chunk_size", [0, -1, MAX_CHUNK_SIZE + 1])
def test_chunk_size_is_bounded(chunk_size: int) -> None:
    with pytest.raises(ValueError, match="chunk_size must be in"):
        next(chunks_of(Blob.of("b", b"abc"), chunk_size))


def test_a_free_buffer_is_reused_and_a_referenced_one_is_not() -> None:
    pool = BufferPool()
    assembler = BlobAssembler(buffers=pool)
    first = _assemble(list(chunks_of(Blob.of("r1", os.urandom(5 * SMALL)), SMALL)), assembler)
    buffer_id = id(first.data)
    # The weights of round 1 are still in use (a model built on views of the buffer).
    weights = torch.frombuffer(first.data, dtype=torch.uint8)
    kept = weights.clone()
    del first
    second_sent = Blob.of("r2", os.urandom(5 * SMALL))
    second = _assemble(list(chunks_of(second_sent, SMALL)), assembler)
    assert id(second.data) != buffer_id
    assert torch.equal(weights, kept)  # round 1's weights were not overwritten
    # Once nothing refers to round 1's buffer, round 3 is written into it.
    del weights
    third_sent = Blob.of("r3", os.urandom(5 * SMALL))
    third = _assemble(list(chunks_of(third_sent, SMALL)), assembler)
    assert id(third.data) == buffer_id
    assert third == third_sent and second == second_sent
    # A different size never reuses it.
    del third
    other = _assemble(list(chunks_of(Blob.of("r4", os.urandom(3 * SMALL)), SMALL)), assembler)
    assert id(other.data) != buffer_id


def test_a_corrupted_blob_in_a_reused_buffer_is_still_refused() -> None:
    pool = BufferPool()
    assembler = BlobAssembler(buffers=pool)
    first = _assemble(list(chunks_of(Blob.of("r1", os.urandom(2 * SMALL)), SMALL)), assembler)
    del first
    chunks = list(chunks_of(Blob.of("r2", os.urandom(2 * SMALL)), SMALL))
    chunks[1].data = bytes(SMALL)
    assert assembler.add(chunks[0]) is None
    with pytest.raises(BlobError, match="corrupted in transit"):
        assembler.add(chunks[1])
    assert pool.take(2 * SMALL) is not None  # free again after the failure


def test_the_pool_tracks_at_most_max_bytes() -> None:
    pool = BufferPool(max_bytes=100)
    in_use = [bytearray(40), bytearray(40)]
    for buffer in in_use:
        pool.keep(buffer)
    pool.keep(bytearray(40))  # over the limit and nothing free to drop: not tracked
    assert pool.tracked_bytes == 80
    in_use.pop()  # one becomes free; a new one replaces it
    newest = bytearray(40)
    pool.keep(newest)
    assert pool.tracked_bytes == 80
    assert pool.take(40) is None  # both tracked buffers are in use


def test_free_buffers_of_another_size_are_let_go() -> None:
    pool = BufferPool()
    probe = bytearray(64)
    pool.keep(probe)
    in_use = bytearray(32)
    pool.keep(in_use)
    assert pool.tracked_bytes == 96  # the probe's buffer is still referenced
    del probe
    pool.keep(bytearray(16))  # a new size: the free 64-byte buffer goes, the busy one stays
    assert pool.tracked_bytes == 32 + 16
    assert pool.take(64) is None
