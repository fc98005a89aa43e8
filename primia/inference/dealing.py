"""What the crypto provider deals: the five correlations of CrypTen's TTP protocol, no other.

CrypTen's ``TTPServer`` answers each request of party 0 (the model owner) with
``getattr(self, request["function"])(*args, **kwargs)``, and sends party 0 the result. It
was written for honest parties: any method of the server can be named. One of them,
``_get_additive_PRSS(size, remove_rank=True)``, returns the dealer's next draw from the
data owner's generator, which is the data owner's next share a₁ of a Beaver triple
(the dealer's copy of the generator is the one it seeded the data owner's with). The
next multiplication opens ε = x − a with a = a₀ + a₁, so a model owner holding a₁ reads
x, the data owner's secret: at the first layer, its images. Only party 0 talks to the
dealer, so only a deviating model owner can send such a request; it reads images
without colluding with anyone (``tests/integration/test_inference_dealing.py``).

Naming only dealing functions is not enough. Each answer is computed from the dealer's
copies of the parties' generators, drawn in the order requests come; the data owner draws
its shares from its generator in the order its own computation needs them. A request the
data owner does not make (an extra ``B2A``, or a triple of other sizes) moves the
dealer's copy out of step, so that a later answer's mask, a draw the dealer subtracts
from a value of at most one bit (``B2A``'s rB, ``wraps``' θ), is the data owner's share
a₁ of another triple: the answer gives a₁ to within 1, and that triple's opening gives
its input. So every computing party sends the dealer each request, and the dealer serves
party 0's only when the data owner sent the same one (:func:`mirror_problem`): the
dealer draws exactly what the data owner draws, in the same order, and each answer is
masked by the data owner's share of that same correlation.

The dealer also serves only what a session needs, checked before CrypTen sees it:

* ``additive(size0, size1, op, *args, **kwargs)`` with ``op`` one of CrypTen's Beaver
  products (:data:`PRODUCTS`) and only a convolution's keyword arguments;
* ``square(size)``, ``wraps(size)``, ``B2A(size)`` and ``binary(size0, size1)``;

each result c₀ = f(a, b) − c₁ is masked by the data owner's fresh share c₁, so its value
tells the model owner nothing. Every size is at most ``MAX_DIMS`` non-negative
dimensions and :data:`MAX_ELEMENTS` elements (2 GiB of int64 per tensor: a hundred times
a ResNet-18's largest activation at 224 px and the largest batch), and so is every
result: the product of two bounded operands is not bounded (a ``mul`` of sizes
(2^28, 1) and (1, 2^8) broadcasts to 2^36 elements, 512 GiB; a convolution's padding or
dilation grows its output at will), and the dealer computes party 0's request before the
data owner's copy is compared, so a bound on the operands alone let a model owner
exhaust the dealer's memory with one request the data owner never made. A triple's
product may also take at most :data:`MAX_WORK` multiply-adds (a ``matmul`` of two
2^14 × 2^14 operands, each within the bounds, is 2^42 of them: a quarter of an hour of
one of the dealer's cores). So a request cannot make the dealer allocate the machine's memory or
hold its CPU for long. Anything else ends the session.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from primia.inference.acceleration import product_size
from primia.inference.wire import MAX_DIMS

PRODUCTS = ("mul", "matmul", "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d")
"""The products CrypTen's Beaver multiplication asks triples for."""
CONVOLUTION_KEYWORDS = frozenset({"stride", "padding", "dilation", "groups", "output_padding"})
MAX_ELEMENTS = 1 << 28
MAX_WORK = 1 << 36
"""The most multiply-adds one triple's product may take: about seventy times ResNet-18's
heaviest convolution at 224 px and batch 8 (9.4·10^8, the first layer's), and well under
a minute of the dealer's CPU."""
_SIZES = {"additive": 2, "square": 1, "binary": 2, "wraps": 1, "B2A": 1}
"""Each dealing function and how many sizes lead its arguments."""


