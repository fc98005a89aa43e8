"""Shared fixtures: a tiny synthetic multi-site dataset made once per test session."""

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from primia.data.synth import SynthConfig, write_dataset

# Two cores in CI: keep PyTorch from oversubscribing them when tests run in one process.
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 sites × 8 patients × 3 images at 32 px: enough for splits, fast to train on."""
    root = tmp_path_factory.mktemp("synth")
    write_dataset(
        root,
        SynthConfig(sites=3, patients_per_site=8, images_per_patient=3, size=32, seed=1),
        progress=False,
    )
    return root


@pytest.fixture(autouse=True)
def _drop_terminal_log_handlers() -> Iterator[None]:
    """``primia.cli.main`` sends the log to the terminal (``logging.basicConfig``), which
    in a test is that test's captured stderr, closed when the test ends: a log line from
    a later test (e.g. a node thread's) would then fail with "I/O operation on closed
    file". pytest's own handlers are subclasses of StreamHandler and stay."""
    yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler:
            root.removeHandler(handler)
