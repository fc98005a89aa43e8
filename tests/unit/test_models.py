"""Every model passes Opacus' validator unchanged and uses only layers MPC can run."""

import pytest
import torch
from opacus.validators import ModuleValidator
from torch import nn

from primia.errors import ModelError
from primia.models import ALLOWED_LAYERS, build_model, check_model, incompatibilities, model_names
from primia.models.checkpoint import ModelSpec, load_model, read_spec, save_model
from primia.models.layers import WSConv2d, export_parameters, standardise


@pytest.mark.parametrize("name", model_names())
def test_model_is_dp_and_mpc_compatible(name):
    model = build_model(name, num_classes=3, width=8)
    assert ModuleValidator.validate(model, strict=False) == []
    assert incompatibilities(model) == []
    for module in model.modules():
        if module is not model:
            assert isinstance(module, ALLOWED_LAYERS), type(module)
        assert not isinstance(module, nn.Identity | nn.BatchNorm2d)
        if isinstance(module, nn.ReLU):
            assert not module.inplace


@pytest.mark.parametrize("name", model_names())
@pytest.mark.parametrize("size", [32, 64])
def test_model_output_shape(name, size):
    model = build_model(name, num_classes=5, width=8)
    assert model(torch.randn(2, 1, size, size)).shape == (2, 5)


def test_registry_lists_the_three_models():
    assert {"cnn", "resnet9", "resnet18"} <= set(model_names())


def test_unknown_model_names_the_choices():
    with pytest.raises(ModelError, match="choose one of: cnn"):
        build_model("vgg", num_classes=2)


def test_incompatible_layers_are_named():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.Identity()
    )
    problems = " ".join(incompatibilities(model))
    assert "BatchNorm2d" in problems and "Identity" in problems and "in-place" in problems
    with pytest.raises(ModelError):
        check_model(model)


def test_checkpoint_round_trip(tmp_path):
    spec = ModelSpec(architecture="cnn", num_outputs=2, width=4, label_names=("a", "b"))
    model = spec.build()
    save_model(tmp_path / "m.safetensors", model, spec)
    loaded, loaded_spec = load_model(tmp_path / "m.safetensors")
    assert loaded_spec == spec
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_checkpoint_errors(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "none.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 4)
    with pytest.raises(ModelError, match="not a safetensors file"):
        read_spec(tmp_path / "junk.safetensors")


@pytest.mark.parametrize("name", model_names())
def test_a_model_built_with_a_state_holds_those_tensors(name):
    spec = ModelSpec(name, num_outputs=4, image_size=32)
    torch.manual_seed(0)
    source = spec.build().eval()
    state = {key: tensor.clone() for key, tensor in source.state_dict().items()}

    model = spec.build_with(state).eval()

    for key, tensor in model.state_dict().items():
        assert tensor.data_ptr() == state[key].data_ptr(), key  # assigned, not copied
    images = torch.randn(2, 1, 32, 32)
    assert torch.equal(model(images), source(images))


def test_shapes_describe_the_state_without_storage():
    spec = ModelSpec("resnet9", num_outputs=3, image_size=32)
    shapes = spec.shapes()
    real = spec.build().state_dict()
    assert all(tensor.is_meta for tensor in shapes.values())
    assert {k: (t.shape, t.dtype) for k, t in shapes.items()} == {
        k: (t.shape, t.dtype) for k, t in real.items()
    }


def test_weight_standardised_filters_have_mean_zero_and_unit_variance():
    conv = WSConv2d(3, 5, 3, bias=False)
    with torch.no_grad():
        conv.weight.mul_(7.0).add_(2.0)
    folded = standardise(conv.weight)
    mean, var = folded.mean(dim=(1, 2, 3)), folded.var(dim=(1, 2, 3), unbiased=False)
    torch.testing.assert_close(mean, torch.zeros(5), atol=1e-6, rtol=0)
    torch.testing.assert_close(var, torch.ones(5), atol=1e-3, rtol=0)


def test_folded_parameters_make_a_plain_model_compute_the_ws_model():
    """What encrypted inference shares: ŵ in place of w, so plain convolutions agree."""
    torch.manual_seed(0)
    ws = build_model("resnet9", num_classes=2, width=4, ws=True).eval()
    plain = build_model("resnet9", num_classes=2, width=4).eval()
    plain.load_state_dict(export_parameters(ws), strict=False)
    images = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(plain(images), ws(images), rtol=1e-4, atol=1e-5)
        assert not torch.allclose(ws.features[0][0].weight, plain.features[0][0].weight)


def test_ws_on_a_model_without_a_ws_variant_names_the_ones_that_have_it():
    with pytest.raises(ModelError, match=r"'lenet' has no weight-standardised variant.*resnet9"):
        build_model("lenet", num_classes=2, ws=True)
