"""Whether a model — a built-in one or a consortium's plug-in — can be trained with DP-SGD
(Opacus), with the fast DP path, and run under encrypted inference, and why not.

Run it before any round (``primia check-model`` is not a command; call it from Python or a
test): a plug-in that fails here would fail at every node, after the round's ε was
reserved.

* **DP-SGD (Opacus)**: Opacus' validator (no BatchNorm: it mixes the samples of a batch,
  so per-sample gradients do not exist; GroupNorm instead), and no in-place ReLU (it
  overwrites the activations Opacus' hooks keep).
* **fast DP path** (:class:`~primia.train.fast_dp.FastDPSGD`): trainable layers only
  ``Conv2d`` (numeric zero padding), ``Linear`` and ``GroupNorm``, each called once per
  forward pass — checked by one clipped step on a tiny batch.
* **encrypted inference**: :func:`primia.models.compat.encrypted_problems` (an
  ``nn.Sequential`` of primia's layers; no ``nn.Identity``, no in-place ReLU).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from opacus.validators import ModuleValidator
from torch import nn

from primia.models.compat import encrypted_problems
from primia.train.fast_dp import FastDPSGD


@dataclass(frozen=True)
class ModelCheck:
    """Each target's problems; a target with none can run the model."""

    dp_sgd: tuple[str, ...]
    fast_dp: tuple[str, ...]
    encrypted: tuple[str, ...]

    @property
    def valid(self) -> bool:
        return not (self.dp_sgd or self.fast_dp or self.encrypted)

    def summary(self) -> str:
        """One line per target: ``valid`` or the reasons."""
        lines = []
        for label, problems in (
            ("DP-SGD (Opacus)", self.dp_sgd),
            ("fast DP path", self.fast_dp),
            ("encrypted inference", self.encrypted),
        ):
            lines.append(f"{label}: " + ("valid" if not problems else "; ".join(problems)))
        return "\n".join(lines)


def check_model_targets(model: nn.Module, *, image_size: int = 32) -> ModelCheck:
    """``model``'s fitness for each target (see the module docstring); ``model`` is not
    changed (the fast path is tried on a copy, on two random one-channel images of
    ``image_size`` pixels)."""
    dp_sgd = [str(error) for error in ModuleValidator.validate(model, strict=False)]
    dp_sgd += [
        f"{name}: in-place ReLU overwrites what Opacus' hooks keep; use nn.ReLU()"
        for name, module in model.named_modules()
        if isinstance(module, nn.ReLU) and module.inplace
    ]
    return ModelCheck(
        dp_sgd=tuple(dp_sgd),
        fast_dp=tuple(_fast_dp_problems(model, image_size)),
        encrypted=tuple(encrypted_problems(model)),
    )


def _fast_dp_problems(model: nn.Module, image_size: int) -> list[str]:
    trial = copy.deepcopy(model).train()
    try:
        dp = FastDPSGD(
            trial,
            torch.optim.SGD(trial.parameters(), lr=0.0),
            noise_multiplier=0.0,
            max_grad_norm=1.0,
            expected_batch_size=2,
        )
    except ValueError as error:
        return [str(error)]
    try:
        dp.zero_grad()
        outputs = trial(torch.rand(2, 1, image_size, image_size))
        dp.backward(outputs.reshape(2, -1).sum(dim=1))
        dp.step()
    except (ValueError, RuntimeError) as error:
        return [f"a clipped step on 2 images of {image_size} px failed: {error}"]
    finally:
        dp.remove()
    return []