def request_problem(request: Any) -> str | None:
    """Why the dealer must not serve ``request`` (a message from party 0), or None."""
    if request == "terminate":
        return None
    if not isinstance(request, Mapping) or set(request) != {
        "function",
        "device",
        "args",
        "kwargs",
    }:
        return "a message that is not a dealing request"
    function, args, kwargs = request["function"], request["args"], request["kwargs"]
    if function not in _SIZES:
        return f"{str(function)[:40]!r}, which is not one of {', '.join(_SIZES)}"
    if not isinstance(args, list | tuple) or not isinstance(kwargs, Mapping):
        return f"{function} with arguments that are not a list and a mapping"
    count = _SIZES[function]
    extra = list(args[count:])
    if function == "additive":
        if not extra or extra[0] not in PRODUCTS:
            return f"a triple of the product {str(extra[:1])[:40]}, not one of {PRODUCTS}"
        if set(kwargs) - CONVOLUTION_KEYWORDS:
            return f"a triple with the keywords {sorted(kwargs)[:5]}"
    elif extra or kwargs:
        return f"{function} with more arguments than its {count} size(s)"
    if len(args) < count:
        return f"{function} with {len(args)} of its {count} size(s)"
    for size in args[:count]:
        if problem := _size_problem(size):
            return f"{function} of {problem}"
    if function == "additive":
        return _product_problem(args[0], args[1], extra[0], extra[1:], kwargs)
    if function == "binary":
        try:
            result = torch.broadcast_shapes(torch.Size(_dims(args[0])), torch.Size(_dims(args[1])))
        except (RuntimeError, TypeError, ValueError, OverflowError) as error:
            return f"a binary triple of sizes that do not broadcast ({str(error)[:80]})"
        if result.numel() > MAX_ELEMENTS:
            return f"a binary triple of {result.numel()} elements, more than {MAX_ELEMENTS}"
    return None


def _product_problem(
    size0: Any, size1: Any, op: str, args: list[Any], kwargs: Mapping[str, Any]
) -> str | None:
    """Why the dealer must not compute ``op`` of operands of these (bounded) sizes: its
    result's size (found on shapes only, as the data owner finds it) or its number of
    multiply-adds is over the bounds, or ``op`` is not defined on them."""
    try:
        result = product_size(op, size0, size1, *args, **kwargs)
    except (RuntimeError, TypeError, ValueError, OverflowError, IndexError) as error:
        # what torch raises for operands and arguments the product is not defined on
        return f"a triple whose {op} is not defined on those sizes ({str(error)[:80]})"
    if result.numel() > MAX_ELEMENTS:
        return f"a triple whose {op} has {result.numel()} elements, more than {MAX_ELEMENTS}"
    first, second = _dims(size0), _dims(size1)
    # multiply-adds per result element (a matmul's inner dimension, a convolution's
    # weights per output channel); a transposed convolution's per input element
    if op == "mul":
        work = result.numel()
    elif op == "matmul":
        work = result.numel() * first[-1]
    elif op.startswith("conv_transpose"):
        work = math.prod(first) * math.prod(second[1:])
    else:
        work = result.numel() * math.prod(second[1:])
    if work > MAX_WORK:
        return f"a triple whose {op} takes {work} multiply-adds, more than {MAX_WORK}"
    return None


def _dims(size: Any) -> tuple[int, ...]:
    return (size,) if isinstance(size, int) else tuple(size)


def _size_problem(size: Any) -> str | None:
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size,)
    if not isinstance(size, list | tuple) or len(size) > MAX_DIMS:
        return f"a size that is not a tuple of at most {MAX_DIMS} dimensions"
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in size):
        return "a size with a dimension that is not a non-negative integer"
    if math.prod(size) > MAX_ELEMENTS:
        return f"{math.prod(size)} elements, more than {MAX_ELEMENTS}"
    return None


def mirror_problem(request: Mapping[str, Any], others: list[Any]) -> str | None:
    """Why party 0's ``request`` must not be served given what the other computing parties
    asked for at the same point (``others``, in rank order), or None: each must be the
    same request."""
    for other in others:
        if other != request:
            asked = other.get("function") if isinstance(other, Mapping) else other
            return (
                f"{str(request.get('function'))[:40]!r} with arguments the data owner did not "
                f"ask for (it asked for {str(asked)[:40]!r} at that point)"
            )
    return None
