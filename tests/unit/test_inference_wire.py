"""The MPC links' byte format: tensors and CrypTen's small objects, never pickles."""

from __future__ import annotations

import io

import pytest
import torch

from primia.inference import wire


def _reader(data: bytes):  # type: ignore[no-untyped-def]
    stream = io.BytesIO(data)
    return lambda count: stream.read(count)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "terminate",
        torch.Size([8, 64, 112, 112]),
        {
            "function": "additive",
            "device": None,
            "args": (torch.Size([1, 4]), torch.Size([4, 3]), "conv2d"),
            "kwargs": {"stride": (2, 2), "padding": 1, "groups": 1, "scale": 0.5},
        },
        [True, False, -(2**63), 2**63 - 1],
    ],
)
def test_values_round_trip(value: object) -> None:
    decoded = wire.decode_value(wire.encode_value(value))
    assert decoded == value and type(decoded) is type(value)


@pytest.mark.parametrize("value", [object(), b"bytes", {1: "a"}, 2**64, torch.zeros(2)])
def test_objects_outside_the_format_are_refused(value: object) -> None:
    with pytest.raises(wire.WireError):
        wire.encode_value(value)


def test_a_pickle_is_not_a_value() -> None:
    import pickle

    with pytest.raises(wire.WireError):
        wire.decode_value(pickle.dumps({"function": "additive"}))


def test_nesting_and_counts_are_bounded() -> None:
    deep: object = None
    for _ in range(wire.MAX_DEPTH + 2):
        deep = [deep]
    with pytest.raises(wire.WireError, match="deeper"):
        wire.encode_value(deep)
    with pytest.raises(wire.WireError, match="claims"):
        wire.decode_value(b"l" + (10**6).to_bytes(4, "little"))


def test_tensor_frames_carry_dtype_shape_and_little_endian_elements() -> None:
    tensor = torch.tensor([[1, -2, 3]], dtype=torch.int64)
    frame = wire.tensor_header(tensor) + bytes(wire.tensor_payload(tensor))
    read = _reader(frame)
    header = wire.read_header(read, max_bytes=1 << 20)
    assert (header.dtype, header.shape, header.nbytes) == (torch.int64, (1, 3), 24)
    received, view = wire.empty_payload(header)
    view[:] = read(header.nbytes)
    assert torch.equal(received, tensor)
    assert frame.endswith((-2).to_bytes(8, "little", signed=True) + (3).to_bytes(8, "little"))


def test_a_header_is_checked_before_its_payload_is_read() -> None:
    big = wire.tensor_header(torch.zeros(1024, dtype=torch.int64))
    with pytest.raises(wire.WireError, match="at most 100"):
        wire.read_header(_reader(big), max_bytes=100)
    lying = bytearray(wire.tensor_header(torch.zeros(4, dtype=torch.int64)))
    lying[4] = 31  # 31 bytes for four 8-byte elements
    with pytest.raises(wire.WireError, match="arrived with 31 bytes"):
        wire.read_header(_reader(bytes(lying)), max_bytes=1 << 20)
    # a value's decoded objects outgrow its bytes: value frames are bounded far lower
    with pytest.raises(wire.WireError, match=f"at most {wire.MAX_VALUE_BYTES}"):
        wire.read_header(_reader(wire.HEADER.pack(wire.VALUE, 0, 0, 0, 1 << 20)), max_bytes=1 << 30)
    with pytest.raises(wire.WireError, match="a value frame holds"):
        wire.value_frame([None] * (wire.MAX_VALUE_BYTES + 1))
    with pytest.raises(wire.WireError, match="unknown kind"):
        wire.read_header(_reader(b"\x09" + bytes(11)), max_bytes=1 << 20)
