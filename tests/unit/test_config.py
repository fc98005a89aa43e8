from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from primia.config import from_mapping, load_toml, write_toml
from primia.errors import ConfigError
from primia.federated.data_owner import ComputeSettings
from primia.train import DPConfig, TrainConfig


@dataclass
class Inner:
    rate: float = 0.5
    mode: Literal["a", "b"] = "a"


@dataclass
class Outer:
    name: str
    count: int = 1
    path: Path | None = None
    tags: list[str] | None = None
    inner: Inner = field(default_factory=Inner)


def test_nested_values_and_coercion():
    config = from_mapping(Outer, {"name": "x", "path": "a/b", "inner": {"rate": 1, "mode": "b"}})
    assert config.path == Path("a/b")
    assert config.inner.rate == 1.0 and isinstance(config.inner.rate, float)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"name": "x", "cuont": 2}, "unknown key.*cuont.*valid keys are: count"),
        ({"name": "x", "count": "2"}, "Outer.count: expected an integer"),
        ({"name": "x", "count": True}, "expected an integer"),
        ({"name": "x", "inner": {"mode": "c"}}, "inner.mode: 'c' is not one of"),
        ({"name": "x", "tags": "a"}, "expected a list"),
        ({}, "name"),
    ],
)
def test_errors_name_the_key(values, message):
    with pytest.raises(ConfigError, match=message):
        from_mapping(Outer, values, where="Outer")


def test_train_config_round_trips_through_toml(tmp_path):
    config = TrainConfig(
        data=Path("d"), out=Path("o"), label_columns=["a"], dp=DPConfig(enabled=True, epsilon=2)
    )
    write_toml(config, tmp_path / "c.toml")
    assert load_toml(TrainConfig, tmp_path / "c.toml") == config


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"lr": -1.0}, "lr must be positive"),
        ({"val_fraction": 0.0}, "val_fraction must be above 0"),
        ({"device": "tpu"}, "device must be"),
    ],
)
def test_train_config_ranges(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(data=Path("d"), out=Path("o"), **kwargs)


def test_dp_config_ranges():
    with pytest.raises(ConfigError, match=r"dp\.delta"):
        DPConfig(delta=2.0)


def test_missing_and_invalid_toml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_toml(TrainConfig, tmp_path / "none.toml")
    (tmp_path / "bad.toml").write_text("epochs = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(TrainConfig, tmp_path / "bad.toml")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"device": "gpu"}, "compute.device 'gpu' is not a device"),
        ({"threads": -1}, r"compute.threads must be at least 0 \(0: PyTorch.s default\)"),
        ({"max_physical_batch_size": 0}, "max_physical_batch_size must be at least 1"),
    ],
)
def test_node_compute_settings_are_checked_when_read(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ComputeSettings(**values)
