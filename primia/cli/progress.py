"""The progress bar of the long commands (transfer matrix, re-identification, anonymizer)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def step_progress(console: Console) -> Progress:
    """A bar of steps (epochs, models, cells) with its description, count and elapsed time;
    silent when the output is not a terminal (logs and pipes get log lines instead)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )
