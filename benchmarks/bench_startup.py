"""Start-up of the ``primia`` command (issue 29): ``primia --version`` and ``--help``, each a
fresh interpreter, against importing what every command imported before the CLI loaded
commands lazily (all command modules: torch, Opacus, gRPC, the demo). A and B alternate.

    python benchmarks/bench_startup.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import CpuWatch, load_average

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {
    "primia --version": [sys.executable, "-m", "primia", "--version"],
    "primia --help": [sys.executable, "-m", "primia", "--help"],
    "import every command module (before)": [
        sys.executable,
        "-c",
        "import importlib; from primia.cli.commands import COMMANDS; "
        "[importlib.import_module('primia.cli.' + c.module) for c in COMMANDS.values()]",
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    seconds: dict[str, list[float]] = {name: [] for name in COMMANDS}
    watch = CpuWatch()
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, env=environment)
            seconds[name].append(time.perf_counter() - started)
    foreign = watch.foreign_share()
    for name, values in seconds.items():
        print(f"{name:<40} median {statistics.median(values):.2f} s (min {min(values):.2f})")
    share = "n/a" if foreign is None else f"{foreign:.0%}"
    print(f"load average {load_average()}; other programs used {share} of the CPUs meanwhile")


if __name__ == "__main__":
    main()
