"""docs/architecture.md's picture of the layers is the one the code draws (issue 28)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_layers_picture_is_current() -> None:
    check = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "layers.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert check.returncode == 0, check.stdout + check.stderr
