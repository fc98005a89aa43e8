"""Epoch loops: how one pass over the training data updates the model.

Three loops share one interface (``run_epoch``, ``model``, ``steps``, ``history``):

* :class:`PlainLoop` — ordinary minibatch training, shuffled with the config's seed.
* :class:`FastDPLoop` — DP-SGD with :class:`~primia.train.fast_dp.FastDPSGD`, primia's
  per-sample clipping (``grad_sample_mode = "fast"``, the default; 0.8–0.9× the speed of
  non-private training on CPU, against 0.3–0.6× for Opacus' modes).
* :class:`OpacusLoop` — DP-SGD with Opacus' ``GradSampleModule`` and ``DPOptimizer``
  (``hooks``, ``functorch``, ``ew`` or ``ghost``), for comparison and for layers that
  FastDPSGD does not support.

Both DP loops draw Poisson batches at rate q — :class:`FastDPLoop` of privacy units
(patients or examples, :mod:`primia.train.units`), :class:`OpacusLoop` of examples with
Opacus' ``DPDataLoader`` — and step an Opacus accountant with (σ, q) per step, so ε is
computed the same way whichever runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.accountants import create_accountant
from opacus.utils.batch_memory_manager import BatchMemoryManager
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from primia.data.dataset import Task
from primia.models.checkpoint import unwrap
from primia.train.accounting import Mechanism
from primia.train.fast_dp import FastDPSGD
from primia.train.losses import criterion_for
from primia.train.progress import TrainingProgress
from primia.train.randomness import os_seeded_generator
from primia.train.train_config import TrainConfig
from primia.train.units import UnitPoissonSampler, random_shifts, unit_batches


class EpochLoop(Protocol):
    model: nn.Module
    """The plain model (never an Opacus wrapper): what is evaluated and saved."""

    def run_epoch(self, progress: TrainingProgress) -> float:
        """Train one epoch; return the mean training loss."""
        ...

    def history(self) -> list[Mechanism]:
        """The DP mechanisms run so far (empty for non-private training)."""
        ...


class PlainLoop:
    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        dataset: Dataset[Any],
        *,
        task: Task,
        config: TrainConfig,
        device: torch.device,
    ) -> None:
        self.model = model
        self._optimizer = optimizer
        self._criterion = criterion_for(task)
        self._physical = config.max_physical_batch_size
        self._device = device
        generator = torch.Generator().manual_seed(config.seed)
        self._loader = DataLoader(
            dataset, batch_size=config.batch_size, shuffle=True, generator=generator
        )

    def __len__(self) -> int:
        return len(self._loader)

    def run_epoch(self, progress: TrainingProgress) -> float:
        self.model.train()
        losses = []
        for images, targets in self._loader:
            self._optimizer.zero_grad(set_to_none=True)
            batch_loss = 0.0
            for chunk_images, chunk_targets in _chunks(images, targets, self._physical):
                weight = len(chunk_images) / len(images)
                outputs = self.model(to_float(chunk_images, self._device))
                loss = self._criterion(outputs, chunk_targets.to(self._device))
                (loss * weight).backward()
                batch_loss += loss.item() * weight
            self._optimizer.step()
            losses.append(batch_loss)
            progress.step(batch_loss)
        return float(np.mean(losses)) if losses else math.nan

    def history(self) -> list[Mechanism]:
        return []


class FastDPLoop:
    """DP-SGD over privacy units (:mod:`primia.train.units`): Poisson sampling of units at
    rate q, each unit's gradient clipped once, K random shifts per image averaged first."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        dataset: TensorDataset,
        *,
        task: Task,
        config: TrainConfig,
        device: torch.device,
        noise_multiplier: float,
        sample_rate: float,
        generator: torch.Generator,
        members: Sequence[torch.Tensor],
    ) -> None:
        self.model = model
        self._criterion = criterion_for(task, reduction="none")
        self._images, self._targets = dataset.tensors
        self._members = members
        self._multiplicity = config.dp.augmentation_multiplicity
        self._max_shift = max(1, config.image_size // 16)
        # a unit's K copies of each image stay in one physical batch
        self._physical = max(1, config.max_physical_batch_size // self._multiplicity)
        self._device = device
        self._generator = generator
        self._sampler = UnitPoissonSampler(len(members), sample_rate, generator)
        self._grouped = config.dp.privacy_unit == "patient" or self._multiplicity > 1
        self._accountant = create_accountant(mechanism=config.dp.accountant)
        self._dp = FastDPSGD(
            model,
            optimizer,
            noise_multiplier=noise_multiplier,
            max_grad_norm=config.dp.max_grad_norm,
            expected_batch_size=max(1, int(len(members) * sample_rate)),
            accountant=self._accountant,
            sample_rate=sample_rate,
        )

    def __len__(self) -> int:
        return len(self._sampler)

    def run_epoch(self, progress: TrainingProgress) -> float:
        self.model.train()
        losses = []
        for sampled in self._sampler:
            self._dp.zero_grad()
            total, images_seen = 0.0, 0
            for indices, units in unit_batches(sampled, self._members, max_images=self._physical):
                images = to_float(self._images[indices], self._device)
                targets = self._targets[indices].to(self._device)
                if self._multiplicity > 1:
                    k = self._multiplicity
                    images = random_shifts(
                        images.repeat_interleave(k, dim=0), self._max_shift, self._generator
                    )
                    targets = targets.repeat_interleave(k, dim=0)
                    units = units.repeat_interleave(k)
                per_sample = self._criterion(self.model(images), targets) / self._multiplicity
                self._dp.backward(per_sample, groups=units if self._grouped else None)
                total += per_sample.sum().item()
                images_seen += len(indices)
            self._dp.step()
            losses.append(total / max(1, images_seen))
            progress.step(losses[-1])
        return float(np.mean(losses)) if losses else math.nan

    def history(self) -> list[Mechanism]:
        return [Mechanism(*entry) for entry in self._accountant.history]

    def close(self) -> None:
        self._dp.remove()


class OpacusLoop:
    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        dataset: Dataset[Any],
        *,
        task: Task,
        config: TrainConfig,
        device: torch.device,
        noise_multiplier: float,
        sample_rate: float,
        generator: torch.Generator,
    ) -> None:
        self._engine = PrivacyEngine(accountant=config.dp.accountant)
        # Opacus derives q = 1 / len(batches); the same batch size gives the caller's q.
        batches = DataLoader(dataset, batch_size=config.batch_size, generator=generator)
        private = self._engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=batches,
            noise_multiplier=noise_multiplier,
            noise_generator=os_seeded_generator(device),
            max_grad_norm=config.dp.max_grad_norm,
            poisson_sampling=True,
            grad_sample_mode=config.dp.grad_sample_mode,
            criterion=criterion_for(task),
        )
        if config.dp.grad_sample_mode == "ghost":
            self._wrapped, self._optimizer, self._criterion, self._loader = private
        else:
            self._wrapped, self._optimizer, self._loader = private
            self._criterion = criterion_for(task)
        self.model = unwrap(self._wrapped)
        self._physical = config.max_physical_batch_size
        self._device = device

    def __len__(self) -> int:
        return len(self._loader)

    def run_epoch(self, progress: TrainingProgress) -> float:
        self._wrapped.train()
        losses = []
        with BatchMemoryManager(
            data_loader=self._loader,
            max_physical_batch_size=self._physical,
            optimizer=self._optimizer,
        ) as physical_loader:
            for images, targets in physical_loader:
                self._optimizer.zero_grad(set_to_none=True)
                outputs = self._wrapped(to_float(images, self._device))
                loss = self._criterion(outputs, targets.to(self._device))
                loss.backward()
                self._optimizer.step()
                losses.append(loss.item())
                if not getattr(self._optimizer, "_is_last_step_skipped", False):
                    progress.step(losses[-1])
        return float(np.mean(losses)) if losses else math.nan

    def history(self) -> list[Mechanism]:
        return [Mechanism(*entry) for entry in self._engine.accountant.history]


def to_float(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``uint8`` pixels to ``float32`` in [0, 1] on ``device``."""
    return images.to(device).float().div_(255.0)


def _chunks(
    images: torch.Tensor, targets: torch.Tensor, size: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A (Poisson) batch cut into physical batches of at most ``size`` images.

    An empty Poisson batch gives no chunk: the step then releases noise alone.
    """
    return [
        (chunk_images, chunk_targets)
        for chunk_images, chunk_targets in zip(images.split(size), targets.split(size), strict=True)
        if len(chunk_images)
    ]
