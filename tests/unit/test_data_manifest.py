"""CSV manifests: tasks and targets, default label columns, and every error path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from primia.data import Task, load_manifest, open_dataset
from primia.errors import ConfigError, DataError

SYNTH_HEADER = "path,patient_id,site,view,sex,age,pneumonia,effusion,cardiomegaly,nodule"


def _image(path: Path, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16), value, dtype=np.uint8)).save(path)


def _manifest(folder: Path, header: str, *rows: str, images: bool = True) -> Path:
    """A manifest.csv in ``folder``; with ``images``, a PNG for every row's first field."""
    folder.mkdir(parents=True, exist_ok=True)
    if images:
        for row in rows:
            name = row.split(",")[0]
            if name and not (folder / name).exists():
                _image(folder / name)
    path = folder / "manifest.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_synthetic_generator_layout_is_multilabel(tmp_path: Path) -> None:
    csv_path = _manifest(
        tmp_path,
        SYNTH_HEADER,
        "img/a.png,p1,site0,PA,F,54,1,0,0,1",
        "img/b.png,p1,site0,AP,F,54,0,0,1,0",
        "img/c.png,p2,site1,PA,M,,0,1,0,0",
    )
    dataset = load_manifest(csv_path, image_size=8)
    assert dataset.task is Task.MULTILABEL
    assert dataset.label_names == ("pneumonia", "effusion", "cardiomegaly", "nodule")
    assert dataset.num_outputs == 4
    assert dataset.targets().tolist() == [[1, 0, 0, 1], [0, 0, 1, 0], [0, 1, 0, 0]]
    assert dataset.patient_ids == ["p1", "p1", "p2"]
    assert dataset.sites == ["site0", "site0", "site1"]
    first, last = dataset.records[0], dataset.records[2]
    assert first.extra == {"view": "PA", "sex": "F", "age": "54"}
    assert last.extra == {"view": "PA", "sex": "M"}  # empty age left out
    assert first.source.endswith("manifest.csv row 2")
    image, target = dataset[0]
    assert image.dtype == torch.float32
    assert tuple(image.shape) == (1, 8, 8)
    assert target.tolist() == [1.0, 0.0, 0.0, 1.0]


def test_one_binary_column_is_binary(tmp_path: Path) -> None:
    csv_path = _manifest(
        tmp_path, "path,patient_id,sex,pneumonia", "a.png,p1,F,1", "b.png,p2,M,0.0"
    )
    dataset = load_manifest(csv_path, image_size=8)
    assert dataset.task is Task.BINARY
    assert dataset.num_outputs == 1
    assert dataset.target(0).tolist() == [1.0]
    assert dataset.target(1).tolist() == [0.0]


def test_string_label_column_is_multiclass_with_sorted_classes(tmp_path: Path) -> None:
    csv_path = _manifest(
        tmp_path, "path,patient_id,label", "a.png,1,pneumonia", "b.png,2,normal", "c.png,3,effusion"
    )
    dataset = load_manifest(csv_path, image_size=8)
    assert dataset.task is Task.MULTICLASS
    assert dataset.label_names == ("effusion", "normal", "pneumonia")
    assert dataset.num_outputs == 3
    assert dataset.targets().tolist() == [2, 1, 0]
    assert dataset.target(0).dtype == torch.int64


def test_integer_classes_sort_numerically(tmp_path: Path) -> None:
    csv_path = _manifest(
        tmp_path, "path,patient_id,grade", "a.png,1,10", "b.png,2,2", "c.png,3,1", "d.png,4,2"
    )
    dataset = load_manifest(csv_path, image_size=8, label_columns=["grade"])
    assert dataset.task is Task.MULTICLASS
    assert dataset.label_names == ("1", "2", "10")
    assert dataset.targets().tolist() == [2, 1, 0, 1]


def test_named_columns_and_task_override_detection(tmp_path: Path) -> None:
    csv_path = _manifest(tmp_path, "path,patient_id,a,b", "x.png,1,0,1", "y.png,2,1,1")
    only_b = load_manifest(csv_path, image_size=8, label_columns=["b"])
    assert only_b.task is Task.BINARY
    assert only_b.label_names == ("b",)
    one_multilabel = load_manifest(csv_path, image_size=8, label_columns=["a"], task="multilabel")
    assert one_multilabel.task is Task.MULTILABEL
    assert one_multilabel.num_outputs == 1
    assert load_manifest(csv_path, image_size=8, task=Task.MULTILABEL).num_outputs == 2


