"""Server optimisers: each against an independent NumPy reference, step for step, on a
quadratic with a known optimum; their state survives a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save as save_tensors

from primia.errors import ConfigError
from primia.federated.server_optimizer import (
    SERVER_OPTIMIZERS,
    ServerOptimizer,
    ServerOptimizerConfig,
)

OPTIMUM = np.array([1.5, -2.0, 0.25, 3.0])
CURVATURE = np.array([1.0, 0.5, 2.0, 0.2])
SERVER_LR = {"fedavg": 1.0, "fedavgm": 0.5, "fedadam": 0.1, "fedyogi": 0.1, "fedadagrad": 0.3}


class Point(torch.nn.Module):
    def __init__(self, start: np.ndarray) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))


def pseudo_gradient(w: np.ndarray) -> np.ndarray:
    """Two clients' mean update after one local gradient step (lr 0.5) on
    f(w) = ½ Σ a (w − w*)², the two clients' optima straddling w*."""
    updates = [-0.5 * CURVATURE * (w - (OPTIMUM + shift)) for shift in (0.3, -0.3)]
    return np.mean(updates, axis=0)


def reference_step(name: str, config: ServerOptimizerConfig, w, delta, m, v):
    """Reddi et al. 2021, Algorithm 2 (and FedAvgM), written out in NumPy."""
    lr, b1, b2, tau = config.lr, config.momentum, config.beta2, config.tau
    if name == "fedavg":
        return w + lr * delta, m, v
    if name == "fedavgm":
        m = b1 * m + delta
        return w + lr * m, m, v
    m = b1 * m + (1 - b1) * delta
    if name == "fedadagrad":
        v = v + delta**2
    elif name == "fedadam":
        v = b2 * v + (1 - b2) * delta**2
    else:
        v = v - (1 - b2) * delta**2 * np.sign(v - delta**2)
    return w + lr * m / (np.sqrt(v) + tau), m, v


@pytest.mark.parametrize("name", SERVER_OPTIMIZERS)
def test_each_optimizer_matches_the_reference_and_converges(name):
    config = ServerOptimizerConfig(name=name, lr=SERVER_LR[name])
    optimizer = ServerOptimizer(config)
    start = np.zeros(4)
    model = Point(start)
    w, m, v = start.copy(), np.zeros(4), np.full(4, config.tau**2)
    for _ in range(300):
        delta = pseudo_gradient(w)
        weights = (2.0, 6.0)  # n_i: Σ n_i Δ_i / Σ n_i = Δ whatever the split
        total = sum(n * delta for n in weights)
        optimizer.step(model, {"w": torch.tensor(total)}, sum(weights))
        w, m, v = reference_step(name, config, w, delta, m, v)
        assert np.allclose(model.w.detach().numpy(), w, rtol=1e-10, atol=1e-12)
    assert np.abs(w - OPTIMUM).max() < 0.05, (name, w)
    assert optimizer.steps == 300


def test_fedavg_at_unit_rate_is_the_mean_update_in_place_and_counters_follow():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    model.register_buffer("seen", torch.tensor([4]))
    before = {name: t.clone() for name, t in model.state_dict().items()}
    sums = {
        "0.weight": torch.full((2, 3), 6.0, dtype=torch.float64),
        "0.bias": torch.tensor([3.0, -3.0], dtype=torch.float64),
        "seen": torch.tensor([6.0], dtype=torch.float64),
    }
    weight = model[0].weight
    ServerOptimizer(ServerOptimizerConfig()).step(model, sums, 3.0)
    assert model[0].weight is weight  # in place: the model's own tensors
    for name, tensor in model.state_dict().items():
        assert tensor.dtype == before[name].dtype
        expected = before[name] + (sums[name] / 3.0).to(tensor.dtype)
        assert torch.allclose(tensor, expected, rtol=0, atol=1e-6), name
    assert model.seen.item() == 6


