"""The byte format of the MPC links: tensors and CrypTen's small objects, never pickles.

Every message on a link is one frame::

    kind u8 | dtype u8 | ndim u8 | 0 u8 | payload bytes u64 | ndim × dim u64 | payload

all little-endian. A *tensor* frame's payload is the tensor's elements, little-endian, in
C order; its dtype and shape are the header's. A *value* frame (kind 2) carries one of the
objects CrypTen's communicator sends with ``send_obj``/``broadcast_obj`` (tensor sizes,
the crypto provider's requests, "terminate") in the typed encoding of :func:`encode_value`:
a tag byte, then the value. Only None, bools, 64-bit integers, floats, strings, tuples,
lists, string-keyed dicts and ``torch.Size`` are encoded; anything else is refused on both
ends, so a peer can make this process build nothing but these plain values.

A frame's header is checked before its payload is read: a known dtype, at most
``MAX_DIMS`` dimensions, a payload of exactly ``numel × itemsize`` bytes and at most
``max_bytes`` (the receiver's limit; :data:`MAX_VALUE_BYTES` for a value), so a peer
cannot make it allocate more than that for one frame (:mod:`primia.inference.links`
bounds how many it reads ahead).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from primia.errors import PrimiaError

TENSOR = 1
VALUE = 2
HEADER = struct.Struct("<BBBBQ")
DIM = struct.Struct("<Q")
MAX_DIMS = 8
MAX_VALUE_BYTES = 1 << 16
"""The largest value frame. CrypTen's values are tensor sizes and dealing requests (a few
hundred bytes), and a decoded value takes several times its bytes (a list of Nones, one
byte each on the wire, eight bytes a pointer in memory), so a value frame is bounded
well below a tensor frame."""
MAX_DEPTH = 16
"""How deeply values may nest (CrypTen's deepest: a request's kwargs holding a tuple)."""

DTYPES: dict[int, torch.dtype] = {
    1: torch.int64,
    2: torch.int32,
    3: torch.int8,
    4: torch.uint8,
    5: torch.bool,
    6: torch.float32,
    7: torch.float64,
}
_CODES = {dtype: code for code, dtype in DTYPES.items()}


class WireError(PrimiaError):
    """A frame or value that this format does not allow (sent or received)."""


@dataclass(frozen=True)
class Header:
    kind: int
    dtype: torch.dtype | None
    shape: tuple[int, ...]
    nbytes: int


def tensor_header(tensor: torch.Tensor) -> bytes:
    """The header of a tensor frame for ``tensor`` (its payload follows)."""
    code = _CODES.get(tensor.dtype)
    if code is None:
        raise WireError(f"cannot send a tensor of dtype {tensor.dtype} on an MPC link")
    if tensor.dim() > MAX_DIMS:
        raise WireError(f"cannot send a tensor of {tensor.dim()} dimensions (at most {MAX_DIMS})")
    nbytes = tensor.numel() * tensor.element_size()
    dims = b"".join(DIM.pack(size) for size in tensor.shape)
    return HEADER.pack(TENSOR, code, tensor.dim(), 0, nbytes) + dims


def tensor_payload(tensor: torch.Tensor) -> memoryview:
    """``tensor``'s elements, little-endian, C order (a view where the tensor is already
    contiguous: send it before changing the tensor)."""
    array = tensor.detach().cpu().contiguous().numpy()
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return memoryview(array.data).cast("B")


def value_frame(value: Any) -> tuple[bytes, bytes]:
    """Header and payload of a value frame for ``value``."""
    payload = encode_value(value)
    if len(payload) > MAX_VALUE_BYTES:
        raise WireError(f"a value of {len(payload)} bytes; a value frame holds {MAX_VALUE_BYTES}")
    return HEADER.pack(VALUE, 0, 0, 0, len(payload)), payload


def read_header(read_exact: Callable[[int], bytes], *, max_bytes: int) -> Header:
    """Read and check one frame header with ``read_exact(n)`` (n bytes or an error)."""
    kind, code, ndim, zero, nbytes = HEADER.unpack(read_exact(HEADER.size))
    if kind not in (TENSOR, VALUE) or zero != 0:
        raise WireError(f"a frame of unknown kind {kind} arrived; the peer does not speak this")
    if nbytes > max_bytes:
        raise WireError(f"a frame of {nbytes} bytes arrived; this party takes at most {max_bytes}")
    if kind == VALUE:
        if code or ndim:
            raise WireError("a value frame arrived with a dtype or shape")
        if nbytes > MAX_VALUE_BYTES:
            raise WireError(
                f"a value frame of {nbytes} bytes arrived; a value takes at most {MAX_VALUE_BYTES}"
            )
        return Header(VALUE, None, (), nbytes)
    dtype = DTYPES.get(code)
    if dtype is None or ndim > MAX_DIMS:
        raise WireError(f"a tensor frame arrived with dtype code {code} and {ndim} dimensions")
    shape = tuple(DIM.unpack(read_exact(DIM.size))[0] for _ in range(ndim))
    numel = 1
    for size in shape:
        numel *= size
    if numel * torch.empty((), dtype=dtype).element_size() != nbytes:
        raise WireError(f"a tensor frame of shape {shape} arrived with {nbytes} bytes")
    return Header(TENSOR, dtype, shape, nbytes)


def empty_payload(header: Header) -> tuple[torch.Tensor, memoryview]:
    """A tensor for ``header``'s frame and the writable bytes its payload is read into."""
    if header.dtype is None:
        raise WireError("a value frame has no tensor payload")
    tensor = torch.empty(header.shape, dtype=header.dtype)
    return tensor, memoryview(tensor.view(-1).view(torch.uint8).numpy().data).cast("B")


