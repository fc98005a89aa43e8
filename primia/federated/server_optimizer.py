"""Server optimisers: how the coordinator turns a round's mean update into new weights.

The aggregator (plaintext or secure) yields only Σ n_i Δ_i and Σ n_i; their ratio

    Δ_t = Σ n_i Δ_i / Σ n_i,       Δ_i = w_i − w_t,

is a pseudo-gradient (the negative direction of descent) and the server applies an
optimiser to it (Reddi et al., "Adaptive Federated Optimization", ICLR 2021, Algorithm 2;
Hsu et al. 2019 for momentum). Every operation is element-wise, per floating-point tensor,
in float64, with η the server learning rate, β₁ the momentum, β₂ the second-moment decay
and τ the adaptivity (the least denominator):

* ``fedavg``:     w_{t+1} = w_t + η Δ_t  (η = 1: McMahan et al.'s FedAvg);
* ``fedavgm``:    m_t = β₁ m_{t−1} + Δ_t;  w_{t+1} = w_t + η m_t;
* ``fedadagrad``: v_t = v_{t−1} + Δ_t²;
* ``fedadam``:    v_t = β₂ v_{t−1} + (1 − β₂) Δ_t²;
* ``fedyogi``:    v_t = v_{t−1} − (1 − β₂) Δ_t² sign(v_{t−1} − Δ_t²);

and for the three adaptive ones m_t = β₁ m_{t−1} + (1 − β₁) Δ_t and
w_{t+1} = w_t + η m_t / (√v_t + τ), with m_0 = 0 and v_0 = τ² (Reddi et al.'s
v_{−1} ≥ τ²; no bias correction, as in the paper).

Privacy: the optimiser reads only the aggregate, which secure aggregation reveals anyway
and which is DP (each node's update is a DP release); anything computed from it is
post-processing. Secure aggregation is unchanged, and the nodes' ε is unchanged.

Non-floating tensors (counters) take the mean update as FedAvg does. The state (m, v,
the step count) is checkpointed beside each round's weights as safetensors
(:func:`save_state`, written atomically) and resumed with them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_tensors
from torch import nn

from primia.errors import ConfigError
from primia.files import atomic_write_bytes

ServerOptimizerName = Literal["fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad"]
SERVER_OPTIMIZERS: tuple[ServerOptimizerName, ...] = (
    "fedavg",
    "fedavgm",
    "fedadam",
    "fedyogi",
    "fedadagrad",
)
_ADAPTIVE = ("fedadam", "fedyogi", "fedadagrad")


@dataclass(frozen=True)
class ServerOptimizerConfig:
    """The coordinator's ``[server_optimizer]`` table (see the module docstring).

    ``lr`` is η: 1.0 suits ``fedavg`` and ``fedavgm``; the adaptive optimisers take a
    step of about η per coordinate, so η of 1e-2 to 1e-1 (Reddi et al.'s grid) is usual.
    """

    name: ServerOptimizerName = "fedavg"
    lr: float = 1.0
    momentum: float = 0.9
    """β₁: the momentum of ``fedavgm`` and the first moment of the adaptive ones."""
    beta2: float = 0.99
    """β₂: the second moment's decay (``fedadam``, ``fedyogi``)."""
    tau: float = 1e-3
    """τ: the adaptivity; the denominator is never below it."""

    def __post_init__(self) -> None:
        if self.name not in SERVER_OPTIMIZERS:
            raise ConfigError(
                f"server_optimizer.name {self.name!r} is unknown; choose one of "
                f"{', '.join(SERVER_OPTIMIZERS)}"
            )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"server_optimizer.lr must be positive, not {self.lr}")
        for key in ("momentum", "beta2"):
            value = getattr(self, key)
            if not (math.isfinite(value) and 0 <= value < 1):
                raise ConfigError(f"server_optimizer.{key} must be in [0, 1), not {value}")
        if not (math.isfinite(self.tau) and self.tau > 0):
            raise ConfigError(f"server_optimizer.tau must be positive, not {self.tau}")


