"""An exponential moving average (EMA) of a model's weights along its training iterates.

After every optimizer step t = 0, 1, …, with iterate θ_t::

    d_t = min(decay, (1 + t) / (10 + t))
    θ̄ ← d_t · θ̄ + (1 − d_t) · θ_t

θ̄ starts at the initial weights; the warm-up ``(1 + t)/(10 + t)`` keeps the first, random
iterates from dominating short runs (TensorFlow's ``ExponentialMovingAverage`` with
``num_updates``). Buffers that are not floating point are copied from the iterate.

Privacy: θ̄ is a function of the iterates θ_1 … θ_T alone, which DP-SGD already releases
(the accountant charges every step as if its iterate were published). By post-processing,
releasing θ̄ instead of θ_T costs no more ε: the privacy ledger is charged exactly as
without EMA (De et al. 2022 evaluate DP models this way).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class WeightEMA:
    """The running average :attr:`average` (a copy of the model) of ``model``'s iterates.

    Create it before any DP wrapper hooks the model, then call :meth:`update` after every
    optimizer step (:meth:`attach` registers that on an optimizer).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"the EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.model = model
        self.average = copy.deepcopy(model)
        self.average.requires_grad_(False)
        self.updates = 0

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        decay = self.current_decay()
        averaged = self.average.state_dict()
        for name, value in self.model.state_dict().items():
            target = averaged[name]
            if target.is_floating_point():
                target.lerp_(value, 1.0 - decay)
            else:
                target.copy_(value)
        self.updates += 1

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Update after each of ``optimizer``'s steps (a DP optimizer steps the plain one
        it wraps once per logical batch, so the average sees each released iterate)."""

        def hook(_: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            self.update()

        optimizer.register_step_post_hook(hook)