def test_multiclass_task_reads_the_label_column(tmp_path: Path) -> None:
    csv_path = _manifest(tmp_path, "path,patient_id,flag,label", "x.png,1,0,b", "y.png,2,1,a")
    dataset = load_manifest(csv_path, image_size=8, task="multiclass")
    assert dataset.label_names == ("a", "b")


def test_relative_paths_resolve_against_the_csv_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    absolute = tmp_path.resolve() / "elsewhere" / "abs.png"
    _image(absolute)
    _manifest(tmp_path / "data", "path,patient_id,y", "rel.png,1,0", f"{absolute},2,1")
    monkeypatch.chdir(absolute.parent)
    dataset = load_manifest(Path("../data/manifest.csv"), image_size=8)
    assert [r.path for r in dataset.records] == [tmp_path.resolve() / "data" / "rel.png", absolute]


def test_byte_order_mark_and_blank_lines_are_tolerated(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    _image(tmp_path / "b.png")
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("\ufeffpath, patient_id ,y\na.png,1,0\n\nb.png,2,1\n", encoding="utf-8")
    dataset = load_manifest(csv_path, image_size=8)
    assert dataset.patient_ids == ["1", "2"]
    assert dataset.records[1].source.endswith("row 4")


def test_split_column_is_kept_in_extra(tmp_path: Path) -> None:
    csv_path = _manifest(tmp_path, "path,patient_id,split,y", "a.png,1,train,0", "b.png,2,test,1")
    dataset = load_manifest(csv_path, image_size=8)
    assert [r.extra["split"] for r in dataset.records] == ["train", "test"]
    assert dataset.label_names == ("y",)


def test_open_dataset_reads_a_csv_or_a_folder_with_manifest(tmp_path: Path) -> None:
    csv_path = _manifest(tmp_path, "path,patient_id,y", "a.png,1,0", "b.png,2,1")
    assert len(open_dataset(csv_path, image_size=8)) == 2
    assert len(open_dataset(tmp_path, image_size=8, label_columns=["y"])) == 2


# Error paths: each message names the file and, where there is one, the row and the column.


def test_missing_label_column_lists_the_columns(tmp_path: Path) -> None:
    csv_path = _manifest(tmp_path, "path,patient_id,pneumonia", "a.png,1,0")
    with pytest.raises(DataError, match=r"manifest\.csv has no column 'nodule'.*pneumonia"):
        load_manifest(csv_path, image_size=8, label_columns=["nodule"])


def test_empty_label_value_names_row_and_column(tmp_path: Path) -> None:
    csv_path = _manifest(tmp_path, "path,patient_id,a,b", "x.png,1,0,1", "y.png,2,,1")
    with pytest.raises(DataError, match=r"manifest\.csv row 3: column 'a' is empty"):
        load_manifest(csv_path, image_size=8)


@pytest.mark.parametrize("task", ["binary", "multilabel"])
def test_non_binary_value_names_row_and_column(tmp_path: Path, task: str) -> None:
    csv_path = _manifest(tmp_path, "path,patient_id,a", "x.png,1,0", "y.png,2,yes")
    with pytest.raises(DataError, match=r"manifest\.csv row 3: column 'a' is 'yes'"):
        load_manifest(csv_path, image_size=8, label_columns=["a"], task=task)


def test_missing_images_are_listed_with_rows(tmp_path: Path) -> None:
    rows = [f"m{i}.png,{i},0" for i in range(7)]
    csv_path = _manifest(tmp_path, "path,patient_id,y", "ok.png,x,1", *rows, images=False)
    _image(tmp_path / "ok.png")
    with pytest.raises(DataError) as caught:
        load_manifest(csv_path, image_size=8)
    message = str(caught.value)
    assert "manifest.csv: 7 of 8 image files do not exist" in message
    assert "row 3: " in message
    assert "m0.png" in message
    assert "row 7: " in message
    assert "row 8: " not in message  # only the first few
    assert "..." in message


def test_duplicate_paths_name_both_rows(tmp_path: Path) -> None:
    csv_path = _manifest(tmp_path, "path,patient_id,y", "a.png,1,0", "b.png,2,0", "./a.png,3,1")
    with pytest.raises(DataError, match=r"manifest\.csv rows 2 and 4 both name .*a\.png"):
        load_manifest(csv_path, image_size=8)


def test_missing_patient_id_column_says_it_is_required(tmp_path: Path) -> None:
    csv_path = _manifest(tmp_path, "path,y", "a.png,0")
    with pytest.raises(DataError, match=r"manifest\.csv has no patient_id column, .*required"):
        load_manifest(csv_path, image_size=8)


def test_empty_patient_id_names_the_row(tmp_path: Path) -> None:
    csv_path = _manifest(tmp_path, "path,patient_id,y", "a.png,1,0", "b.png,,1")
    with pytest.raises(DataError, match=r"manifest\.csv row 3: patient_id is empty"):
        load_manifest(csv_path, image_size=8)


def test_empty_path_names_the_row(tmp_path: Path) -> None:
    csv_path = _manifest(tmp_path, "path,patient_id,y", "a.png,1,0", ",2,1")
    with pytest.raises(DataError, match=r"manifest\.csv row 3: path is empty"):
        load_manifest(csv_path, image_size=8)


def test_missing_path_column(tmp_path: Path) -> None:
    csv_path = _manifest(tmp_path, "file,patient_id,y", "a.png,1,0")
    with pytest.raises(DataError, match=r"manifest\.csv has no path column.*file, patient_id, y"):
        load_manifest(csv_path, image_size=8)


def test_no_label_columns(tmp_path: Path) -> None:
    csv_path = _manifest(tmp_path, "path,patient_id,site,notes", "a.png,1,s,hello")
    with pytest.raises(DataError, match=r"manifest\.csv has no label columns.*notes"):
        load_manifest(csv_path, image_size=8)


def test_wrong_field_count_names_the_row(tmp_path: Path) -> None:
    csv_path = _manifest(tmp_path, "path,patient_id,y", "a.png,1,0", "b.png,2,1,extra")
    with pytest.raises(DataError, match=r"manifest\.csv row 3 has 4 fields but the header has 3"):
        load_manifest(csv_path, image_size=8)


def test_empty_and_header_only_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty\.csv is empty"):
        load_manifest(empty, image_size=8)
    header_only = _manifest(tmp_path, "path,patient_id,y")
    with pytest.raises(DataError, match=r"manifest\.csv has a header but no rows"):
        load_manifest(header_only, image_size=8)


def test_missing_manifest_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"manifest not found: .*none\.csv"):
        load_manifest(tmp_path / "none.csv", image_size=8)


