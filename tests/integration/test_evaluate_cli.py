"""``primia evaluate`` on real checkpoints: one model, two compared, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from primia.cli import main


@pytest.fixture(scope="module")
def data(synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy: DP training writes its ledger beside the data, which other tests share."""
    copy = tmp_path_factory.mktemp("evaluate") / "data"
    shutil.copytree(synth_data, copy)
    return copy


@pytest.fixture(scope="module")
def two_runs(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("runs")
    # fmt: off
    common = ["--data", str(data), "--model", "cnn", "--width", "4", "--image-size", "32",
              "--epochs", "2", "--batch-size", "16", "--no-progress"]
    # fmt: on
    assert main(["train-local", *common, "--out", str(root / "plain")]) == 0
    assert main(["train-local", *common, "--dp", "--epsilon", "2", "--out", str(root / "dp")]) == 0
    return root / "plain", root / "dp"


def evaluate(model: Path, data: Path, *options: object) -> int:
    """``primia evaluate --model MODEL --data DATA OPTIONS``; its exit status."""
    return main(["evaluate", "--model", str(model), "--data", str(data), *map(str, options)])


def test_evaluate_one_model_writes_metrics_with_intervals(
    two_runs: tuple[Path, Path], data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "eval"
    assert evaluate(two_runs[0], data, "--out", out, "--resamples", 200) == 0
    document = json.loads((out / "evaluation.json").read_text())
    overall = document["evaluation"]["groups"]["all"]
    assert overall["examples"] > 0
    assert set(overall["metrics"]) == {
        "auroc",
        "accuracy",
        "sensitivity",
        "specificity",
        "precision",
        "f1",
    }
    assert {"sex=F", "sex=M"} & set(document["evaluation"]["groups"])
    assert document["evaluation"]["bootstrap"] == {"resamples": 200, "confidence": 0.95}
    assert (out / "model.safetensors").exists()
    printed = capsys.readouterr().out
    assert "test split" in printed and "auroc" in printed
    labels = document["evaluation"]["labels"]
    assert all(label in printed for label in labels) and "sensitivity" in printed
    assert "…" not in printed and max(map(len, printed.splitlines())) <= 80  # nothing cut
    page = (out / "report.html").read_text()
    assert "Per finding, at the operating point" in page
    assert all(f"<td>{label}</td>" in page for label in labels)


def test_evaluate_compares_two_models_with_paired_p_values(
    two_runs: tuple[Path, Path], data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "compare"
    assert (
        evaluate(two_runs[1], data, "--compare", two_runs[0], "--out", out, "--resamples", 100) == 0
    )
    document = json.loads((out / "evaluation.json").read_text())
    accuracy = document["comparison"]["all"]["accuracy"]["mean"]
    assert accuracy["p_value"] is not None and 0 < accuracy["p_value"] <= 1
    assert accuracy["lower"] <= accuracy["difference"] <= accuracy["upper"]
    printed = capsys.readouterr().out
    assert "minus" in printed and "(P=" in printed and "…" not in printed
    assert "Compared with" in (out / "report.html").read_text()


def test_evaluate_bad_input_is_a_clear_error(
    two_runs: tuple[Path, Path], data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert evaluate(tmp_path / "nowhere", data) == 2
    assert "nowhere" in capsys.readouterr().err
    assert evaluate(two_runs[0], data, "--site", "site9") == 2
    assert "site9" in capsys.readouterr().err
    assert evaluate(two_runs[0], data, "--label-columns", "pneumonia") == 2
    assert "label" in capsys.readouterr().err
