"""A model's scores on a dataset: the one place a model meets the evaluation's arrays."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from primia.data.dataset import RadiographDataset, Task
from primia.evaluate.metrics import Scores
from primia.evaluate.subgroups import attributes_of
from primia.train.local import logits_of


def predict(
    model: nn.Module,
    dataset: RadiographDataset,
    *,
    device: torch.device,
    batch_size: int = 256,
) -> Scores:
    """Probabilities of ``model`` on every image of ``dataset`` (sigmoid per label, softmax
    for multiclass), with targets and the patients' sex and age."""
    images, _ = dataset.uint8_tensors()
    return dataset_scores(logits_of(model, images, device=device, batch_size=batch_size), dataset)


def dataset_scores(logits: torch.Tensor, dataset: RadiographDataset) -> Scores:
    """:func:`predict`'s scores from logits of ``dataset``'s images already computed
    (:func:`~primia.train.local.logits_of`, e.g. for the metrics)."""
    return scores_of(
        logits,
        torch.from_numpy(dataset.targets()),
        task=dataset.task,
        label_names=dataset.label_names,
        attributes=attributes_of(dataset),
    )


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
    logits = logits_of(model, images, device=device, batch_size=batch_size)
    return scores_of(logits, targets, task=task, label_names=label_names, attributes=attributes)


def scores_of(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    task: Task,
    label_names: tuple[str, ...],
    attributes: Mapping[str, np.ndarray],
) -> Scores:
    """Scores from a model's logits (:func:`~primia.train.local.logits_of`), so that one
    pass over the images serves both the metrics and the scores."""
    count, labels = len(logits), len(label_names)
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
