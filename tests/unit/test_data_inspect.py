"""``primia data inspect`` and :func:`inspect_dataset` on small copies of the collections."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from collection_fixtures import write_chexpert, write_nih, write_rsna

from primia.cli import main
from primia.data import ReadOptions, inspect_dataset


def test_inspect_counts_what_the_reader_found(tmp_path: Path) -> None:
    root = write_nih(tmp_path / "nih")
    # One image that is not a PNG: counted as unreadable, named with the reason.
    (root / "images_002" / "images" / "00000005_000.png").write_bytes(b"not an image")
    found = inspect_dataset(root)
    assert (found.format, found.task, found.images, found.patients) == ("nih", "multilabel", 8, 5)
    assert found.images_per_patient == {"min": 1, "median": 1.0, "mean": 1.6, "max": 3}
    assert found.positives["cardiomegaly"] == 3 and found.prevalence["cardiomegaly"] == 0.375
    assert found.views == {"PA": 6, "AP": 2}
    assert found.sexes == {"M": 6, "F": 2}
    assert found.ages == {"known": 8, "min": 58, "median": 71.5, "max": 82}
    assert found.sites == {"nih": 8}
    assert found.skipped == {"missing image": 1}
    assert found.unreadable == 1
    assert "00000005_000.png" in found.unreadable_files[0]["path"]
    assert found.splits["test"] == 2


def test_inspect_applies_the_read_options(tmp_path: Path) -> None:
    root = write_chexpert(tmp_path / "chexpert")
    found = inspect_dataset(root, options=ReadOptions(views="all"), decode=False)
    assert found.views == {"AP": 4, "PA": 3, "LATERAL": 1}
    assert found.sexes == {"F": 4, "M": 3, "unknown": 1}
    assert found.unreadable == 0 and not found.decoded


def test_cli_prints_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_rsna(tmp_path / "rsna")
    out = tmp_path / "rsna.json"
    assert main(["data", "inspect", str(root), "--format", "rsna", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "pneumonia" in printed and "50.0% (2)" in printed
    written = json.loads(out.read_text())
    assert written["images"] == 4 and written["views"] == {"PA": 3, "AP": 1}
    assert main(["data", "inspect", str(root), "--json", "-", "--no-decode"]) == 0
    assert json.loads(capsys.readouterr().out)["sexes"] == {"F": 2, "M": 2}
