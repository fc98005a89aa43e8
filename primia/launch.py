"""Start primia commands (or parties) as child processes, and stop them: for the demos.

Each child runs ``python -m primia ...`` with one OpenMP thread, its output in a log file,
in a session of its own so that Ctrl-C reaches the demo, which then stops the children.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (another process may take it before it is used)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def start_primia(name: str, arguments: list[str], out: Path, logs: Path) -> subprocess.Popen[bytes]:
    """Run ``primia ARGUMENTS`` in ``out``, its output in ``logs/NAME.log``."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    with open(logs / f"{name}.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "primia", *arguments],
            cwd=out,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,  # Ctrl-C reaches the demo, which stops the children
        )


def stop_all(children: Iterable[subprocess.Popen[bytes]]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    processes = list(children)
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def tail(log: Path, lines: int = 15) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return "\n".join(text.splitlines()[-lines:])
