"""MLflow logging (optional): a run in a local file store, with TensorBoard's tags."""

from __future__ import annotations

import math

import pytest

from primia.errors import ConfigError
from primia.train import tracking
from primia.train.runlog import RunLog
from primia.train.tracking import TrackingConfig, open_run


def test_tracking_is_off_by_default():
    assert open_run(TrackingConfig(), run_name="x") is None


def test_a_missing_mlflow_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "mlflow.tracking", None)
    with pytest.raises(ConfigError, match="MLflow is not installed"):
        open_run(TrackingConfig(mlflow_uri="file:///nowhere"), run_name="x")


def test_a_run_is_written_to_a_local_file_store_with_the_tensorboard_tags(tmp_path, monkeypatch):
    mlflow_tracking = pytest.importorskip("mlflow.tracking")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for the opt-in
    store = (tmp_path / "mlruns").as_uri()
    config = TrackingConfig(mlflow_uri=store, experiment="chest")
    run = open_run(config, run_name="local", params={"model": "cnn"})
    assert run is not None
    with RunLog(tmp_path / "out", run) as log:
        log.record(1, {"train_loss": 0.7, "epsilon": math.inf, "val_auroc/effusion": 0.6})
        log.record(2, {"train_loss": 0.5, "epsilon": 1.5, "flag": True})
    client = mlflow_tracking.MlflowClient(tracking_uri=store)
    stored = client.get_run(run.run_id)
    assert stored.info.status == "FINISHED"
    assert stored.info.run_name == "local"
    assert stored.data.params == {"model": "cnn"}
    history = client.get_metric_history(run.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.7), (2, 0.5)]
    assert [m.step for m in client.get_metric_history(run.run_id, "epsilon")] == [2]
    assert set(stored.data.metrics) == {"train_loss", "epsilon", "val_auroc/effusion"}
    assert tracking.mlflow_installed()
