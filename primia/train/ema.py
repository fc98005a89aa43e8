"""An exponential moving average (EMA) of the weights: the model that is evaluated and kept.

After every optimiser step t (from 0) the average moves toward the weights w_t::

    w̄ ← d_t · w̄ + (1 − d_t) · w_t,    d_t = min(decay, (1 + t) / (10 + t))

(the warm-up keeps the first, random weights from dominating). Averaging the private
iterates of DP-SGD smooths their noise (De et al., 2022) and costs no privacy: w̄ is a
function of the released iterates only, so it is post-processing, and the ledger charges
exactly what the run without averaging is charged.
"""

from __future__ import annotations

import torch
from torch import nn


class WeightAverage:
    """The running average of ``model``'s floating-point parameters and buffers."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"the EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self._average = {
            name: value.detach().clone()
            for name, value in model.state_dict().items()
            if value.is_floating_point()
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step of the average toward ``model``'s current weights."""
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        state = model.state_dict()
        for name, average in self._average.items():
            average.mul_(decay).add_(state[name].detach(), alpha=1 - decay)
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Put the average into ``model`` (its other entries are left as they are)."""
        model.load_state_dict(self._average, strict=False)

    def state(self) -> dict[str, torch.Tensor]:
        """The averaged weights, by state-dict name."""
        return {name: value.clone() for name, value in self._average.items()}
