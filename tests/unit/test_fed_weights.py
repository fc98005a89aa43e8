"""Weights from another party are accepted only if they fit the model exactly and are finite."""

import json
import pickle
import struct

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from primia.federated.weights import WeightsError, decode_like, encode, view_safetensors
from primia.models import build_model


@pytest.fixture
def reference() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_model("cnn", num_classes=4).state_dict()


def raw(state: dict[str, torch.Tensor]) -> bytes:
    """Bytes as a careless or hostile peer could send them (no checks on the way out)."""
    return save_safetensors({name: t.contiguous() for name, t in state.items()})


def test_round_trip_restores_every_tensor_exactly(reference):
    decoded = decode_like(encode(reference), reference)
    assert set(decoded) == set(reference)
    for name, tensor in reference.items():
        assert decoded[name].dtype == tensor.dtype
        assert torch.equal(decoded[name], tensor), name


def test_round_trip_loads_into_a_fresh_model(reference):
    model = build_model("cnn", num_classes=4)
    model.load_state_dict(decode_like(encode(reference), model.state_dict()))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reference[name])


def test_encode_accepts_tensors_that_need_grad_or_are_not_contiguous(reference):
    name = "6.weight"
    state = dict(reference)
    state[name] = reference[name].t().contiguous().t().requires_grad_(True)
    assert not state[name].is_contiguous()
    decoded = decode_like(encode(state), reference)
    assert torch.equal(decoded[name], reference[name])


def test_missing_tensor_is_named(reference):
    state = dict(reference)
    del state["6.bias"]
    with pytest.raises(WeightsError, match=r"missing 6\.bias, unexpected none"):
        decode_like(encode(state), reference)


def test_unexpected_tensor_is_named(reference):
    state = {**reference, "extra.weight": torch.zeros(2)}
    with pytest.raises(WeightsError, match=r"missing none, unexpected extra\.weight"):
        decode_like(encode(state), reference)


def test_many_missing_tensors_are_abbreviated(reference):
    with pytest.raises(WeightsError) as caught:
        decode_like(encode({"0.0.weight": reference["0.0.weight"]}), reference)
    assert "missing 0.1.bias, 0.1.weight, 2.0.weight and 4 more" in str(caught.value)


def test_wrong_shape_is_refused_with_both_shapes(reference):
    state = {**reference, "6.weight": torch.zeros(5, 32)}
    with pytest.raises(WeightsError, match=r"6\.weight is torch\.float32 \(5, 32\)") as caught:
        decode_like(encode(state), reference, what="update of site-a")
    message = str(caught.value)
    assert "the model needs torch.float32 (4, 32)" in message
    assert "update of site-a" in message


def test_wrong_dtype_is_refused(reference):
    state = {**reference, "6.bias": reference["6.bias"].double()}
    with pytest.raises(WeightsError, match=r"6\.bias is torch\.float64 \(4,\)"):
        decode_like(encode(state), reference)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_refused(reference, bad):
    state = {name: t.clone() for name, t in reference.items()}
    state["2.0.weight"][3, 1, 0, 2] = bad
    with pytest.raises(WeightsError, match=r"2\.0\.weight holds NaN or infinite values"):
        decode_like(raw(state), reference)


@pytest.mark.parametrize(
    "data",
    [b"garbage", b"", pickle.dumps({"6.bias": [0.0, 0.0, 0.0, 0.0]})],
    ids=["garbage", "empty", "pickle"],
)
def test_bytes_that_are_not_safetensors_are_refused(reference, data):
    with pytest.raises(WeightsError, match="the weights are not valid safetensors"):
        decode_like(data, reference)


def test_truncated_safetensors_are_refused(reference):
    data = encode(reference)
    with pytest.raises(WeightsError, match="not valid safetensors"):
        decode_like(data[: len(data) // 2], reference)


def test_empty_safetensors_are_missing_every_tensor(reference):
    with pytest.raises(WeightsError, match=r"missing 0\.0\.weight"):
        decode_like(encode({}), reference)


def test_integer_tensors_are_not_checked_for_nan():
    reference = {"count": torch.tensor([3], dtype=torch.int64)}
    decoded = decode_like(encode(reference), reference)
    assert decoded["count"].tolist() == [3]


def test_received_weights_are_views_of_the_buffer_not_copies(reference):
    buffer = bytearray(encode(reference))
    decoded = decode_like(buffer, reference)
    name = "6.bias"
    decoded[name][0] = 123.0  # changes the buffer: no copy was made
    assert decode_like(buffer, reference)[name][0] == 123.0


def test_read_only_data_decodes_to_the_same_tensors(reference):
    data = encode(reference)
    for decoded in (decode_like(data, reference), decode_like(memoryview(data), reference)):
        for name, tensor in reference.items():
            assert torch.equal(decoded[name], tensor)


def test_meta_tensors_are_a_reference():
    with torch.device("meta"):
        shapes = build_model("cnn", num_classes=4).state_dict()
    torch.manual_seed(0)
    weights = build_model("cnn", num_classes=4).state_dict()
    assert set(decode_like(encode(weights), shapes)) == set(weights)


def _with_header(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x00" * 4, "too few"),
        (struct.pack("<Q", 1 << 40) + b"{}", "the header claims"),
        (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
        (struct.pack("<Q", 3) + b"{x}", "not JSON"),
        (
            _with_header({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4),
            "outside the data",
        ),
        (
            _with_header({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8),
            "spans 8 bytes",
        ),
        (
            _with_header({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8),
            "starts at byte 4",
        ),
        (
            _with_header({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8),
            "4 bytes follow",
        ),
        (
            _with_header({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}, b""),
            "not a list of sizes",
        ),
        (
            _with_header({"a": {"dtype": "OBJ", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
            "not a weight dtype",
        ),
        (
            _with_header({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, b"\0" * 4),
            "outside the data",
        ),
        (
            _with_header(
                {
                    "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                    "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                },
                b"\0" * 4,
            ),
            "starts at byte 0",
        ),
    ],
    ids=[
        "short",
        "huge-header",
        "not-object",
        "not-json",
        "past-end",
        "wrong-length",
        "gap",
        "trailing",
        "negative-size",
        "dtype",
        "reversed",
        "overlap",
    ],
)
def test_malformed_safetensors_name_the_problem(data, problem):
    with pytest.raises(WeightsError, match=problem):
        view_safetensors(data)


def test_our_reader_agrees_with_the_safetensors_library(reference):
    data = save_safetensors(
        {
            **{name: t.contiguous() for name, t in reference.items()},
            "empty": torch.zeros(0, 3),
            "half": torch.ones(5, dtype=torch.float16),
            "flag": torch.tensor([True, False]),
        },
        metadata={"primia.model_spec": "{}"},
    )
    ours = view_safetensors(data)
    theirs = load_safetensors(data)
    assert set(ours) == set(theirs)
    for name, tensor in theirs.items():
        assert ours[name].dtype == tensor.dtype and torch.equal(ours[name], tensor), name