@pytest.mark.parametrize("name", ["fedavgm", "fedadam", "fedyogi", "fedadagrad"])
def test_state_survives_a_checkpoint(tmp_path, name):
    config = ServerOptimizerConfig(name=name, lr=0.1)
    steady, restarted = Point(np.zeros(4)), Point(np.zeros(4))
    first = ServerOptimizer(config)
    for _ in range(3):
        delta = torch.tensor(pseudo_gradient(steady.w.detach().numpy()))
        first.step(steady, {"w": delta}, 1.0)
        restarted.load_state_dict(steady.state_dict())
    first.save_state(tmp_path / "optimizer.safetensors")
    resumed = ServerOptimizer(config)
    resumed.load_state(tmp_path / "optimizer.safetensors", steady.state_dict())
    assert resumed.steps == 3
    for _ in range(3):
        for optimizer, model in ((first, steady), (resumed, restarted)):
            delta = torch.tensor(pseudo_gradient(model.w.detach().numpy()))
            optimizer.step(model, {"w": delta}, 1.0)
    assert torch.equal(steady.w, restarted.w)


def test_state_of_other_settings_is_refused(tmp_path):
    ServerOptimizer(ServerOptimizerConfig(name="fedadam", lr=0.1)).save_state(tmp_path / "s")
    with pytest.raises(ConfigError, match="restore the \\[server_optimizer\\] settings"):
        ServerOptimizer(ServerOptimizerConfig(name="fedyogi", lr=0.1)).load_state(
            tmp_path / "s", Point(np.zeros(4)).state_dict()
        )


def _tamper(tensors: dict[str, torch.Tensor], metadata: dict[str, str], how: str) -> None:
    """Edit a saved state as an operator (or a disk) might have."""
    if how == "nan in m":
        tensors["first/w"][1] = float("nan")
    elif how == "negative v":
        tensors["second/w"][0] = -1.0
    elif how == "v missing":
        del tensors["second/w"]
    elif how == "other shape":
        tensors["first/w"] = torch.zeros(2, 4, dtype=torch.float64)
    elif how == "float32":
        tensors["first/w"] = tensors["first/w"].float()
    elif how == "unknown tensor":
        tensors["first/x"] = torch.zeros(4, dtype=torch.float64)
    elif how == "steps":
        metadata["steps"] = "many"


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("nan in m", "m of w holds values that are not finite"),
        ("negative v", "v of w holds negative values"),
        ("v missing", "v is kept for other tensors"),
        ("other shape", r"m of w is torch.float64 \(2, 4\), not float64 \(4,\)"),
        ("float32", "m of w is torch.float32"),
        ("unknown tensor", "m is kept for other tensors"),
        ("steps", "is not a server optimiser state"),
        ("junk", "is not a server optimiser state"),
    ],
)
def test_a_tampered_state_is_refused_naming_the_problem(tmp_path, how, message):
    """Before, each of these loaded: a NaN or a negative v made every later global model
    NaN (the nodes then refused every round), a missing v restarted at τ² (a step of η/τ),
    an other shape broadcast or failed mid-round."""
    config = ServerOptimizerConfig(name="fedadam", lr=0.1)
    model, optimizer = Point(np.zeros(4)), ServerOptimizer(config)
    optimizer.step(model, {"w": torch.ones(4, dtype=torch.float64)}, 1.0)
    path = tmp_path / "optimizer.safetensors"
    optimizer.save_state(path)
    if how == "junk":
        path.write_bytes(b"\x08" + path.read_bytes()[1:])
    else:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata()
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        _tamper(tensors, metadata, how)
        path.write_bytes(save_tensors(tensors, metadata=metadata))
    resumed = ServerOptimizer(config)
    with pytest.raises(ConfigError, match=message) as refused:
        resumed.load_state(path, model.state_dict())
    assert str(path) in str(refused.value) and "choose a new run_dir" in str(refused.value)
    assert resumed.steps == 0 and not resumed.first  # nothing of it was taken


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"name": "sgd"}, "is unknown"),
        ({"lr": 0.0}, "lr must be positive"),
        ({"momentum": 1.0}, "momentum must be in"),
        ({"beta2": -0.1}, "beta2 must be in"),
        ({"tau": 0.0}, "tau must be positive"),
    ],
)
def test_bad_settings_are_refused_with_the_setting_named(settings, message):
    with pytest.raises(ConfigError, match=message):
        ServerOptimizerConfig(**settings)
