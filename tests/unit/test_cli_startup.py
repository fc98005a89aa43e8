"""``primia --version`` and ``--help`` start without torch; the shared-machine thread default."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from primia.cli.commands import COMMANDS
from primia.errors import ConfigError
from primia.threads import default_threads, resolve_threads, set_torch_threads

PROBE = """
import sys
from primia.cli import main
try:
    main([{flag!r}])
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "numpy", "primia.demo", "opacus", "grpc") if m in sys.modules)
print("heavy:", ",".join(heavy))
"""


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_version_and_help_import_no_torch(flag: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(flag=flag)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.stdout.strip().splitlines()[-1] == "heavy:", done.stdout
    if flag == "--help":
        assert all(name in done.stdout for name in COMMANDS)


def test_the_thread_default_is_conservative(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("primia.threads.available_cores", lambda: 2)
    assert default_threads() == 1
    monkeypatch.setattr("primia.threads.available_cores", lambda: 64)
    assert default_threads() == 4
    assert resolve_threads(3) == 3 and resolve_threads(0) is None  # 0: PyTorch's own
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert default_threads() is None  # PyTorch already follows the variable
    with pytest.raises(ConfigError, match="--threads -1"):
        set_torch_threads(-1)
