"""Label recovery from an observed update (iDLG and its batch extension).

Only the last linear layer is used. With features h_i ≥ 0 entering it (after ReLU,
sigmoid or pooling of non-negative maps) and logits z_i = W h_i + b, its weight gradient
for a batch of B has rows

    ∂L/∂W_j = (1/B) Σ_i (p_ij − y_ij) h_i / L_norm,

where p_ij = σ(z_ij) and L_norm = the number of labels for (multi-label) BCE averaged over
labels, p_ij = softmax(z_i)_j and L_norm = 1 for cross-entropy. Let s_j be the sum of row
j.

* Batch of one (iDLG, Zhao et al. 2020): p − y has the sign of s_j, so label j is
  present exactly when s_j < 0 (BCE); the class is the row with the negative sum (CE).
* Larger batches: with ‖h_i‖₁ ≈ m̄ and p_ij ≈ p̄_j (the model's mean output and feature
  size on the prior, which the attacker knows), s_j ≈ m̄ (B p̄_j − n_j) / (B L_norm), so
  the number of images with label j is n_j ≈ B p̄_j − s_j B L_norm / m̄, rounded into
  [0, B] (the counting strategy of Wainakh et al.'s LLG). The attacker does not learn which
  image carries which label: dummy image i gets label j for i < n_j, and the attack
  places the images to match.

A weight delta θ_0 − θ_K from K local steps at rate η is ≈ ηK times a gradient: its rows
have the same signs, and the counting divides by ηK.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from primia.data.dataset import Task
from primia.errors import ModelError


def last_linear(model: nn.Module) -> tuple[int, nn.Linear]:
    """The last ``nn.Linear`` of the model and the index of its weight among the trainable
    parameters (the order of an update)."""
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    found: tuple[int, nn.Linear] | None = None
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            weight = f"{module_name}.weight" if module_name else "weight"
            if weight in names:
                found = (names.index(weight), module)
    if found is None:
        raise ModelError("label recovery needs a trainable nn.Linear output layer; none found")
    return found


def recover_labels(
    model: nn.Module,
    update: list[Tensor],
    *,
    task: Task,
    count: int,
    prior: Tensor,
    update_scale: float = 1.0,
) -> Tensor:
    """Labels for ``count`` dummy images from the observed ``update`` (see the module
    docstring): ``float32[count, L]`` of 0/1 for BCE tasks, ``int64[count]`` for multiclass.

    ``prior``: ``[1, C, S, S]``, the image the attacker uses to estimate p̄ and m̄;
    ``update_scale``: ηK for a weight delta, 1 for a gradient.
    """
    index, head = last_linear(model)
    row_sums = update[index].sum(dim=1) / update_scale
    outputs = head.out_features
    if count == 1:
        if task is Task.MULTICLASS:
            return row_sums.argmin().reshape(1).cpu()
        return (row_sums < 0).to(torch.float32).reshape(1, outputs).cpu()
    features: list[Tensor] = []
    handle = head.register_forward_hook(lambda _m, inputs, _o: features.append(inputs[0]))
    try:
        with torch.no_grad():
            logits = model(prior)
    finally:
        handle.remove()
    mean_feature_size = features[0].abs().sum(dim=1).mean().clamp_min(1e-12)
    if task is Task.MULTICLASS:
        mean_output = logits.softmax(dim=1).mean(dim=0)
        label_norm = 1.0
    else:
        mean_output = logits.sigmoid().mean(dim=0)
        label_norm = float(outputs)
    counts = count * mean_output - row_sums * count * label_norm / mean_feature_size
    counts = counts.round().clamp(0, count).to(torch.int64).cpu()
    if task is Task.MULTICLASS:
        return _assign_classes(counts, count)
    slots = torch.arange(count).unsqueeze(1)
    return (slots < counts.unsqueeze(0)).to(torch.float32)


def _assign_classes(counts: Tensor, count: int) -> Tensor:
    """One class per dummy image, the largest counts first; counts that do not add up to
    ``count`` are trimmed or filled with the most frequent class."""
    labels: list[int] = []
    for cls in counts.argsort(descending=True).tolist():
        labels.extend([cls] * int(counts[cls]))
    most_frequent = int(counts.argmax())
    labels = (labels + [most_frequent] * count)[:count]
    return torch.tensor(labels, dtype=torch.int64)
