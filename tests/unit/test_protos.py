"""The checked-in gRPC stubs are what ``make proto`` generates from ``protos/``."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_stubs_are_current() -> None:
    check = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "protogen.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert check.returncode == 0, check.stderr
