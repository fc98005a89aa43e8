"""The ``primia`` command: help that teaches, clear errors, and the API underneath."""

import json
import shutil
import subprocess
import sys

import pytest

from primia.cli import main


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "data", "train-local"):
        assert command in out


def test_train_local_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["train-local", "--help"])
    out = capsys.readouterr().out
    assert "--epsilon" in out and "examples:" in out and "privacy ledger" in out


def test_missing_required_option_is_a_clear_error(capsys):
    assert main(["train-local", "--out", "x"]) == 2
    assert "--data is required" in capsys.readouterr().err


def test_missing_dataset_is_a_clear_error(tmp_path, capsys):
    code = main(["train-local", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("primia: error:") and "nowhere" in err


def test_bad_config_value_names_the_key(tmp_path, capsys):
    config = tmp_path / "train.toml"
    config.write_text('data = "d"\nout = "o"\n[dp]\nepsilonn = 3\n')
    assert main(["train-local", "--config", str(config)]) == 2
    assert "dp: unknown key(s) epsilonn" in capsys.readouterr().err


def test_config_file_with_flag_overrides(synth_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    config = tmp_path / "train.toml"
    config.write_text(
        f'data = "{data}"\nout = "{tmp_path / "run"}"\nmodel = "cnn"\nwidth = 4\n'
        "image_size = 32\nepochs = 5\nbatch_size = 8\n[dp]\nenabled = true\nepsilon = 4.0\n"
    )
    code = main(["train-local", "--config", str(config), "--epochs", "1", "--no-progress"])
    assert code == 0
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1  # --epochs 1 overrode the file's 5
    assert json.loads(lines[0])["epsilon"] <= 4.0
    assert "ε =" in capsys.readouterr().out


def test_console_script_runs_data_synth(tmp_path):
    """The installed entry point, as a user types it."""
    out = tmp_path / "synth"
    command = [sys.executable, "-m", "primia", "data", "synth", "--out", str(out)]
    command += ["--sites", "2", "--patients-per-site", "3", "--images-per-patient", "2"]
    command += ["--size", "32"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    rows = (out / "manifest.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 3 * 2
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "overwrite" in again.stderr
