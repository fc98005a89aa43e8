"""FedProx's proximal term (Li et al., "Federated Optimization in Heterogeneous Networks",
MLSys 2020), inside DP-SGD.

A node minimises its loss plus μ/2 ‖w − w_g‖², with w_g the global weights it started the
round from, so that local training on skewed data drifts less from the federation's model.
The term's gradient is μ (w − w_g); it is added to each parameter's gradient just before
the optimiser's step (a step pre-hook on the torch optimiser), that is:

* with DP (the fast path's :class:`~primia.train.fast_dp.FastDPSGD` and Opacus'
  ``DPOptimizer``) **after** per-sample clipping, summing, noising and scaling: the
  optimiser steps on ĝ + μ (w − w_g), with ĝ the privatised gradient. Opacus'
  ``DPOptimizer.step`` runs its ``pre_step`` (clip, noise, scale, accountant hook) and
  then the wrapped optimiser's ``step``, whose pre-hooks run here; ``FastDPSGD.step``
  likewise noises, then calls the optimiser's ``step``. When Opacus skips a step (virtual
  steps of a large logical batch), the wrapped step is not called and nor is the hook.
* The term is not per-sample and not computed from the data: w is the result of the
  earlier (already released, DP) steps and w_g is public. Adding it is post-processing,
  so the mechanism each step runs — the Gaussian mechanism on clipped per-sample
  gradients at rate q — and hence the accountant's (σ, q) and ε are unchanged. Had the
  term been added to the loss instead, it would enter every per-sample gradient and be
  clipped with it, spending clipping norm on a data-independent quantity.
* Without DP it is the same proximal gradient in plain training.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


def add_proximal_term(
    optimizer: torch.optim.Optimizer, model: nn.Module, mu: float
) -> RemovableHandle:
    """Make every ``optimizer.step()`` descend on loss + μ/2 ‖w − w₀‖², with w₀ the
    model's parameters now; return the hook's handle (``remove()`` ends it)."""
    if not mu >= 0:
        raise ValueError(f"the proximal μ must be 0 or more, not {mu}")
    anchors = {id(p): p.detach().clone() for p in model.parameters() if p.requires_grad}

    @torch.no_grad()
    def proximal(optimizer: torch.optim.Optimizer, *_: object) -> None:
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                anchor = anchors.get(id(parameter))
                if anchor is None or parameter.grad is None:
                    continue
                parameter.grad.add_(parameter.detach() - anchor, alpha=mu)

    return optimizer.register_step_pre_hook(proximal)
