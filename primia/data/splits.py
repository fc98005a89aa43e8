"""Patient-level train, validation and test splits.

No patient has images in two splits: a model scored on another radiograph of a chest it
trained on looks better than it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from primia.data.dataset import RadiographDataset, Record
from primia.errors import ConfigError, DataError

SPLIT_ALIASES = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}
"""Accepted split names (lower case) and the split each stands for."""


@dataclass(frozen=True)
class Splits:
    """Patient-disjoint datasets; ``test`` is ``None`` when there is no test split."""

    train: RadiographDataset
    val: RadiographDataset
    test: RadiographDataset | None


def patient_split(
    dataset: RadiographDataset,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> Splits:
    """The dataset split by patient.

    When the records carry ``extra["split"]`` (a manifest's ``split`` column, or split
    folders), that split is used as given and the fractions and seed are ignored; it must
    name train, val (or valid, validation) or test for every record, have train and val
    records, and keep each patient in one split.

    Otherwise the patients (not the images) are shuffled with ``seed`` and
    ``val_fraction`` and ``test_fraction`` of them, rounded but at least one each, go to
    validation and test; ``test_fraction=0`` gives no test split. The same dataset and seed
    always give the same split, whatever the order of the records.

    Raises:
        ConfigError: a fraction is out of range.
        DataError: too few patients for non-empty splits, or a given split is incomplete,
            unknown, or puts one patient in two splits (the message names the patient).
    """
    if any("split" in record.extra for record in dataset.records):
        return _given_split(dataset)
    return _random_split(dataset, val_fraction, test_fraction, seed)


def _given_split(dataset: RadiographDataset) -> Splits:
    indices: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    # Per patient, the first record seen in each split: enough to name the conflict.
    placements: dict[str, dict[str, Record]] = {}
    for position, record in enumerate(dataset.records):
        value = record.extra.get("split", "")
        split = SPLIT_ALIASES.get(value.strip().lower())
        if split is None:
            shown = repr(value) if value else "empty"
            raise DataError(
                f"{record.source} has split {shown}; when any record has a split, every "
                "record needs train, val (valid, validation) or test"
            )
        indices[split].append(position)
        placements.setdefault(record.patient_id, {}).setdefault(split, record)
    for patient, by_split in placements.items():
        if len(by_split) > 1:
            where = "; ".join(f"{split}: {record.source}" for split, record in by_split.items())
            raise DataError(
                f"patient {patient} is in more than one split ({where}); move all of a "
                "patient's images into one split"
            )
    for split in ("train", "val"):
        if not indices[split]:
            raise DataError(
                f"the given split has no {split} records; mark some {split}, or remove the "
                "split column to split by patient at random"
            )
    return Splits(
        train=dataset.subset(indices["train"]),
        val=dataset.subset(indices["val"]),
        test=dataset.subset(indices["test"]) if indices["test"] else None,
    )


def _random_split(
    dataset: RadiographDataset, val_fraction: float, test_fraction: float, seed: int
) -> Splits:
    if not 0 < val_fraction < 1 or not 0 <= test_fraction < 1:
        raise ConfigError(
            f"val_fraction must be in (0, 1) and test_fraction in [0, 1); got {val_fraction} "
            f"and {test_fraction}"
        )
    if val_fraction + test_fraction >= 1:
        raise ConfigError(
            f"val_fraction + test_fraction is {val_fraction + test_fraction:g}; it must be "
            "below 1 to leave patients for training"
        )
    patients = sorted(set(dataset.patient_ids))
    count = len(patients)
    needed = 3 if test_fraction > 0 else 2
    if count < needed:
        raise DataError(
            f"the dataset has {count} patient(s); a patient-level split with non-empty "
            f"train, val{' and test' if needed == 3 else ''} needs at least {needed}"
        )
    n_val = max(1, round(count * val_fraction))
    n_test = max(1, round(count * test_fraction)) if test_fraction > 0 else 0
    while count - n_val - n_test < 1:  # large fractions of few patients: shrink the larger
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    shuffled = [patients[i] for i in np.random.default_rng(seed).permutation(count)]
    split_of = {patient: "test" for patient in shuffled[:n_test]}
    split_of.update({patient: "val" for patient in shuffled[n_test : n_test + n_val]})
    indices: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for position, patient in enumerate(dataset.patient_ids):
        indices[split_of.get(patient, "train")].append(position)
    return Splits(
        train=dataset.subset(indices["train"]),
        val=dataset.subset(indices["val"]),
        test=dataset.subset(indices["test"]) if n_test else None,
    )
