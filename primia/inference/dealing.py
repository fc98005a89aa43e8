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
a ResNet-18's largest activation at 224 px and the largest batch), so a request cannot
make the dealer allocate the machine's memory. Anything else ends the session.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from primia.inference.wire import MAX_DIMS

PRODUCTS = ("mul", "matmul", "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d")
"""The products CrypTen's Beaver multiplication asks triples for."""
CONVOLUTION_KEYWORDS = frozenset({"stride", "padding", "dilation", "groups", "output_padding"})
MAX_ELEMENTS = 1 << 28
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
    return None


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
