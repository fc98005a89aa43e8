"""Patient-level splits: disjoint, deterministic, non-empty, and given splits honoured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from primia.data import RadiographDataset, Record, Task, load_manifest, patient_split
from primia.errors import ConfigError, DataError


def _blank(path: Path, size: int) -> np.ndarray:
    return np.zeros((size, size), dtype=np.uint8)


def _dataset(patients: list[str], splits: list[str] | None = None) -> RadiographDataset:
    """One record per entry of ``patients`` (repeat an ID for several images), no files."""
    records = [
        Record(
            path=Path(f"img{i}.png"),
            labels=(i % 2,),
            patient_id=patient,
            source=f"row {i + 2}",
            extra={} if splits is None or not splits[i] else {"split": splits[i]},
        )
        for i, patient in enumerate(patients)
    ]
    return RadiographDataset(
        records, task=Task.BINARY, label_names=["y"], image_size=8, read_image=_blank
    )


def _many_patients(count: int = 40) -> list[str]:
    # 1 to 4 images per patient, interleaved so a patient's images are not adjacent.
    return [f"p{i}" for repeat in range(4) for i in range(count) if i % 4 >= repeat]


def _patients(dataset: RadiographDataset | None) -> set[str]:
    assert dataset is not None
    return set(dataset.patient_ids)


def test_no_patient_is_in_two_splits_and_every_record_is_used() -> None:
    dataset = _dataset(_many_patients())
    splits = patient_split(dataset, val_fraction=0.2, test_fraction=0.2, seed=5)
    train, val, test = _patients(splits.train), _patients(splits.val), _patients(splits.test)
    assert train.isdisjoint(val)
    assert train.isdisjoint(test)
    assert val.isdisjoint(test)
    assert len(val) == len(test) == 8  # 20 % of 40 patients each
    assert splits.test is not None
    paths = [r.path for part in (splits.train, splits.val, splits.test) for r in part.records]
    assert sorted(paths) == sorted(r.path for r in dataset.records)


def test_same_seed_same_split_whatever_the_record_order() -> None:
    patients = _many_patients()
    first = patient_split(_dataset(patients), seed=3)
    again = patient_split(_dataset(patients[::-1]), seed=3)
    other = patient_split(_dataset(patients), seed=4)
    assert _patients(first.val) == _patients(again.val)
    assert _patients(first.test) == _patients(again.test)
    assert (_patients(first.val), _patients(first.test)) != (
        _patients(other.val),
        _patients(other.test),
    )


def test_three_patients_give_three_non_empty_splits() -> None:
    splits = patient_split(_dataset(["a", "a", "b", "c", "c"]), seed=0)
    assert len(_patients(splits.train)) == 1
    assert len(_patients(splits.val)) == 1
    assert len(_patients(splits.test)) == 1


def test_large_fractions_still_leave_a_training_patient() -> None:
    splits = patient_split(_dataset(["a", "b", "c", "d"]), val_fraction=0.5, test_fraction=0.45)
    assert len(_patients(splits.train)) == 1
    assert len(_patients(splits.val)) + len(_patients(splits.test)) == 3


def test_no_test_fraction_means_no_test_split() -> None:
    splits = patient_split(_dataset(["a", "b"]), test_fraction=0.0)
    assert splits.test is None
    assert _patients(splits.train) | _patients(splits.val) == {"a", "b"}


def test_too_few_patients() -> None:
    with pytest.raises(DataError, match=r"has 2 patient\(s\).*needs at least 3"):
        patient_split(_dataset(["a", "a", "b"]))
    with pytest.raises(DataError, match=r"has 1 patient\(s\).*needs at least 2"):
        patient_split(_dataset(["a", "a"]), test_fraction=0)


@pytest.mark.parametrize(("val", "test"), [(0.0, 0.1), (0.2, -0.1), (1.0, 0.0), (0.5, 0.5)])
def test_bad_fractions(val: float, test: float) -> None:
    with pytest.raises(ConfigError, match=r"val_fraction"):
        patient_split(_dataset(_many_patients()), val_fraction=val, test_fraction=test)


def test_splits_share_the_image_cache() -> None:
    calls: list[Path] = []

    def counting(path: Path, size: int) -> np.ndarray:
        calls.append(path)
        return _blank(path, size)

    records = [Record(path=Path(f"{i}.png"), labels=(0,), patient_id=str(i)) for i in range(6)]
    dataset = RadiographDataset(
        records, task=Task.BINARY, label_names=["y"], image_size=8, read_image=counting
    )
    splits = patient_split(dataset)
    splits.train.image(0)
    dataset.image(dataset.records.index(splits.train.records[0]))
    assert len(calls) == 1


def test_given_split_is_honoured_with_aliases() -> None:
    dataset = _dataset(
        ["a", "a", "b", "c", "d", "e"], ["train", "Train", "valid", "validation", "TEST", "val"]
    )
    splits = patient_split(dataset, val_fraction=0.5, seed=99)
    assert splits.train.patient_ids == ["a", "a"]
    assert splits.val.patient_ids == ["b", "c", "e"]
    assert splits.test is not None
    assert splits.test.patient_ids == ["d"]


def test_given_split_without_test_has_no_test_split() -> None:
    splits = patient_split(_dataset(["a", "b"], ["train", "val"]))
    assert splits.test is None


def test_given_split_putting_a_patient_in_two_splits_names_the_patient() -> None:
    dataset = _dataset(["a", "b", "b", "c"], ["train", "train", "test", "val"])
    with pytest.raises(DataError, match=r"patient b is in more than one split.*row 3.*row 4"):
        patient_split(dataset)


def test_given_split_must_cover_every_record() -> None:
    dataset = _dataset(["a", "b", "c"], ["train", "", "val"])
    with pytest.raises(DataError, match=r"row 3 has split empty"):
        patient_split(dataset)


def test_unknown_split_name() -> None:
    dataset = _dataset(["a", "b", "c"], ["train", "holdout", "val"])
    with pytest.raises(DataError, match=r"row 3 has split 'holdout'"):
        patient_split(dataset)


def test_given_split_without_validation_records() -> None:
    dataset = _dataset(["a", "b"], ["train", "test"])
    with pytest.raises(DataError, match=r"no val records"):
        patient_split(dataset)


def test_manifest_split_column_end_to_end(tmp_path: Path) -> None:
    rows = []
    for index, (patient, split) in enumerate([("p1", "train"), ("p2", "val"), ("p1", "train")]):
        Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(tmp_path / f"{index}.png")
        rows.append(f"{index}.png,{patient},{split},{index % 2}")
    csv_path = tmp_path / "manifest.csv"
    csv_path.write_text("\n".join(["path,patient_id,split,y", *rows]) + "\n")
    splits = patient_split(load_manifest(csv_path, image_size=8))
    assert splits.train.patient_ids == ["p1", "p1"]
    assert splits.val.patient_ids == ["p2"]
    assert splits.test is None
