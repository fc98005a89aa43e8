"""Class-folder datasets (the paediatric pneumonia layout) and open_dataset's detection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from primia.data import Task, load_image_folder, open_dataset, patient_split
from primia.errors import ConfigError, DataError


def _image(path: Path, value: int = 50) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 20), value, dtype=np.uint8)).save(path)


def _paediatric(root: Path) -> None:
    _image(root / "NORMAL" / "IM-0001-0001.jpeg", 10)
    _image(root / "NORMAL" / "NORMAL2-IM-0002-0001.jpeg", 20)
    _image(root / "PNEUMONIA" / "person1_bacteria_1.jpeg", 200)
    _image(root / "PNEUMONIA" / "person1_virus_2.jpeg", 210)
    _image(root / "PNEUMONIA" / "person22_bacteria_3.jpeg", 220)


def test_class_folders_are_multiclass_with_sorted_names(tmp_path: Path) -> None:
    _paediatric(tmp_path)
    dataset = load_image_folder(tmp_path, image_size=16)
    assert dataset.task is Task.MULTICLASS
    assert dataset.label_names == ("NORMAL", "PNEUMONIA")
    assert dataset.num_outputs == 2
    assert dataset.targets().tolist() == [0, 0, 1, 1, 1]
    assert dataset.patient_ids == [
        "IM-0001-0001",
        "NORMAL2-IM-0002-0001",
        "person1",
        "person1",
        "person22",
    ]
    image, target = dataset[2]
    assert tuple(image.shape) == (1, 16, 16)
    assert int(target) == 1
    assert all(record.extra == {} for record in dataset.records)


def test_images_are_found_recursively_and_junk_is_skipped(tmp_path: Path) -> None:
    _image(tmp_path / "a" / "deep" / "er" / "x.PNG")
    _image(tmp_path / "a" / "y.tif")
    _image(tmp_path / "a" / ".hidden.png")
    _image(tmp_path / "a" / ".cache" / "z.png")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    _image(tmp_path / "b" / "w.jpg")
    _image(tmp_path / "__MACOSX" / "a" / "._x.png")
    dataset = load_image_folder(tmp_path, image_size=8)
    assert dataset.label_names == ("a", "b")
    assert sorted(record.path.name for record in dataset.records) == ["w.jpg", "x.PNG", "y.tif"]


def test_split_folders_mark_records_and_are_honoured(tmp_path: Path) -> None:
    _paediatric(tmp_path / "train")
    _image(tmp_path / "validation" / "NORMAL" / "IM-0100-0001.jpeg")
    _image(tmp_path / "validation" / "PNEUMONIA" / "person50_virus_9.jpeg")
    _image(tmp_path / "test" / "NORMAL" / "IM-0200-0001.jpeg")
    _image(tmp_path / "test" / "PNEUMONIA" / "person60_virus_9.jpeg")
    dataset = load_image_folder(tmp_path, image_size=8)
    assert dataset.label_names == ("NORMAL", "PNEUMONIA")
    assert len(dataset) == 9
    splits = patient_split(dataset, seed=123)
    assert len(splits.train) == 5
    assert splits.val.patient_ids == ["IM-0100-0001", "person50"]
    assert splits.test is not None
    assert splits.test.patient_ids == ["IM-0200-0001", "person60"]
    assert {r.extra["split"] for r in splits.val.records} == {"val"}


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"is empty; a class-folder dataset"):
        load_image_folder(tmp_path, image_size=8)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"image folder not found: .*nowhere"):
        load_image_folder(tmp_path / "nowhere", image_size=8)


def test_a_single_class_folder(tmp_path: Path) -> None:
    _image(tmp_path / "NORMAL" / "a.png")
    with pytest.raises(DataError, match=r"fewer than 2 class folders \(found: NORMAL\)"):
        load_image_folder(tmp_path, image_size=8)


def test_files_but_no_class_folders(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    with pytest.raises(DataError, match=r"has no class folders"):
        load_image_folder(tmp_path, image_size=8)


def test_class_folder_without_images_is_named(tmp_path: Path) -> None:
    _image(tmp_path / "NORMAL" / "a.png")
    (tmp_path / "PNEUMONIA").mkdir()
    (tmp_path / "PNEUMONIA" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=r"class folder .*PNEUMONIA holds no images"):
        load_image_folder(tmp_path, image_size=8)


def test_split_folders_with_different_classes(tmp_path: Path) -> None:
    _paediatric(tmp_path / "train")
    _image(tmp_path / "test" / "NORMAL" / "a.png")
    _image(tmp_path / "test" / "Pneumonia" / "b.png")
    with pytest.raises(DataError, match=r"different class folders .*test: NORMAL, Pneumonia"):
        load_image_folder(tmp_path, image_size=8)


def test_split_folders_mixed_with_class_folders(tmp_path: Path) -> None:
    _paediatric(tmp_path / "train")
    _image(tmp_path / "NORMAL" / "a.png")
    with pytest.raises(DataError, match=r"mixes split folders \(train\) with other folders"):
        load_image_folder(tmp_path, image_size=8)


def test_two_folders_for_one_split(tmp_path: Path) -> None:
    _paediatric(tmp_path / "val")
    _paediatric(tmp_path / "valid")
    _paediatric(tmp_path / "train")
    with pytest.raises(DataError, match=r"two folders for one split"):
        load_image_folder(tmp_path, image_size=8)


def test_open_dataset_detects_class_folders(tmp_path: Path) -> None:
    _paediatric(tmp_path)
    dataset = open_dataset(tmp_path, image_size=8, task="multiclass")
    assert dataset.label_names == ("NORMAL", "PNEUMONIA")


def test_open_dataset_refuses_labels_for_class_folders(tmp_path: Path) -> None:
    _paediatric(tmp_path)
    with pytest.raises(ConfigError, match=r"class-folder dataset"):
        open_dataset(tmp_path, image_size=8, label_columns=["NORMAL"])
    with pytest.raises(ConfigError, match=r"class-folder dataset"):
        open_dataset(tmp_path, image_size=8, task="binary")


def test_open_dataset_lists_the_layouts_it_understands(tmp_path: Path) -> None:
    _image(tmp_path / "loose.png")
    with pytest.raises(DataError, match=r"no manifest\.csv and no class folders.*train/"):
        open_dataset(tmp_path, image_size=8)
    with pytest.raises(DataError, match=r"loose\.png is not a CSV file or a folder"):
        open_dataset(tmp_path / "loose.png", image_size=8)
    with pytest.raises(DataError, match=r"missing does not exist; primia reads a CSV manifest"):
        open_dataset(tmp_path / "missing", image_size=8)


def test_files_that_name_no_patient_are_flagged(tmp_path: Path) -> None:
    """A plain file's patient is its own name, so it cannot carry a patient-level claim."""
    _paediatric(tmp_path)
    dataset = load_image_folder(tmp_path, image_size=16)
    flagged = {r.path.name for r in dataset.records if r.patient_from_file}
    assert flagged == {"IM-0001-0001.jpeg", "NORMAL2-IM-0002-0001.jpeg"}
    assert dataset.unnamed_patients == 2
    assert dataset.subset([2, 3, 4]).unnamed_patients == 0