class ServerOptimizer:
    """Applies mean updates to a model with the configured rule, keeping its state."""

    def __init__(self, config: ServerOptimizerConfig) -> None:
        self.config = config
        self.steps = 0
        self.first: dict[str, torch.Tensor] = {}
        """m per tensor (``fedavgm`` and the adaptive optimisers)."""
        self.second: dict[str, torch.Tensor] = {}
        """v per tensor (the adaptive optimisers)."""

    @property
    def stateful(self) -> bool:
        return self.config.name != "fedavg"

    @torch.no_grad()
    def step(
        self, model: nn.Module, weighted_sum: dict[str, torch.Tensor], total_weight: float
    ) -> None:
        """w ← the rule applied to Δ = ``weighted_sum`` / ``total_weight``, in place.

        With ``fedavg`` at η = 1 this is exactly the former in-place update (float64,
        rounded once, no model-sized temporaries); the others keep their moments in
        float64."""
        if not total_weight > 0:
            raise ValueError(f"the round's total weight must be positive, not {total_weight}")
        config = self.config
        state = model.state_dict()
        self.steps += 1
        for name, total in weighted_sum.items():
            tensor = state[name]
            if not tensor.is_floating_point():
                tensor.copy_(tensor + (total / total_weight).to(tensor.dtype))
                continue
            if config.name == "fedavg":
                tensor.add_(total, alpha=config.lr / total_weight)
                continue
            delta = total.to(torch.float64) / total_weight
            if config.name == "fedavgm":
                first = self._moment(self.first, name, delta, 0.0)
                first.mul_(config.momentum).add_(delta)
                tensor.add_(first, alpha=config.lr)
                continue
            first = self._moment(self.first, name, delta, 0.0)
            first.mul_(config.momentum).add_(delta, alpha=1.0 - config.momentum)
            second = self._moment(self.second, name, delta, config.tau**2)
            squared = delta.square()
            if config.name == "fedadagrad":
                second.add_(squared)
            elif config.name == "fedadam":
                second.mul_(config.beta2).add_(squared, alpha=1.0 - config.beta2)
            else:  # fedyogi
                second.sub_(torch.sign(second - squared).mul_(squared), alpha=1.0 - config.beta2)
            tensor.add_(first / (second.sqrt() + config.tau), alpha=config.lr)

    @staticmethod
    def _moment(
        moments: dict[str, torch.Tensor], name: str, like: torch.Tensor, initial: float
    ) -> torch.Tensor:
        if name not in moments:
            moments[name] = torch.full_like(like, initial, dtype=torch.float64)
        return moments[name]

    def save_state(self, path: Path) -> None:
        """The state as safetensors (``first/NAME``, ``second/NAME``; the configuration and
        step count in the metadata), written atomically."""
        tensors = {f"first/{name}": t.contiguous() for name, t in self.first.items()}
        tensors.update({f"second/{name}": t.contiguous() for name, t in self.second.items()})
        metadata = {"config": json.dumps(asdict(self.config)), "steps": str(self.steps)}
        atomic_write_bytes(path, save_tensors(tensors, metadata=metadata))

    def load_state(self, path: Path, shapes: Mapping[str, torch.Tensor]) -> None:
        """Resume from :meth:`save_state`'s file for a model of ``shapes`` (name → tensor,
        meta tensors will do). Refuses one written with other settings (a changed rule or
        hyperparameter would not continue the same optimisation), and one that does not
        hold what this optimiser writes: float64 moments of the model's floating tensors'
        shapes, finite, v ≥ 0, one per tensor after the first step. A moment missing would
        restart at m = 0, v = τ² (an adaptive step of η/τ per coordinate), a NaN or a
        negative v would make every later global model NaN; so an edited or damaged file
        stops the coordinator at start-up, naming it, rather than the nodes at the next
        round."""
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
            stored = json.loads(metadata.get("config", "{}"))
            steps = int(metadata.get("steps", "0"))
        except (SafetensorError, ValueError, OSError) as error:
            raise ConfigError(
                f"{path} is not a server optimiser state ({error}); restore it from a backup "
                "or choose a new run_dir"
            ) from error
        if stored != asdict(self.config):
            raise ConfigError(
                f"{path} holds the state of server_optimizer {stored}, not the configured "
                f"{asdict(self.config)}; restore the [server_optimizer] settings or choose a "
                "new run_dir"
            )
        first = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("first/")}
        second = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("second/")}
        if problem := _state_problem(self.config.name, steps, tensors, first, second, shapes):
            raise ConfigError(
                f"{path} is not a state this optimiser wrote for this model: {problem}; "
                "restore it from a backup or choose a new run_dir"
            )
        self.steps, self.first, self.second = steps, first, second


def _state_problem(
    name: ServerOptimizerName,
    steps: int,
    tensors: Mapping[str, torch.Tensor],
    first: Mapping[str, torch.Tensor],
    second: Mapping[str, torch.Tensor],
    shapes: Mapping[str, torch.Tensor],
) -> str | None:
    """What is wrong with a loaded state (None: nothing)."""
    if steps < 0:
        return f"a step count of {steps}"
    if unknown := sorted(
        set(tensors) - {f"first/{k}" for k in first} - {f"second/{k}" for k in second}
    ):
        return f"tensors {unknown[:3]} are not moments"
    floating = {k for k, t in shapes.items() if t.is_floating_point()}
    expected_first = floating if steps and name != "fedavg" else set()
    expected_second = floating if steps and name in _ADAPTIVE else set()
    for label, moments, expected in (("m", first, expected_first), ("v", second, expected_second)):
        if set(moments) != expected:
            differ = sorted(set(moments) ^ expected)
            return f"{label} is kept for other tensors than the model's ({differ[:3]} differ)"
        for key, moment in moments.items():
            if moment.dtype != torch.float64 or moment.shape != shapes[key].shape:
                return (
                    f"{label} of {key} is {moment.dtype} {tuple(moment.shape)}, not float64 "
                    f"{tuple(shapes[key].shape)}"
                )
            if not torch.isfinite(moment).all():
                return f"{label} of {key} holds values that are not finite"
            if label == "v" and (moment < 0).any():
                return f"v of {key} holds negative values (a second moment is never below 0)"
    return None
