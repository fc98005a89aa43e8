"""Same-patient and different-patient pairs of radiographs, for a verification model.

A re-identification attacker asks "are these two radiographs of the same patient?". The
pairs come from one patient-disjoint split (:func:`primia.data.patient_split`), so a
verifier is judged on patients it never saw. Sampled pairs (for training) are balanced:
half same-patient (two different images of one patient), half different-patient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from primia.data.dataset import RadiographDataset
from primia.errors import DataError

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class PatientIndex:
    """Which image belongs to which patient, for one split."""

    patient_of: IntArray
    """Per image, the index of its patient (0 .. patients-1)."""
    images_of: tuple[IntArray, ...]
    """Per patient, its images."""

    @classmethod
    def of(cls, dataset: RadiographDataset, *, what: str) -> PatientIndex:
        """Index ``dataset``; a split with no patient of two images or fewer than two
        patients is refused (``what`` names the split in the message)."""
        names = sorted(set(dataset.patient_ids))
        number = {name: k for k, name in enumerate(names)}
        patient_of = np.array([number[p] for p in dataset.patient_ids], dtype=np.int64)
        images_of = tuple(np.flatnonzero(patient_of == k) for k in range(len(names)))
        if len(names) < 2:
            raise DataError(
                f"the {what} split has {len(names)} patient; re-identification needs at "
                "least two (more patients, or a larger split fraction)"
            )
        if max(len(images) for images in images_of) < 2:
            raise DataError(
                f"every patient of the {what} split has a single image: re-identification "
                "needs several images per patient, grouped by the manifest's patient_id "
                "column (is it filled with a different ID for each image?)"
            )
        return cls(patient_of=patient_of, images_of=images_of)

    @property
    def repeated(self) -> IntArray:
        """The patients with at least two images."""
        return np.array([k for k, images in enumerate(self.images_of) if len(images) >= 2])

    def sample(self, count: int, rng: np.random.Generator) -> tuple[IntArray, IntArray, np.ndarray]:
        """``count`` pairs (first images, second images, same patient?), half of each kind."""
        same = np.arange(count) < count // 2
        first = np.empty(count, dtype=np.int64)
        second = np.empty(count, dtype=np.int64)
        repeated = self.repeated
        for k in np.flatnonzero(same):
            images = self.images_of[rng.choice(repeated)]
            first[k], second[k] = rng.choice(images, size=2, replace=False)
        patients = len(self.images_of)
        for k in np.flatnonzero(~same):
            a, b = rng.choice(patients, size=2, replace=False)
            first[k] = rng.choice(self.images_of[a])
            second[k] = rng.choice(self.images_of[b])
        order = rng.permutation(count)
        return first[order], second[order], same[order]

    def all_pairs(
        self, *, max_negatives: int, rng: np.random.Generator
    ) -> tuple[IntArray, IntArray, np.ndarray]:
        """Every same-patient pair (i < j) and every different-patient pair, the latter
        subsampled (seeded) to at most ``max_negatives``."""
        images = len(self.patient_of)
        first, second = np.triu_indices(images, k=1)
        same = self.patient_of[first] == self.patient_of[second]
        negatives = np.flatnonzero(~same)
        if len(negatives) > max_negatives:
            negatives = np.sort(rng.choice(negatives, size=max_negatives, replace=False))
        keep = np.concatenate([np.flatnonzero(same), negatives])
        return first[keep], second[keep], same[keep]
