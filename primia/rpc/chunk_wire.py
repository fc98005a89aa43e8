"""Chunk messages written and read without copying their payload more than once.

Chunks are nearly all the bytes a federation moves (a ResNet-18's 45 MB of weights to
every node and an update back from each, every round). Through the protobuf runtime a
chunk's payload is copied out of the blob, into the message, into its serialization,
and on arrival into the parsed message and out of it again; with the transfers CPU-bound
(see docs/benchmarks.md) every copy costs round time. This module writes a chunk message
with one copy of the payload and reads one as a view of the received bytes.

The wire format is protobuf's, unchanged: :func:`encode` writes exactly the bytes
``SerializeToString`` writes for the same message (a test checks), and :func:`parse`
reads only the layout protobuf writes (each field at most once, in field-number order,
nothing else in the message) and returns None for any other layout, which the caller
then parses with the protobuf runtime. A message is therefore read the same whichever
path reads it, and anything protobuf would refuse is still refused by protobuf.

``envelope``: the chunk as field ``chunk = 2`` of ``NodeMessage`` or
``CoordinatorMessage`` (the ``Join`` stream), or bare (``Probe``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from google.protobuf.message import Message

from primia.blobs import CHUNK_SIZE, Blob, BlobChunk, chunks_of

_LEN = 2
_VARINT = 0
_ENVELOPE_TAG = 2 << 3 | _LEN
"""``chunk = 2`` in both NodeMessage and CoordinatorMessage (see protos/)."""
_WIRE_TYPES = {1: _LEN, 2: _VARINT, 3: _LEN, 4: _VARINT, 5: _LEN}
"""Chunk's fields: blob_id, offset, data, total_size, sha256."""

M = TypeVar("M", bound=Message)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode(chunk: BlobChunk, *, envelope: bool) -> bytes:
    """``chunk`` as a serialized ``Chunk`` message (in its envelope); the payload is
    copied once, into the result. Fields at their default value are left out, as proto3
    serializers do."""
    head = bytearray()
    if chunk.blob_id:
        blob_id = chunk.blob_id.encode()
        head += _varint(1 << 3 | _LEN) + _varint(len(blob_id)) + blob_id
    if chunk.offset:
        head += _varint(2 << 3 | _VARINT) + _varint(chunk.offset)
    if len(chunk.data):
        head += _varint(3 << 3 | _LEN) + _varint(len(chunk.data))
    tail = bytearray()
    if chunk.total_size:
        tail += _varint(4 << 3 | _VARINT) + _varint(chunk.total_size)
    if chunk.sha256:
        tail += _varint(5 << 3 | _LEN) + _varint(len(chunk.sha256)) + chunk.sha256
    if envelope:
        size = len(head) + len(chunk.data) + len(tail)
        head[:0] = _varint(_ENVELOPE_TAG) + _varint(size)
    return b"".join((head, chunk.data, tail))


def messages_of(blob: Blob, *, envelope: bool, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The serialized chunk messages that carry ``blob`` (cut by
    :func:`~primia.blobs.chunks_of`)."""
    for chunk in chunks_of(blob, chunk_size):
        yield encode(chunk, envelope=envelope)


class _OtherLayout(Exception):
    """Not the one layout :func:`parse` reads; the protobuf runtime reads it instead."""


def _read_varint(raw: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(raw) or shift > 63:
            raise _OtherLayout
        byte = raw[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if value >> 64:
                raise _OtherLayout
            return value, position
        shift += 7


def parse(raw: bytes, *, envelope: bool) -> BlobChunk | None:
    """The chunk in ``raw``, its data a view of ``raw``; None when ``raw`` is not a chunk
    message in the layout protobuf writes (another kind of message, fields repeated, out
    of order or unknown, invalid UTF-8 in the blob id)."""
    try:
        position, end = 0, len(raw)
        if envelope:
            tag, position = _read_varint(raw, 0)
            if tag != _ENVELOPE_TAG:
                return None
            length, position = _read_varint(raw, position)
            if position + length != end:
                return None
        view = memoryview(raw)
        fields: dict[int, Any] = {}
        last = 0
        while position < end:
            tag, position = _read_varint(raw, position)
            number, wire_type = tag >> 3, tag & 7
            if not last < number <= 5 or wire_type != _WIRE_TYPES[number]:
                return None
            last = number
            if wire_type == _VARINT:
                fields[number], position = _read_varint(raw, position)
            else:
                length, position = _read_varint(raw, position)
                if position + length > end:
                    return None
                fields[number] = view[position : position + length]
                position += length
        return BlobChunk(
            blob_id=bytes(fields.get(1, b"")).decode("utf-8"),
            offset=fields.get(2, 0),
            data=fields.get(3, view[0:0]),
            total_size=fields.get(4, 0),
            sha256=bytes(fields.get(5, b"")),
        )
    except (_OtherLayout, UnicodeDecodeError):
        return None


def serialize(message: Message | bytes) -> bytes:
    """gRPC's serializer for streams that carry chunks: chunk messages are encoded (by
    :func:`encode`) before they are queued, everything else is a protobuf message."""
    return message if isinstance(message, bytes) else message.SerializeToString()


def parser(message_type: type[M], *, envelope: bool) -> Callable[[bytes], BlobChunk | M]:
    """gRPC's deserializer for streams that carry chunks: a chunk message becomes a
    :class:`BlobChunk` viewing the received bytes, anything else a ``message_type``."""

    def parse_message(raw: bytes) -> BlobChunk | M:
        chunk = parse(raw, envelope=envelope)
        return chunk if chunk is not None else message_type.FromString(raw)

    return parse_message
