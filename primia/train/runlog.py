"""What a training run leaves behind: ``metrics.jsonl`` and TensorBoard events.

Each call to :meth:`RunLog.record` appends one JSON line (flushed and fsynced, so a crash
loses at most the line being written) and the same scalars to ``tb/``, under the tags a
federation's coordinator uses (``validation/mean_auroc``, ``validation/auroc/LABEL``,
``validation/loss``; see :func:`tensorboard_tag`), so that one TensorBoard shows local and
federated runs side by side (and, given an MLflow run, to MLflow under the same tags:
:mod:`primia.train.tracking`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from types import TracebackType
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from primia.train.tracking import MLflowRun


class RunLog:
    def __init__(self, run_dir: Path, mlflow: MLflowRun | None = None) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = run_dir / "metrics.jsonl"
        self._writer = SummaryWriter(log_dir=str(run_dir / "tb"))
        self._mlflow = mlflow

    def record(self, step: int, values: dict[str, Any]) -> None:
        line = json.dumps({key: _json_safe(value) for key, value in values.items()})
        with open(self.metrics_path, "a") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        for key, value in values.items():
            is_number = isinstance(value, int | float) and not isinstance(value, bool)
            if is_number and math.isfinite(value):
                self._writer.add_scalar(tensorboard_tag(key), value, step)
        self._writer.flush()
        if self._mlflow is not None:
            self._mlflow.log(values, step)

    def close(self) -> None:
        self._writer.close()
        if self._mlflow is not None:
            self._mlflow.close()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


RENAMED_TAGS = {
    "val_auroc_mean": "validation/mean_auroc",
    "train_loss": "train/loss",
    "epsilon": "epsilon_spent",
    "seconds": "epoch/seconds",
}


def tensorboard_tag(key: str) -> str:
    """The TensorBoard tag of a ``metrics.jsonl`` key: ``val_X`` → ``validation/X``, and
    :data:`RENAMED_TAGS`; other keys as they are."""
    if key in RENAMED_TAGS:
        return RENAMED_TAGS[key]
    if key.startswith("val_"):
        return f"validation/{key.removeprefix('val_')}"
    return key


def _json_safe(value: Any) -> Any:
    """Infinite ε (non-private training) as the string "inf": JSON has no infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
