"""The public collections' readers on small copies of their layouts (collection_fixtures)."""

from __future__ import annotations

from pathlib import Path

import pytest
from collection_fixtures import (
    NIH_MISSING,
    SIZE,
    write_chexpert,
    write_mimic,
    write_nih,
    write_rsna,
    write_vindr,
)

from primia.data import (
    ReadOptions,
    Task,
    detect_format,
    open_collection,
    open_dataset,
    patient_split,
)
from primia.data.tables import age_years, hold_out, label_name, sex_code, view_code
from primia.errors import ConfigError, DataError


def _by_name(collection, label: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Image file stem → that label's value."""
    index = collection.dataset.label_names.index(label)
    return {r.path.stem: r.labels[index] for r in collection.dataset.records}


def _disjoint(dataset) -> None:  # type: ignore[no-untyped-def]
    splits = patient_split(dataset)
    parts = [part for part in (splits.train, splits.val, splits.test) if part is not None]
    patients = [set(part.patient_ids) for part in parts]
    for i, first in enumerate(patients):
        for second in patients[i + 1 :]:
            assert not first & second


def test_naming_is_shared_across_collections() -> None:
    assert label_name("Pleural Effusion") == label_name("Effusion") == "effusion"
    assert label_name("Pleural effusion") == "effusion"
    assert label_name("Nodule/Mass") == "nodule_mass"
    assert label_name("Pleural_Thickening") == label_name("Pleural thickening")
    assert [sex_code(v) for v in ("Male", "female", "O", "Unknown")] == ["M", "F", "", ""]
    assert [age_years(v) for v in ("058Y", "006M", "58.0", "414", "")] == ["58", "0", "58", "", ""]
    assert [view_code(v) for v in ("pa", "LL", "Lateral")] == ["PA", "LATERAL", "LATERAL"]


def test_held_out_patients_do_not_depend_on_row_order() -> None:
    patients = [f"p{i}" for i in range(40)] * 2
    held = hold_out(patients, 0.1)
    assert len(held) == 4 and held == hold_out(list(reversed(patients)), 0.1)
    assert hold_out(["only"], 0.5) == set() and len(hold_out(["a", "b"], 0.01)) == 1


def test_nih_reads_labels_subgroups_and_official_split(tmp_path: Path) -> None:
    root = write_nih(tmp_path / "nih")
    assert detect_format(root) == "nih"
    collection = open_collection(root, image_size=SIZE, options=ReadOptions(skip_missing=True))
    dataset = collection.dataset
    assert collection.skipped == {"missing image": 1}
    assert dataset.task is Task.MULTILABEL
    assert len(dataset.label_names) == 15 and "no_finding" in dataset.label_names
    assert _by_name(collection, "effusion") == {
        "00000001_000": 0,
        "00000001_001": 0,
        "00000001_002": 1,
        "00000002_000": 0,
        "00000002_001": 0,
        "00000003_000": 0,
        "00000004_000": 0,
        "00000005_000": 0,
    }
    first = dataset.records[2]
    assert (first.patient_id, first.site) == ("1", "nih")
    assert first.extra == {"sex": "M", "age": "58", "view": "AP", "split": first.extra["split"]}
    splits = {r.path.name: r.extra["split"] for r in dataset.records}
    assert {n for n, s in splits.items() if s == "test"} == {"00000003_000.png", "00000004_000.png"}
    assert "val" in splits.values() and "train" in splits.values()
    _disjoint(dataset)
    assert dataset[0][0].shape == (1, SIZE, SIZE)


def test_nih_missing_image_names_the_row_and_the_fix(tmp_path: Path) -> None:
    root = write_nih(tmp_path / "nih")
    with pytest.raises(
        DataError,
        match=rf"Data_Entry_2017.csv row 10: image .*{NIH_MISSING} "
        r"does not exist; download it, or pass --skip-missing",
    ):
        open_dataset(root, image_size=SIZE)


def test_nih_without_lists_is_split_at_random_by_patient(tmp_path: Path) -> None:
    root = write_nih(tmp_path / "nih", lists=False)
    dataset = open_dataset(root, image_size=SIZE, options=ReadOptions(skip_missing=True))
    assert all("split" not in r.extra for r in dataset.records)
    _disjoint(dataset)


def test_chexpert_uncertainty_policies(tmp_path: Path) -> None:
    root = write_chexpert(tmp_path / "chexpert")
    assert detect_format(root) == "chexpert"
    ones = open_collection(root, image_size=SIZE)
    cardio = _by_name(ones, "cardiomegaly")
    # Lateral dropped; patient00002/study2's frontal is -1 → 1 under U-Ones.
    assert ones.skipped == {"non-frontal view": 1}
    assert len(ones.dataset) == 7
    records = {str(r.path.relative_to(root)): r for r in ones.dataset.records}
    study2 = records["CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg"]
    assert study2.labels[ones.dataset.label_names.index("cardiomegaly")] == 1
    assert study2.patient_id == "patient00002"
    assert study2.extra == {"sex": "F", "age": "87", "view": "AP", "split": "train"}
    assert cardio["view1_frontal"] in (0, 1)
    zeros = open_collection(root, image_size=SIZE, options=ReadOptions(uncertain="zeros"))
    effusion = zeros.dataset.label_names.index("effusion")
    study1 = next(r for r in zeros.dataset.records if "patient00002/study1" in str(r.path))
    assert study1.labels[effusion] == 0
    ignored = open_collection(
        root,
        image_size=SIZE,
        options=ReadOptions(uncertain="ignore"),
        label_columns=["Cardiomegaly", "Pleural Effusion"],
    )
    assert ignored.dataset.label_names == ("cardiomegaly", "effusion")
    assert ignored.skipped == {"non-frontal view": 1, "uncertain label": 2}
    every = open_collection(root, image_size=SIZE, options=ReadOptions(views="all"))
    assert {r.extra["view"] for r in every.dataset.records} == {"AP", "PA", "LATERAL"}
    assert {r.extra["split"] for r in every.dataset.records} == {"train", "val"}
    _disjoint(every.dataset)


def test_mimic_joins_three_tables(tmp_path: Path) -> None:
    root = write_mimic(tmp_path / "mimic")
    assert detect_format(root) == "mimic"
    collection = open_collection(root, image_size=SIZE, options=ReadOptions(uncertain="zeros"))
    records = {r.path.stem: r for r in collection.dataset.records}
    assert set(records) == {"aaa1", "bbb1", "ccc1"}
    assert collection.skipped == {"study without labels": 1, "non-frontal view": 1}
    names = collection.dataset.label_names
    assert records["aaa1"].labels[names.index("cardiomegaly")] == 1
    assert records["aaa1"].labels[names.index("effusion")] == 0  # -1 under U-Zeros
    assert records["aaa1"].extra == {"sex": "F", "age": "52", "view": "PA", "split": "train"}
    assert records["bbb1"].extra["split"] == "val"
    assert records["ccc1"].extra == {"view": "PA", "split": "test"}  # not in patients.csv
    assert records["ccc1"].patient_id == "10000003" and records["ccc1"].site == "mimic"


def test_vindr_votes(tmp_path: Path) -> None:
    root = write_vindr(tmp_path / "vindr")
    assert detect_format(root) == "vindr"
    majority = open_collection(root, image_size=SIZE)
    assert len(majority.dataset.label_names) == 28
    assert _by_name(majority, "cardiomegaly")["t1"] == 1
    assert _by_name(majority, "effusion")["t1"] == 0  # 1 of 3
    assert _by_name(majority, "nodule_mass")["t2"] == 1  # 2 of 3
    assert _by_name(majority, "pneumonia")["s1"] == 1
    anyone = open_collection(root, image_size=SIZE, options=ReadOptions(vote="any"))
    assert _by_name(anyone, "effusion")["t1"] == 1
    records = {r.path.stem: r for r in majority.dataset.records}
    assert records["t1"].extra["sex"] == "F" and records["t1"].extra["age"] == "45"
    assert "sex" not in records["s1"].extra  # "O" is not a sex primia's subgroups name
    assert records["s1"].extra["split"] == "test"
    assert {records[t].extra["split"] for t in ("t1", "t2", "t3", "t4")} == {"train", "val"}


def test_rsna_boxes_make_one_label(tmp_path: Path) -> None:
    root = write_rsna(tmp_path / "rsna")
    assert detect_format(root) == "rsna"
    collection = open_collection(root, image_size=SIZE, options=ReadOptions(views="all"))
    dataset = collection.dataset
    assert dataset.task is Task.BINARY and dataset.label_names == ("pneumonia",)
    assert _by_name(collection, "pneumonia") == {"r1": 1, "r2": 0, "r3": 0, "r4": 1}
    assert dataset.records[0].extra == {"sex": "F", "age": "51", "view": "PA"}
    frontal = open_dataset(root, image_size=SIZE)
    assert len(frontal) == 4  # AP and PA are both frontal
    _disjoint(dataset)


def test_ambiguous_folder_needs_format(tmp_path: Path) -> None:
    root = write_rsna(tmp_path / "both")
    write_vindr(root)
    with pytest.raises(DataError, match=r"several dataset formats \(vindr, rsna\).*--format"):
        open_dataset(root, image_size=SIZE)
    assert len(open_dataset(root, image_size=SIZE, format="rsna")) == 4
    with pytest.raises(ConfigError, match="unknown dataset format 'dicom'"):
        open_dataset(root, image_size=SIZE, format="dicom")


def test_options_and_labels_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown uncertain 'maybe'; choose one of ones"):
        ReadOptions(uncertain="maybe")
    root = write_rsna(tmp_path / "rsna")
    with pytest.raises(ConfigError, match="rsna has no label 'effusion'; its labels are: pneu"):
        open_dataset(root, image_size=SIZE, label_columns=["Effusion"])
    with pytest.raises(ConfigError, match="is a binary task, not multiclass"):
        open_dataset(root, image_size=SIZE, task="multiclass")


# (writer, file to edit, text replaced, replacement, the error it must give)
BAD_CELLS = {
    "nih unknown finding": (
        lambda root: write_nih(root, lists=False),
        "Data_Entry_2017.csv",
        "Hernia",
        "Hernai",
        r"row 7, column 'Finding Labels': unknown finding 'Hernai'; findings are Atelectasis",
    ),
    "chexpert bad label": (
        write_chexpert,
        "CheXpert-v1.0-small/train.csv",
        "-1.0",
        "maybe",
        r"train.csv row 3, column 'Cardiomegaly': 'maybe' is not a label; labels are 1, 0, -1",
    ),
    "vindr bad vote": (
        write_vindr,
        "image_labels_train.csv",
        "t2,R2,0",
        "t2,R2,2",
        r"row 6, column 'Aortic enlargement': '2' is not a vote; each radiologist's vote is 0",
    ),
    "rsna conflicting boxes": (
        write_rsna,
        "stage_2_train_labels.csv",
        "r3,,,,,0",
        "r3,,,,,0\nr2,1,2,3,4,1",
        r"row 6, column 'Target': r2 is 1 here but 0 in row 4; every box row of one image",
    ),
    "rsna missing column": (
        write_rsna,
        "stage_2_train_labels.csv",
        "Target",
        "Label",
        r"stage_2_train_labels.csv has no column 'Target'; its columns are: patientId, x, y",
    ),
}


@pytest.mark.parametrize("case", BAD_CELLS.values(), ids=BAD_CELLS.keys())
def test_bad_cells_name_file_row_column_and_fix(tmp_path: Path, case: tuple) -> None:  # type: ignore[type-arg]
    write, name, old, new, message = case
    root = write(tmp_path / "collection")
    edited = root / name
    edited.write_text(edited.read_text().replace(old, new, 1))
    with pytest.raises(DataError, match=message):
        open_dataset(root, image_size=SIZE, options=ReadOptions(skip_missing=True))


def test_training_and_node_settings_carry_the_format(tmp_path: Path) -> None:
    from primia.cli import build_parser
    from primia.cli.train import config_from_args
    from primia.federated.data_owner import DataSettings

    argv = ["train-local", "--data", "d", "--out", "o", "--format", "rsna", "--views", "all"]
    argv.append("--skip-missing")
    config = config_from_args(build_parser("train-local").parse_args(argv))
    assert config.format == "rsna" and config.read_options().views == "all"
    assert config.skip_missing
    settings = DataSettings(tmp_path, format="chexpert", uncertain="zeros")
    assert settings.read_options().uncertain == "zeros"
    with pytest.raises(ConfigError, match="unknown dataset format 'nhi'"):
        DataSettings(tmp_path, format="nhi")
    with pytest.raises(ConfigError, match="unknown vote 'all'"):
        DataSettings(tmp_path, vote="all")
