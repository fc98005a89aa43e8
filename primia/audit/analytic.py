"""Analytic recovery of features and labels from the last Linear layer's update.

For a head z_i = W h_i + b over features h_i (the input of the model's last ``nn.Linear``)
and a batch of B, the update of the head is, with e_ij = ∂ℓ_i/∂z_ij (for BCE averaged over
L labels e_ij = (σ(z_ij) − y_ij)/L, for cross-entropy e_ij = softmax(z_i)_j − y_ij):

    ∂L/∂W_j = (1/B) Σ_i e_ij h_i,        ∂L/∂b_j = (1/B) Σ_i e_ij.

* **Batch of one** (Phong et al. 2017; Geiping et al. 2020): the rows of ∂L/∂W are
  multiples of h, so h = (∂L/∂W_j) / (∂L/∂b_j) for any j with ∂L/∂b_j ≠ 0, exactly (the
  row of the largest |∂L/∂b_j| is used, for precision). The labels follow from the signs
  of ∂L/∂b: label j is present exactly when ∂L/∂b_j < 0 (BCE); the class is the j with
  the negative entry (cross-entropy). Nothing about the rest of the model is assumed.
* **Larger batches**: a row mixes every image, but a label j carried by a single image
  i* *isolates* it: when the other images' e_ij are negligible (a head whose outputs are
  ≈ 0 for every image — the trap head of :mod:`primia.audit.threats` makes them exactly
  σ(−β)), h_i* = (∂L/∂W_j) / (∂L/∂b_j). The count of images carrying label j is
  n_j = B·L·(p_j − ∂L/∂b_j) where p_j is the head's output when it is the same for every
  image (trap head) or its mean output on the attacker's prior image otherwise (then an
  estimate: Wainakh et al.'s LLG counting).

A weight delta θ₀ − θ_K of K steps at rate η is ≈ ηK times a gradient (exactly, for the
head, when the model before it does not move: the trap head's zero weights stop every
gradient below it); the ratios above do not depend on that scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from primia.audit.labels import last_linear
from primia.data.dataset import Task
from primia.errors import ModelError


@dataclass(frozen=True)
class HeadRecovery:
    """What the head's update gives away. ``features[j]`` is the feature vector of the
    image isolated by label j (at batch 1, key −1 holds the single image's features);
    ``counts[j]`` the number of images carrying label j; ``labels`` the batch-1 labels
    (None for larger batches, where only the counts are known)."""

    features: dict[int, Tensor]
    counts: Tensor
    labels: Tensor | None

    @property
    def isolated(self) -> int:
        return len(self.features)


def head_parameters(model: nn.Module) -> tuple[int, int, nn.Linear]:
    """Indices of the last Linear layer's weight and bias among the trainable parameters
    (the order of an update), and the layer."""
    index, head = last_linear(model)
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    weight_name = names[index]
    bias_name = weight_name.removesuffix("weight") + "bias"
    if head.bias is None or bias_name not in names:
        raise ModelError(
            "analytic recovery needs the last Linear layer's trainable bias; this model's "
            "head has none"
        )
    return index, names.index(bias_name), head


def features_of(model: nn.Module, images: Tensor) -> Tensor:
    """The input of the model's last Linear layer for ``images``: ``[n, F]``."""
    _, head = last_linear(model)
    captured: list[Tensor] = []
    handle = head.register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0]))
    try:
        model(images)
    finally:
        handle.remove()
    return captured[0]


def recover_from_head(
    model: nn.Module,
    update: list[Tensor],
    *,
    task: Task,
    batch_size: int,
    prior: Tensor,
    counting: int | None = None,
    scale: float = 1.0,
) -> HeadRecovery:
    """Features and labels from ``update``; see the module docstring.

    ``prior``: ``[1, C, S, S]``, the image the attacker uses for p_j when the head's outputs
    depend on the image. ``counting``: the index of a feature that is 1 for every image
    (a trap the coordinator set, :mod:`primia.audit.threats`); then row j counts its images
    itself, n_j = −(∂L/∂W_j)[k]·B·L/scale, and h = (∂L/∂W_j)/(∂L/∂W_j)[k] needs no bias:
    the way through a secure sum whose bias entries other nodes fill. ``scale``: what the
    update is the mean gradient times (ηK for a weight delta, 1/n for a mean of n nodes
    of which one fills the head's rows).
    """
    weight_index, bias_index, head = head_parameters(model)
    weight = update[weight_index].detach().double()
    bias = update[bias_index].detach().double()
    label_norm = 1.0 if task is Task.MULTICLASS else float(head.out_features)
    if counting is not None:
        column = weight[:, counting]
        counts = (-column * batch_size * label_norm / scale).round().clamp(0, batch_size)
        isolated = _distinct(
            {
                j: (weight[j] / column[j]).float()
                for j in range(head.out_features)
                if counts[j] == 1 and column[j] < 0
            }
        )
        if isolated or batch_size > 1:
            labels = None
            if batch_size == 1:
                labels = (
                    counts.argmax().reshape(1)
                    if task is Task.MULTICLASS
                    else counts.to(torch.float32).reshape(1, -1)
                )
            return HeadRecovery(isolated, counts.to(torch.int64).cpu(), labels)
        # An image with no label at all fills no row: its features are in the bias's ratio.
    if batch_size == 1:
        j = int(bias.abs().argmax())
        features = {-1: (weight[j] / bias[j]).float()} if bias[j] != 0 else {}
        if task is Task.MULTICLASS:
            labels = bias.argmin().reshape(1)
        else:
            labels = (bias < 0).to(torch.float32).reshape(1, -1)
        counts = (
            torch.nn.functional.one_hot(labels, head.out_features)[0]
            if task is Task.MULTICLASS
            else labels[0].to(torch.int64)
        )
        return HeadRecovery(features, counts.cpu(), labels.cpu())
    with torch.no_grad():
        outputs = model(prior)
    probabilities = (
        outputs.softmax(dim=1) if task is Task.MULTICLASS else outputs.sigmoid()
    ).double()[0]
    counts = (batch_size * (probabilities - bias * label_norm / scale)).round()
    counts = counts.clamp(0, batch_size)
    isolated = _distinct(
        {
            j: (weight[j] / bias[j]).float()
            for j in range(head.out_features)
            if counts[j] == 1 and bias[j] < 0 and probabilities[j] < 0.5 / batch_size
        }
    )
    return HeadRecovery(isolated, counts.to(torch.int64).cpu(), None)


def _distinct(isolated: dict[int, Tensor]) -> dict[int, Tensor]:
    """One entry per image: an image alone with two labels is isolated by both rows, which
    then hold the same features (to float precision); the first label keeps it."""
    kept: dict[int, Tensor] = {}
    for j, features in isolated.items():
        scale = features.norm().clamp_min(1e-12)
        if all((features - other).norm() > 1e-3 * scale for other in kept.values()):
            kept[j] = features
    return kept
