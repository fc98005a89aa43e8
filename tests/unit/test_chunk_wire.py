"""Chunk messages written and read by primia.rpc.chunk_wire are protobuf's: the same
bytes as SerializeToString, read the same as FromString, and any layout the fast reader
does not know is left to protobuf."""

import os
import random

import pytest
from google.protobuf.message import DecodeError

from primia.blobs import Blob, BlobChunk, chunks_of
from primia.rpc.chunk_wire import encode, messages_of, parse, parser, serialize
from primia.rpc.generated import federation_pb2 as pb

ENVELOPES = {"NodeMessage": pb.NodeMessage, "CoordinatorMessage": pb.CoordinatorMessage}


def _proto(chunk: BlobChunk) -> pb.Chunk:
    return pb.Chunk(
        blob_id=chunk.blob_id,
        offset=chunk.offset,
        data=bytes(chunk.data),
        total_size=chunk.total_size,
        sha256=chunk.sha256,
    )


def _same(read: BlobChunk, expected: pb.Chunk) -> None:
    assert isinstance(read.data, memoryview)
    assert (read.blob_id, read.offset, bytes(read.data), read.total_size, read.sha256) == (
        expected.blob_id,
        expected.offset,
        expected.data,
        expected.total_size,
        expected.sha256,
    )


CHUNKS = [
    BlobChunk("weights-r3", 0, b"abc", 3, bytes(range(32))),
    BlobChunk("w", 5 << 20, os.urandom(1 << 20)),
    BlobChunk("", 0, b""),
    BlobChunk("é-ü-中", 2**64 - 1, b"\x00" * 200, 2**63, b"\xff" * 32),
    BlobChunk("b", 127, b"x" * 127, 128, b"d"),
]


@pytest.mark.parametrize("chunk", CHUNKS, ids=range(len(CHUNKS)))
def test_encode_writes_what_protobuf_writes(chunk: BlobChunk) -> None:
    message = _proto(chunk)
    assert encode(chunk, envelope=False) == message.SerializeToString()
    for envelope in ENVELOPES.values():
        assert encode(chunk, envelope=True) == envelope(chunk=message).SerializeToString()


@pytest.mark.parametrize("chunk", CHUNKS, ids=range(len(CHUNKS)))
def test_parse_reads_what_protobuf_reads(chunk: BlobChunk) -> None:
    message = _proto(chunk)
    bare = parse(message.SerializeToString(), envelope=False)
    assert bare is not None
    _same(bare, message)
    for envelope in ENVELOPES.values():
        raw = envelope(chunk=message).SerializeToString()
        wrapped = parse(raw, envelope=True)
        assert wrapped is not None
        _same(wrapped, envelope.FromString(raw).chunk)


def test_a_blob_round_trips_through_its_messages() -> None:
    blob = Blob.of("update", os.urandom(3 * 1000 + 7))
    messages = list(messages_of(blob, envelope=True, chunk_size=1000))
    assert len(messages) == 4
    for message, chunk in zip(messages, chunks_of(blob, 1000), strict=True):
        read = parse(message, envelope=True)
        assert read is not None
        assert (read.offset, bytes(read.data)) == (chunk.offset, bytes(chunk.data))
    first = pb.NodeMessage.FromString(messages[0]).chunk
    assert (first.total_size, first.sha256) == (len(blob.data), blob.sha256)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


OTHER_LAYOUTS = {
    "fields-out-of-order": _varint(2 << 3) + _varint(7) + _field(1, b"b"),
    "field-repeated": _field(1, b"a") + _field(1, b"b"),
    "unknown-field": _field(1, b"a") + _field(9, b"x"),
    "offset-as-bytes": _field(1, b"a") + _field(2, b"x"),
    "overlong-varint": _varint(2 << 3) + b"\x80" * 10 + b"\x01",
    "truncated-data": _field(1, b"a") + _varint(3 << 3 | 2) + _varint(10) + b"abc",
    "invalid-utf8-id": _field(1, b"\xff\xfe"),
}


@pytest.mark.parametrize("raw", OTHER_LAYOUTS.values(), ids=OTHER_LAYOUTS.keys())
def test_other_layouts_are_left_to_protobuf(raw: bytes) -> None:
    assert parse(raw, envelope=False) is None
    assert parse(_field(2, raw), envelope=True) is None
    read = parser(pb.Chunk, envelope=False)
    try:
        expected = pb.Chunk.FromString(raw)
    except DecodeError:
        with pytest.raises(DecodeError):
            read(raw)
    else:
        assert read(raw) == expected  # protobuf's reading, whatever it makes of it


def test_other_messages_are_parsed_by_protobuf() -> None:
    hello = pb.NodeMessage(hello=pb.Hello(protocol_version=1, device="cpu"))
    raw = hello.SerializeToString()
    assert parse(raw, envelope=True) is None
    assert parser(pb.NodeMessage, envelope=True)(raw) == hello
    # A chunk field followed by another field of the envelope is not the chunk layout.
    mixed = pb.NodeMessage(chunk=pb.Chunk(blob_id="b")).SerializeToString() + raw
    assert parse(mixed, envelope=True) is None


def _random_message(generator: random.Random) -> bytes:
    """A few fields of random number (1-6), wire type and value, in random order; now and
    then a byte damaged or the end cut off."""
    raw = b""
    for _ in range(generator.randrange(0, 5)):
        number = generator.randrange(1, 7)
        if generator.random() < 0.5:
            raw += _varint(number << 3) + _varint(generator.choice([0, 1, 300, 2**64 - 1]))
        else:
            raw += _field(number, generator.choice([b"", b"ab", "é".encode(), b"\xff", b"z" * 40]))
    if raw and generator.random() < 0.2:
        position = generator.randrange(len(raw))
        raw = raw[:position] + bytes([generator.randrange(256)]) + raw[position + 1 :]
    if raw and generator.random() < 0.1:
        raw = raw[: generator.randrange(len(raw))]
    return raw


def test_random_messages_read_as_protobuf_reads_them() -> None:
    generator = random.Random(0)
    read = parser(pb.Chunk, envelope=False)
    fast_reads = 0
    for _ in range(3000):
        raw = _random_message(generator)
        try:
            expected = pb.Chunk.FromString(raw)
        except DecodeError:
            assert parse(raw, envelope=False) is None
            continue
        fast = parse(raw, envelope=False)
        if fast is None:
            assert read(raw) == expected
        else:
            fast_reads += 1
            _same(fast, expected)
    assert fast_reads > 100


def test_serialize_passes_encoded_messages_through() -> None:
    encoded = encode(CHUNKS[0], envelope=True)
    assert serialize(encoded) is encoded
    hello = pb.NodeMessage(hello=pb.Hello(device="cpu"))
    assert serialize(hello) == hello.SerializeToString()
