"""Experiment tracking with MLflow (optional), beside TensorBoard, with the same tags.

``[tracking] mlflow_uri`` (a coordinator's configuration, or :class:`TrainConfig`'s
``tracking`` for local training) names an MLflow tracking store: a tracking server's URL,
a database (``sqlite:///mlflow.db``, with SQLAlchemy installed) or a folder
(``file:///…``: MLflow's local file store, which MLflow 3 opens only with the
environment variable ``MLFLOW_ALLOW_FILE_STORE=true``). Each
coordinator run, or local training run, becomes an MLflow run of ``experiment`` whose
metrics carry the TensorBoard tags at the same step (the round, or the epoch):
``validation/mean_auroc``, ``validation/auroc/LABEL``, ``epsilon_spent/NODE``,
``round/seconds``, … for the coordinator; ``train_loss``, ``epsilon``, ``val_…`` for
local training. Empty ``mlflow_uri`` (the default): no MLflow, and primia does not need it
installed (``pip install 'primia[tracking]'`` adds it).

What is logged is what the coordinator or the training run already holds — metrics and ε
— never images or updates.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from primia.errors import ConfigError


@dataclass(frozen=True)
class TrackingConfig:
    mlflow_uri: str = ""
    """The MLflow tracking store; empty: no MLflow."""
    experiment: str = "primia"

    @property
    def enabled(self) -> bool:
        return bool(self.mlflow_uri)


def mlflow_installed() -> bool:
    """Whether MLflow can be imported (found without importing it: that takes seconds)."""
    return importlib.util.find_spec("mlflow") is not None


class MLflowRun:
    """One MLflow run: parameters once, then metrics per step; :meth:`close` ends it."""

    def __init__(
        self, config: TrackingConfig, *, run_name: str, params: Mapping[str, Any] | None = None
    ) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as error:
            raise ConfigError(
                "tracking.mlflow_uri is set but MLflow is not installed; install it "
                "(pip install 'primia[tracking]') or leave mlflow_uri empty"
            ) from error
        self._client = MlflowClient(tracking_uri=config.mlflow_uri)
        experiment = self._client.get_experiment_by_name(config.experiment)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self._client.create_experiment(config.experiment)
        )
        self.run_id: str = self._client.create_run(experiment_id, run_name=run_name).info.run_id
        for key, value in (params or {}).items():
            self._client.log_param(self.run_id, key, value)

    def log(self, scalars: Mapping[str, Any], step: int) -> None:
        """Every finite number of ``scalars`` as a metric at ``step`` (booleans, None,
        NaN and infinities are left out, as TensorBoard leaves them out)."""
        for key, value in scalars.items():
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if number and math.isfinite(value):
                self._client.log_metric(self.run_id, key, float(value), step=step)

    def close(self, status: str = "FINISHED") -> None:
        self._client.set_terminated(self.run_id, status=status)


def open_run(
    config: TrackingConfig, *, run_name: str, params: Mapping[str, Any] | None = None
) -> MLflowRun | None:
    """The MLflow run ``config`` asks for, or None when tracking is off."""
    return MLflowRun(config, run_name=run_name, params=params) if config.enabled else None
