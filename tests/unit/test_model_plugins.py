"""Model plug-ins: loaded by name, checked for every target, refused by default policy, on
the nodes and on the inference parties."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from primia import pki
from primia.errors import ConfigError, ModelError
from primia.federated.coordinator_config import CoordinatorConfig, ModelConfig
from primia.federated.data_owner import DataSettings
from primia.federated.policy import AcceptedModel, NodePolicy, accepted_models, model_problems
from primia.inference.party_config import DataOwnerConfig, ModelOwnerConfig
from primia.inference.sessions import load_served_model
from primia.models import BUILT_IN_MODELS, build_model, model_names, registry
from primia.models.checkpoint import ModelSpec, save_model
from primia.models.plugins import load_plugin
from primia.rpc.node_config import NodeConfig
from primia.train.model_check import check_model_targets

TLS = pki.TLSFiles(Path("ca.pem"), Path("c.pem"), Path("c.key"))


@pytest.fixture(autouse=True)
def registry_of_this_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's plug-ins leave the registry with it (other tests list the models)."""
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))


def test_a_plugin_is_loaded_by_module_path_and_built_by_name():
    assert load_plugin("tinynet=plugin_models:tiny") == "tinynet"
    assert load_plugin("tinynet=plugin_models:tiny") == "tinynet"  # again: nothing new
    assert "tinynet" in model_names() and "tinynet" not in BUILT_IN_MODELS
    model = build_model("tinynet", num_classes=3)
    assert check_model_targets(model).valid


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("resnet9=plugin_models:tiny", "'resnet9' is already a model"),
        ("x=plugin_models", "write NAME=package.module:factory"),
        ("x=no_such_module_here:f", "cannot import 'no_such_module_here'"),
        ("x=plugin_models:missing", "has no callable 'missing'"),
        ("not a name=plugin_models:tiny", "must be an identifier"),
        ("nowhere", "no installed package declares the entry point 'nowhere'"),
    ],
)
def test_bad_references_are_refused_with_the_fix(reference, message):
    with pytest.raises(ConfigError, match=message):
        load_plugin(reference)


def test_each_target_says_why_not():
    check = check_model_targets(build_model_from(load_plugin("bn=plugin_models:batchnorm")))
    assert any("BatchNorm" in problem for problem in check.dp_sgd)
    assert check.fast_dp == ("FastDPSGD cannot train this model: 1: BatchNorm2d is not supported",)
    assert check.encrypted == ("1: BatchNorm2d cannot run encrypted",)
    assert not check.valid

    class Custom(nn.Module):
        """A layer called twice, and a forward of its own."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)
            self.flatten = nn.Flatten()

        def forward(self, x):
            return self.flatten(self.conv(self.conv(x)))

    custom = check_model_targets(Custom(), image_size=8)
    assert custom.dp_sgd == ()
    assert "a layer ran twice" in custom.fast_dp[0]
    assert "give the model as an nn.Sequential" in custom.encrypted[0]


def build_model_from(name: str) -> nn.Module:
    return build_model(name, num_classes=2)


def test_an_invalid_plugin_is_refused_by_the_coordinator_before_any_round(tmp_path):
    model = ModelConfig(
        architecture="bnnet", image_size=32, plugins=["bnnet=plugin_models:batchnorm"]
    )
    with pytest.raises(ConfigError, match="'bnnet' cannot be trained with DP-SGD:\nDP-SGD"):
        CoordinatorConfig(tls=TLS, roster=["a", "b"], model=model, run_dir=tmp_path)
    valid = ModelConfig(architecture="tiny2", image_size=32, plugins=["tiny2=plugin_models:tiny"])
    config = CoordinatorConfig(tls=TLS, roster=["a", "b"], model=valid, run_dir=tmp_path)
    assert config.model.spec().architecture == "tiny2"


def test_a_node_refuses_plugins_unless_its_policy_allows_them(tmp_path):
    settings = {
        "tls": TLS,
        "data": DataSettings(path=tmp_path),
        "plugins": ["t3=plugin_models:tiny"],
    }
    with pytest.raises(ConfigError, match=r"policy\.allow_plugins is false"):
        NodeConfig(**settings)
    assert "t3" not in model_names()
    NodeConfig(**settings, policy=NodePolicy(allow_plugins=True))
    assert "t3" in model_names()


def test_policy_models_names_a_plugin_only_when_plugins_are_allowed(tmp_path):
    with pytest.raises(
        ConfigError, match=r"unknown architecture 'p4'.*policy\.allow_plugins = true"
    ):
        NodePolicy(models=(AcceptedModel("p4"),))
    settings = {"tls": TLS, "data": DataSettings(path=tmp_path)}
    allowed = NodePolicy(allow_plugins=True, models=(AcceptedModel("p4"),))
    with pytest.raises(ConfigError, match=r"unknown architecture 'p4'.*add its plug-in"):
        NodeConfig(**settings, policy=allowed)  # listed and allowed, but not loaded
    NodeConfig(**settings, policy=allowed, plugins=["p4=plugin_models:tiny"])


def test_a_node_refuses_a_plugin_task_with_the_reason():
    load_plugin("p5=plugin_models:tiny")
    spec = ModelSpec("p5", num_outputs=2, image_size=32)
    # plug-ins not allowed: refused even though this process has the plug-in loaded
    closed = model_problems(NodePolicy(), spec, parameters=10, accepted=())
    assert len(closed) == 1 and closed[0].startswith("policy.allow_plugins=false")
    # allowed, but not listed in policy.models
    policy = NodePolicy(allow_plugins=True, models=(AcceptedModel("cnn"),))
    unlisted = model_problems(policy, spec, parameters=10, accepted=accepted_models(policy, None))
    assert len(unlisted) == 1 and "policy.models=['cnn (width 16)']" in unlisted[0]
    assert "asks for p5" in unlisted[0]
    listed = NodePolicy(allow_plugins=True, models=(AcceptedModel("p5"),))
    assert model_problems(listed, spec, parameters=10, accepted=accepted_models(listed, None)) == []


@pytest.mark.parametrize("config", [ModelOwnerConfig, DataOwnerConfig])
def test_inference_parties_load_plugins_only_when_allowed(config):
    with pytest.raises(ConfigError, match=r"allow_plugins is false.*set allow_plugins = true"):
        config(tls=TLS, plugins=("p6=plugin_models:tiny",))
    assert "p6" not in model_names()
    config(tls=TLS, plugins=("p6=plugin_models:tiny",), allow_plugins=True)
    assert "p6" in model_names()


def test_the_model_owner_refuses_a_model_it_cannot_run_encrypted_naming_the_layers(tmp_path):
    path = tmp_path / "model.safetensors"
    name = load_plugin("p7=plugin_models:identity")
    spec = ModelSpec(name, num_outputs=2, image_size=32)
    save_model(path, spec.build(), spec)
    with pytest.raises(
        ModelError, match="cannot run encrypted: 1: Identity cannot run encrypted; 2: in-place ReLU"
    ):
        load_served_model(path)
    registry._FACTORIES.pop(name)  # a model owner without the plug-in
    with pytest.raises(ModelError, match=r"'p7' is not a built-in model.*set allow_plugins = true"):
        load_served_model(path)