_NONE, _TRUE, _FALSE = b"N", b"T", b"F"
_INT, _FLOAT, _STR = b"i", b"f", b"s"
_TUPLE, _LIST, _DICT, _SIZE = b"t", b"l", b"d", b"z"
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")
_U32 = struct.Struct("<I")


def encode_value(value: Any) -> bytes:
    """``value`` in the typed encoding (see the module's docstring)."""
    out = bytearray()
    _encode(value, out, 0)
    return bytes(out)


def _encode(value: Any, out: bytearray, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise WireError(f"a value nested deeper than {MAX_DEPTH} cannot be sent")
    if value is None:
        out += _NONE
    elif value is True or value is False:
        out += _TRUE if value else _FALSE
    elif isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise WireError(f"the integer {value} does not fit in 64 bits")
        out += _INT + _I64.pack(value)
    elif isinstance(value, float):
        out += _FLOAT + _F64.pack(value)
    elif isinstance(value, str):
        data = value.encode()
        out += _STR + _U32.pack(len(data)) + data
    elif isinstance(value, torch.Size):
        out += _SIZE + _U32.pack(len(value)) + b"".join(_I64.pack(size) for size in value)
    elif isinstance(value, tuple | list):
        out += (_TUPLE if isinstance(value, tuple) else _LIST) + _U32.pack(len(value))
        for item in value:
            _encode(item, out, depth + 1)
    elif isinstance(value, dict):
        out += _DICT + _U32.pack(len(value))
        for key, item in value.items():
            if not isinstance(key, str):
                raise WireError(f"a dict key of type {type(key).__name__} cannot be sent")
            _encode(key, out, depth + 1)
            _encode(item, out, depth + 1)
    elif isinstance(value, np.integer):
        _encode(int(value), out, depth)
    else:
        raise WireError(f"a {type(value).__name__} cannot be sent on an MPC link")


def decode_value(data: bytes) -> Any:
    """The value :func:`encode_value` encoded as ``data``; :class:`WireError` otherwise."""
    reader = _Reader(data)
    value = reader.value(0)
    if reader.position != len(data):
        raise WireError(f"{len(data) - reader.position} bytes follow a value")
    return value


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def take(self, count: int) -> bytes:
        end = self.position + count
        if end > len(self.data):
            raise WireError("a value ends early")
        chunk = self.data[self.position : end]
        self.position = end
        return chunk

    def count(self) -> int:
        (count,) = _U32.unpack(self.take(_U32.size))
        if count > len(self.data) - self.position:  # every item takes a byte at least
            raise WireError(f"a value claims {count} items, more than its bytes hold")
        return int(count)

    def value(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise WireError(f"a value nested deeper than {MAX_DEPTH} arrived")
        tag = self.take(1)
        if tag == _NONE:
            return None
        if tag in (_TRUE, _FALSE):
            return tag == _TRUE
        if tag == _INT:
            return _I64.unpack(self.take(_I64.size))[0]
        if tag == _FLOAT:
            return _F64.unpack(self.take(_F64.size))[0]
        if tag == _STR:
            return self.take(self.count()).decode()
        if tag == _SIZE:
            count = self.count()
            return torch.Size(_I64.unpack(self.take(_I64.size))[0] for _ in range(count))
        if tag in (_TUPLE, _LIST):
            items = [self.value(depth + 1) for _ in range(self.count())]
            return tuple(items) if tag == _TUPLE else items
        if tag == _DICT:
            result = {}
            for _ in range(self.count()):
                key = self.value(depth + 1)
                if not isinstance(key, str):
                    raise WireError("a dict key that is not a string arrived")
                result[key] = self.value(depth + 1)
            return result
        raise WireError(f"a value with unknown tag {tag!r} arrived")
