"""A progress bar for training: steps of the current epoch, the loss, ε spent so far."""

from __future__ import annotations

import math
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainingProgress:
    """Shows progress on the terminal when ``enabled``; does nothing otherwise."""

    def __init__(self, *, enabled: bool, epochs: int, steps_per_epoch: int) -> None:
        self._epochs = epochs
        self._console = Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self._console,
            disable=not enabled,
            transient=False,
        )
        self._task: TaskID = self._progress.add_task(
            "train", total=epochs * steps_per_epoch, epoch=1, epochs=epochs, loss="-"
        )
        self._enabled = enabled

    def step(self, loss: float) -> None:
        self._progress.update(self._task, advance=1, loss=f"{loss:.4f}")

    def epoch_done(self, epoch: int, mean_auroc: float | None, epsilon: float) -> None:
        if not self._enabled:
            return
        auroc = "n/a" if mean_auroc is None else f"{mean_auroc:.3f}"
        spent = "∞ (non-private)" if math.isinf(epsilon) else f"{epsilon:.2f}"
        self._progress.console.print(
            f"epoch {epoch}/{self._epochs}: validation AUROC {auroc}, ε spent {spent}"
        )
        self._progress.update(self._task, epoch=min(epoch + 1, self._epochs))

    def __enter__(self) -> TrainingProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.stop()
