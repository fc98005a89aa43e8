"""The progress bar of the long commands (transfer matrix, re-identification, anonymizer)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


@contextmanager
def step_progress(console: Console) -> Iterator[Progress]:
    """A bar of steps (epochs, models, cells) with its description, count and elapsed time;
    silent when the output is not a terminal (logs and pipes get log lines instead).

    While the bar is drawn, log records go through rich's console, which prints them above
    the bar: the root logger's stream handlers hold the ``sys.stderr`` of start-up, and
    writing there directly would glue the lines to the bar.
    """
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    with progress:
        handlers = [
            handler
            for handler in logging.getLogger().handlers
            if type(handler) is logging.StreamHandler
        ]
        # sys.stderr is rich's redirecting proxy now (Progress(redirect_stderr=True))
        previous = [(handler, handler.setStream(sys.stderr)) for handler in handlers]
        try:
            yield progress
        finally:
            for handler, stream in previous:
                if stream is not None:
                    handler.setStream(stream)
