"""The one dataset interface every loader returns.

A :class:`RadiographDataset` is a list of :class:`Record` (where an image lives, its labels,
its patient and site) plus the task that says how labels are read:

* ``binary``     — one label column; the target is ``float32[1]`` in {0, 1}; one logit.
* ``multilabel`` — L label columns; the target is ``float32[L]`` in {0, 1}; L logits.
* ``multiclass`` — one of K classes; the target is an ``int64`` class index; K logits.

Items are ``(image, target)`` with ``image`` a ``float32[1, S, S]`` tensor in [0, 1], S the
dataset's ``image_size``. Images are decoded once and kept in memory as ``uint8`` (a
128 px image is 16 KiB), so epochs after the first never touch the disk.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from primia.errors import DataError


class Task(StrEnum):
    BINARY = "binary"
    MULTILABEL = "multilabel"
    MULTICLASS = "multiclass"


@dataclass(frozen=True)
class Record:
    """One image and what is known about it.

    ``labels`` holds one 0/1 value per label column (binary, multilabel) or a single class
    index (multiclass). ``source`` says where the record came from ("manifest.csv row 12",
    a folder path) so errors can name it.
    """

    path: Path
    labels: tuple[int, ...]
    patient_id: str
    site: str = ""
    source: str = ""
    extra: dict[str, str] = field(default_factory=dict, compare=False)
    patient_from_file: bool = False
    """Nothing named the patient, so ``patient_id`` is the file's own name: the image is
    its own patient, and patient-level DP would protect only the image (refused)."""


ImageReader = Callable[[Path, int], np.ndarray]
"""Reads one image file into a ``uint8[S, S]`` array at the given size."""


class RadiographDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Radiographs with labels, patients and sites; see the module docstring."""

    def __init__(
        self,
        records: Sequence[Record],
        *,
        task: Task,
        label_names: Sequence[str],
        image_size: int,
        read_image: ImageReader,
        cache: dict[Path, np.ndarray] | None = None,
    ) -> None:
        if not records:
            raise DataError("the dataset has no images; check the path and the label filter")
        if image_size < 8:
            raise DataError(f"image size {image_size} is too small; use at least 8 pixels")
        self.records = list(records)
        self.task = Task(task)
        self.label_names = tuple(label_names)
        self.image_size = image_size
        self._read_image = read_image
        # Shared between subsets of one dataset, so a split never decodes an image twice.
        self._cache: dict[Path, np.ndarray] = {} if cache is None else cache

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_outputs(self) -> int:
        """How many logits a model for this dataset produces."""
        return 1 if self.task is Task.BINARY else len(self.label_names)

    @property
    def patient_ids(self) -> list[str]:
        return [record.patient_id for record in self.records]

    @property
    def unnamed_patients(self) -> int:
        """How many images have no named patient (:attr:`Record.patient_from_file`)."""
        return sum(record.patient_from_file for record in self.records)

    @property
    def sites(self) -> list[str]:
        return [record.site for record in self.records]

    def image(self, index: int) -> np.ndarray:
        """The ``uint8[S, S]`` pixels of one image, decoded on first use."""
        record = self.records[index]
        pixels = self._cache.get(record.path)
        if pixels is None:
            try:
                pixels = self._read_image(record.path, self.image_size)
            except DataError:
                raise
            except Exception as error:
                raise DataError(
                    f"cannot read image {record.path} ({record.source}): {error}; "
                    "check that the file exists and is a valid image"
                ) from error
            self._cache[record.path] = pixels
        return pixels

    def target(self, index: int) -> torch.Tensor:
        labels = self.records[index].labels
        if self.task is Task.MULTICLASS:
            return torch.tensor(labels[0], dtype=torch.int64)
        return torch.tensor(labels, dtype=torch.float32)

    def targets(self) -> np.ndarray:
        """All labels: ``int64[N]`` for multiclass, ``float32[N, L]`` otherwise."""
        labels = np.array([record.labels for record in self.records])
        if self.task is Task.MULTICLASS:
            return labels[:, 0].astype(np.int64)
        return labels.astype(np.float32)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = torch.from_numpy(self.image(index))
        image = pixels.to(torch.float32).div_(255.0).unsqueeze(0)
        return image, self.target(index)

    def subset(self, indices: Sequence[int]) -> RadiographDataset:
        """A dataset of the chosen records that shares this one's image cache."""
        return RadiographDataset(
            [self.records[i] for i in indices],
            task=self.task,
            label_names=self.label_names,
            image_size=self.image_size,
            read_image=self._read_image,
            cache=self._cache,
        )

    def uint8_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every item stacked: ``uint8[N, 1, S, S]`` images (a quarter of float32's memory)
        and the targets; training converts a batch at a time."""
        images = np.stack([self.image(i) for i in range(len(self))])
        return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(self.targets())


def only_site(dataset: RadiographDataset, site: str) -> RadiographDataset:
    """The images of ``site`` (a manifest's ``site`` column); a clear error, naming the
    sites there are, when it has none."""
    indices = [i for i, name in enumerate(dataset.sites) if name == site]
    if not indices:
        sites = ", ".join(sorted(set(dataset.sites)))
        source = dataset.records[0].source if dataset.records else "the dataset"
        raise DataError(f"no images of site {site!r} in {source}; sites: {sites}")
    return dataset.subset(indices)
