"""A model's scores on a dataset: the one place a model meets the evaluation's arrays."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from primia.data.dataset import RadiographDataset, Task
from primia.evaluate.metrics import Scores
from primia.evaluate.subgroups import attributes_of
from primia.train.loops import to_float


def predict(
    model: nn.Module,
    dataset: RadiographDataset,
    *,
    device: torch.device,
    batch_size: int = 256,
) -> Scores:
    """Probabilities of ``model`` on every image of ``dataset`` (sigmoid per label, softmax
    for multiclass), with targets and the patients' sex and age."""
    images, targets = dataset.uint8_tensors()
    return predict_images(
        model,
        images,
        targets,
        task=dataset.task,
        label_names=dataset.label_names,
        attributes=attributes_of(dataset),
        device=device,
        batch_size=batch_size,
    )


@torch.no_grad()
def predict_images(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    task: Task,
    label_names: tuple[str, ...],
    attributes: Mapping[str, np.ndarray],
    device: torch.device,
    batch_size: int = 256,
) -> Scores:
    """As :func:`predict`, for ``uint8[N, 1, S, S]`` images and their dataset targets
    (e.g. images changed by an anonymizer)."""
    model = model.to(device).eval()
    count, labels = len(images), len(label_names)
    logits = (
        torch.cat(
            [
                model(to_float(images[start : start + batch_size], device)).float().cpu()
                for start in range(0, count, batch_size)
            ]
        )
        if count
        else torch.zeros((0, 1 if task is Task.BINARY else labels))
    )
    if task is Task.MULTICLASS:
        probabilities = torch.softmax(logits.double(), dim=1).numpy()
        truth = np.zeros((count, labels), dtype=bool)
        truth[np.arange(count), targets.numpy().astype(np.int64)] = True
    else:
        probabilities = torch.sigmoid(logits.double()).numpy()
        truth = targets.numpy().reshape(count, labels).astype(bool)
    return Scores(
        probabilities=probabilities,
        targets=truth,
        task=task,
        label_names=label_names,
        attributes=attributes,
    )
