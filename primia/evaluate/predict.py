"""A model's scores on a dataset: the one place a model meets the evaluation's arrays."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from primia.data.dataset import RadiographDataset, Task
from primia.evaluate.metrics import Scores
from primia.evaluate.subgroups import attributes_of
from primia.train.loops import to_float


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: RadiographDataset,
    *,
    device: torch.device,
    batch_size: int = 256,
) -> Scores:
    """Probabilities of ``model`` on every image of ``dataset`` (sigmoid per label, softmax
    for multiclass), with targets and the patients' sex and age."""
    model = model.to(device).eval()
    images, targets = dataset.uint8_tensors()
    logits = (
        torch.cat(
            [
                model(to_float(images[start : start + batch_size], device)).float().cpu()
                for start in range(0, len(images), batch_size)
            ]
        )
        if len(images)
        else torch.zeros((0, dataset.num_outputs))
    )
    labels = len(dataset.label_names)
    if dataset.task is Task.MULTICLASS:
        probabilities = torch.softmax(logits.double(), dim=1).numpy()
        one_hot = np.zeros((len(dataset), labels), dtype=bool)
        one_hot[np.arange(len(dataset)), targets.numpy().astype(np.int64)] = True
        truth = one_hot
    else:
        probabilities = torch.sigmoid(logits.double()).numpy()
        truth = targets.numpy().reshape(len(dataset), labels).astype(bool)
    return Scores(
        probabilities=probabilities,
        targets=truth,
        task=dataset.task,
        label_names=dataset.label_names,
        attributes=attributes_of(dataset),
    )
