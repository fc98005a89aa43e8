"""The unit of privacy — an example or a patient — and how DP-SGD samples and augments it.

A patient with four radiographs protected by *example*-level (ε, δ)-DP is protected only at
the group-privacy level for k = 4 (roughly ε·k); hospitals protect patients. With
``privacy_unit = "patient"`` primia's DP-SGD samples patients, not images, and clips each
patient's gradient as one unit:

* **Sampling.** Each step takes every patient independently with probability q (Poisson
  sampling over patients, as Opacus' ``UniformWithReplacementSampler`` does over examples),
  with all of that patient's images; an epoch is ⌊1/q⌋ steps.
* **Clipping.** A patient's gradient is the sum over its images, G_p = Σ_{i∈p} g_i,
  clipped to C as one unit (:class:`~primia.train.fast_dp.FastDPSGD` with ``groups``), so
  adding or removing one patient changes the noised sum by at most C: the accountant's
  (σ, q, steps) bound the privacy loss of a whole patient.
* **Cap.** At most ``max_images_per_patient`` images of a patient are used (the first ones
  in the dataset's order, the same every step). The cap bounds memory and a batch's size,
  not the guarantee, which holds for any number of images.

**Augmentation multiplicity** (De et al., 2022): each sampled image is shifted K times at
random and its loss weighted 1/K, and the K copies join its unit's group, so the unit's
gradient is the mean over augmentations before clipping. It costs no ε: the sensitivity
is still C per unit, and the augmentations are data-independent randomness.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import torch
from torch import Tensor
from torch.nn import functional

from primia.errors import ConfigError

PrivacyUnit = Literal["example", "patient"]
PRIVACY_UNITS: tuple[PrivacyUnit, ...] = ("example", "patient")


def check_unit(unit: str) -> PrivacyUnit:
    """``unit`` as a :data:`PrivacyUnit`, or a clear error."""
    if unit not in PRIVACY_UNITS:
        raise ConfigError(
            f"privacy unit {unit!r} is unknown: use 'patient' (each patient's images clipped "
            "and sampled together, the default) or 'example' (each image alone)"
        )
    return unit


def unnamed_patients_problem(unit: PrivacyUnit, *, unnamed: int, images: int) -> str | None:
    """Why ``unit`` cannot be claimed for a training set of ``images`` images, ``unnamed`` of
    which name no patient (a plain file in a class folder: its patient is its own file
    name); ``None`` when it can. Patient-level DP over such images would clip and sample
    each image alone — example-level DP recorded as patient-level."""
    if unit != "patient" or unnamed == 0:
        return None
    return (
        f"{unnamed} of the {images} training images name no patient (files in class folders "
        "without a personNNN_ prefix or a DICOM PatientID), so each would count as its own "
        "patient and the patient-level guarantee would hold only per image; give a manifest "
        "with a patient_id column, or train with privacy unit 'example' (--privacy-unit "
        'example, node [privacy] unit = "example")'
    )


def clipping_problem(
    unit: PrivacyUnit, grad_sample_mode: str, augmentation_multiplicity: int = 1
) -> str | None:
    """Why ``grad_sample_mode`` cannot train ``unit`` with K augmentations; ``None`` if it
    can. Only primia's fast path groups samples before clipping; Opacus' modes clip each
    image alone."""
    if grad_sample_mode == "fast" or (unit == "example" and augmentation_multiplicity == 1):
        return None
    return (
        f"grad_sample_mode {grad_sample_mode!r} clips each image alone, so it cannot train "
        "at the patient level or with augmentation multiplicity; use grad_sample_mode "
        "'fast' (the default), or privacy unit 'example' without augmentations"
    )


def unit_members(
    patient_ids: Sequence[str], unit: PrivacyUnit, *, max_images_per_patient: int
) -> list[Tensor]:
    """The image indices of each unit: one image each for ``example``; each patient's
    images, in dataset order and capped at ``max_images_per_patient``, for ``patient``."""
    if unit == "example":
        return [torch.tensor([index]) for index in range(len(patient_ids))]
    if max_images_per_patient < 1:
        raise ConfigError(
            f"max_images_per_patient must be at least 1, got {max_images_per_patient}"
        )
    by_patient: dict[str, list[int]] = {}
    for index, patient in enumerate(patient_ids):
        if not patient:
            raise ConfigError(
                f"image {index} has no patient ID, so patient-level DP cannot group it; give "
                "every image its patient_id, or train with privacy unit 'example'"
            )
        by_patient.setdefault(patient, []).append(index)
    return [torch.tensor(images[:max_images_per_patient]) for images in by_patient.values()]


class UnitPoissonSampler:
    """Poisson sampling of units: every step, each unit with probability ``sample_rate``.

    Iterating gives ⌊1/q⌋ steps, each a tensor of the sampled units' numbers (possibly
    empty: the step then releases noise alone, as DP-SGD's analysis requires).
    """

    def __init__(self, units: int, sample_rate: float, generator: torch.Generator) -> None:
        if not 0 < sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        self.units = units
        self.sample_rate = sample_rate
        self._generator = generator

    def __len__(self) -> int:
        return int(1 / self.sample_rate)

    def __iter__(self) -> Iterator[Tensor]:
        for _ in range(len(self)):
            draws = torch.rand(self.units, generator=self._generator)
            yield torch.nonzero(draws < self.sample_rate).flatten()


def unit_batches(
    sampled: Tensor, members: Sequence[Tensor], *, max_images: int
) -> Iterator[tuple[Tensor, Tensor]]:
    """The sampled units' images as physical batches of at most ``max_images`` images that
    never split a unit (a unit larger than ``max_images`` is a batch of its own): each
    batch is (image indices, group labels), the label being the unit's number."""
    indices: list[Tensor] = []
    labels: list[Tensor] = []
    size = 0
    for unit in sampled.tolist():
        images = members[unit]
        if indices and size + len(images) > max_images:
            yield torch.cat(indices), torch.cat(labels)
            indices, labels, size = [], [], 0
        indices.append(images)
        labels.append(torch.full((len(images),), unit))
        size += len(images)
    if indices:
        yield torch.cat(indices), torch.cat(labels)


def random_shifts(images: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Each image translated by a random whole number of pixels in [−max_shift, max_shift]
    on each axis, the border replicated: a small, label-preserving augmentation."""
    if max_shift < 1:
        return images
    padded = functional.pad(images, (max_shift,) * 4, mode="replicate")
    height, width = images.shape[-2:]
    offsets = torch.randint(0, 2 * max_shift + 1, (len(images), 2), generator=generator)
    return torch.stack(
        [
            padded[i, :, dy : dy + height, dx : dx + width]
            for i, (dy, dx) in enumerate(offsets.tolist())
        ]
    )
