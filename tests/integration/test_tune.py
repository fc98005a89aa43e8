"""`primia tune`: a real Optuna search of real DP training runs on tiny synthetic data."""

import argparse
import csv
import json
from pathlib import Path

import pytest

from primia.cli.train import add_training_arguments, config_from_args
from primia.errors import ConfigError
from primia.train import DPConfig, PrivacyLedger, TrainConfig
from primia.train.tune import SearchSpace, TuneConfig, tune

SPACE = SearchSpace(batch_sizes=(8, 16), epochs=(1, 1), ema_decays=(0.0, 0.9))


def _base(data: Path, **dp: object) -> TrainConfig:
    settings = {"enabled": True, "epsilon": 1.0, "epsilon_budget": 5.0} | dp
    return TrainConfig(
        data=data,
        out=data.parent / "unused",
        model="cnn",
        width=4,
        image_size=32,
        max_physical_batch_size=8,
        progress=False,
        threads=2,
        dp=DPConfig(**settings),  # type: ignore[arg-type]
    )


def test_search_charges_every_trial_and_writes_a_config_train_local_reads(data, tmp_path):
    out = tmp_path / "tune"
    seen = []
    result = tune(TuneConfig(_base(data), out, trials=2, space=SPACE), on_trial=seen.append)
    assert [trial.number for trial in seen] == [0, 1]
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [row["trial"] for row in rows] == ["0", "1"]
    assert all(0.0 <= float(row["val_auroc"]) <= 1.0 for row in rows)
    # every trial is a release in the dataset's ledger: the search is not free
    ledger = PrivacyLedger.open(data / "privacy-ledger.jsonl")
    assert len(ledger.releases()) == 2
    assert result.epsilon_spent == pytest.approx(sum(t.epsilon for t in seen))
    summary = json.loads((out / "best.json").read_text())
    assert summary["objective"] == "validation mean AUROC" and not summary["public_data"]
    parser = argparse.ArgumentParser()
    add_training_arguments(parser)
    best = config_from_args(parser.parse_args(["--config", str(result.best_config)]))
    assert best.lr == result.best.params["lr"]
    assert best.dp.max_grad_norm == result.best.params["max_grad_norm"]
    assert best.ema_decay == result.best.params["ema_decay"] and best.dp.enabled


def test_public_data_leave_the_datasets_ledger_alone(data, tmp_path):
    out = tmp_path / "tune"
    tune(TuneConfig(_base(data), out, trials=1, space=SPACE, public=True))
    assert not (data / "privacy-ledger.jsonl").exists()
    assert (out / "public-data-ledger.jsonl").exists()


def test_a_search_beyond_the_budget_is_refused_before_any_trial(data, tmp_path):
    with pytest.raises(ConfigError, match=r"6 × ε 1 = 6 .* lower --trials"):
        tune(TuneConfig(_base(data), tmp_path / "tune", trials=6, space=SPACE))
    assert not (tmp_path / "tune" / "trials").exists()


def test_non_private_base_is_refused():
    with pytest.raises(ConfigError, match="enable DP"):
        TuneConfig(_base(Path("d"), enabled=False), Path("o"))