def test_repeated_column(tmp_path: Path) -> None:
    csv_path = _manifest(tmp_path, "path,patient_id,y,y", "a.png,1,0,1")
    with pytest.raises(DataError, match=r"manifest\.csv repeats the column\(s\) y"):
        load_manifest(csv_path, image_size=8)


def test_single_class_multiclass_column(tmp_path: Path) -> None:
    csv_path = _manifest(tmp_path, "path,patient_id,label", "a.png,1,normal", "b.png,2,normal")
    with pytest.raises(DataError, match=r"column 'label' holds one class \(normal\)"):
        load_manifest(csv_path, image_size=8)


def test_empty_multiclass_value_names_the_row(tmp_path: Path) -> None:
    csv_path = _manifest(tmp_path, "path,patient_id,label", "a.png,1,a", "b.png,2,")
    with pytest.raises(DataError, match=r"manifest\.csv row 3: column 'label' is empty"):
        load_manifest(csv_path, image_size=8)


def test_contradictory_task_and_columns(tmp_path: Path) -> None:
    csv_path = _manifest(tmp_path, "path,patient_id,a,b", "x.png,1,0,1")
    with pytest.raises(ConfigError, match=r"several 0/1 columns \(a, b\) but the task is binary"):
        load_manifest(csv_path, image_size=8, task="binary")
    with pytest.raises(ConfigError, match=r"multiclass task reads one label column"):
        load_manifest(csv_path, image_size=8, label_columns=["a", "b"], task="multiclass")
    with pytest.raises(ConfigError, match=r"unknown task 'regression'"):
        load_manifest(csv_path, image_size=8, task="regression")
    with pytest.raises(ConfigError, match=r"label_columns repeats"):
        load_manifest(csv_path, image_size=8, label_columns=["a", "a"])


def test_multiclass_without_a_label_column(tmp_path: Path) -> None:
    csv_path = _manifest(tmp_path, "path,patient_id,finding", "x.png,1,a", "y.png,2,b")
    with pytest.raises(DataError, match=r"no label column for a multiclass task.*finding"):
        load_manifest(csv_path, image_size=8, task="multiclass")


def test_unreadable_image_is_reported_on_first_use(tmp_path: Path) -> None:
    csv_path = _manifest(tmp_path, "path,patient_id,y", "a.png,1,0", images=False)
    (tmp_path / "a.png").write_text("not a png")
    dataset = load_manifest(csv_path, image_size=8)
    with pytest.raises(DataError, match=r"a\.png is not an image Pillow can read"):
        dataset.image(0)
