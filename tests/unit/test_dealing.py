"""The requests the crypto provider serves (:mod:`primia.inference.dealing`): every request
a session makes, refused the moment it names anything else or an outsized tensor."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from primia.inference.dealing import MAX_ELEMENTS, MAX_WORK, mirror_problem, request_problem


def _request(function: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"function": function, "device": "cpu", "args": args, "kwargs": kwargs}


@pytest.mark.parametrize(
    "request_",
    [
        "terminate",
        _request("additive", torch.Size([2, 1, 32, 32]), torch.Size([4, 1, 3, 3]), "conv2d")
        | {"kwargs": {"stride": 1, "padding": 1, "dilation": 1, "groups": 1}},
        _request("additive", torch.Size([8, 16]), torch.Size([16, 4]), "matmul"),
        _request("additive", [3], [3], "mul"),
        # ResNet-18's heaviest product at 224 px and batch 8, its first convolution
        _request("additive", torch.Size([8, 3, 224, 224]), torch.Size([64, 3, 7, 7]), "conv2d")
        | {"kwargs": {"stride": 2, "padding": 3, "dilation": 1, "groups": 1}},
        _request("square", torch.Size([2, 4])),
        _request("binary", torch.Size([2, 4]), torch.Size([2, 4])),
        _request("wraps", torch.Size([5])),
        _request("B2A", 7),
        _request("B2A", torch.Size([])),
    ],
)
def test_what_a_session_asks_for_is_served(request_: Any) -> None:
    assert request_problem(request_) is None


@pytest.mark.parametrize(
    ("request_", "problem"),
    [
        (_request("_get_additive_PRSS", [4], remove_rank=True), "not one of additive"),
        (_request("_setup_generators"), "not one of additive"),
        (_request("__init__"), "not one of additive"),
        (_request("additive", [2], [2], "kron"), "not one of ('mul'"),
        (_request("additive", [2], [2]), "not one of ('mul'"),
        (_request("additive", [2], [2], "mul", remove_rank=True), "keywords ['remove_rank']"),
        (_request("square", [2], remove_rank=True), "more arguments than its 1 size"),
        (_request("binary", [2]), "1 of its 2 size"),
        (_request("square", [MAX_ELEMENTS + 1]), f"more than {MAX_ELEMENTS}"),
        (_request("square", [1 << 20, 1 << 20]), f"more than {MAX_ELEMENTS}"),
        (_request("square", [-1]), "not a non-negative integer"),
        (_request("square", [True]), "not a non-negative integer"),
        (_request("square", [1] * 9), "at most 8 dimensions"),
        # operands within the bounds whose product is not: the dealer computes before it
        # compares the data owner's copy, so these would exhaust its memory or CPU
        (_request("additive", [1 << 28, 1], [1, 1 << 8], "mul"), f"more than {MAX_ELEMENTS}"),
        (
            _request("additive", [1, 1, 8, 8], [1, 1, 1, 1], "conv2d", padding=1 << 14),
            f"more than {MAX_ELEMENTS}",
        ),
        (_request("additive", [1 << 14] * 2, [1 << 14] * 2, "matmul"), f"more than {MAX_WORK}"),
        (_request("additive", [2, 3], [4, 5], "matmul"), "not defined on those sizes"),
        (_request("additive", [1, 3, 8, 8], [4, 2, 3, 3], "conv2d"), "not defined on those sizes"),
        (_request("additive", [1, 1, 2, 2], [4, 1, 3, 3], "conv2d"), "not defined on those sizes"),
        (_request("binary", [1 << 28, 1], [1, 1 << 28]), f"more than {MAX_ELEMENTS}"),
        (_request("binary", [2], [3]), "do not broadcast"),
        (_request("square", "4"), "at most 8 dimensions"),
        ({"function": "square", "args": [[2]]}, "not a dealing request"),
        (["square", [2]], "not a dealing request"),
        (_request("square", [2]) | {"args": "xy"}, "not a list and a mapping"),
    ],
)
def test_anything_else_is_refused_naming_it(request_: Any, problem: str) -> None:
    found = request_problem(request_)
    assert found is not None and problem in found, found


def test_a_request_is_served_only_when_the_data_owner_asked_the_same() -> None:
    triple = _request("additive", torch.Size([2, 3]), torch.Size([3, 4]), "matmul")
    assert mirror_problem(triple, [dict(triple)]) is None
    other_sizes = _request("additive", torch.Size([2, 3]), torch.Size([3, 5]), "matmul")
    found = mirror_problem(triple, [other_sizes])
    assert found is not None and "the data owner did not ask for" in found
    found = mirror_problem(_request("B2A", torch.Size([4])), [triple])
    assert found is not None and "it asked for 'additive'" in found
