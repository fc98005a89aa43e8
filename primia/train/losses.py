"""Loss functions that can also report one loss per sample.

Opacus' ghost clipping computes per-sample gradient norms from a per-sample loss of shape
``[B]``; multi-label BCE naturally gives ``[B, L]``, so it is averaged over labels first.
``reduction="mean"`` is then the mean of the per-sample losses, identical to PyTorch's.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from primia.data.dataset import Task


class PerSampleBCEWithLogits(nn.Module):
    """BCE with logits, averaged over labels per sample; ``reduction`` as in PyTorch."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        per_element = functional.binary_cross_entropy_with_logits(
            logits, targets.reshape(logits.shape), reduction="none"
        )
        per_sample = per_element.flatten(1).mean(dim=1)
        if self.reduction == "none":
            return per_sample
        if self.reduction == "sum":
            return per_sample.sum()
        return per_sample.mean()


def criterion_for(task: Task, reduction: str = "mean") -> nn.Module:
    """The training loss of a task: cross-entropy for multiclass, BCE otherwise.

    ``reduction="none"`` gives one loss per sample, shape ``[B]``.
    """
    if task is Task.MULTICLASS:
        return nn.CrossEntropyLoss(reduction=reduction)
    return PerSampleBCEWithLogits(reduction=reduction)
