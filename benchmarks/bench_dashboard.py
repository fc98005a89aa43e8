"""The dashboard's pages: load time and size of ``/`` and ``/state.json`` (issue 27).

Serves a synthetic finished run (``--rounds`` rounds of ``--nodes`` nodes, in
``rounds.jsonl``) and one report folder with a real uvicorn on loopback, then fetches
each page ``--repeats`` times over HTTP; prints the median time and the bytes, with the
machine's load (``machine.py``). Run: ``python benchmarks/bench_dashboard.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from machine import CpuWatch, load_average

from primia.api.dashboard import dashboard_app, running_dashboard


def _write_run(run_dir: Path, rounds: int, nodes: int) -> None:
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"run_id": "bench"}))
    names = [f"site{k}" for k in range(nodes)]
    lines = [
        {
            "round": r,
            "contributors": names[1:] if r % 5 == 0 else names,
            "dropped": {names[0]: "timeout"} if r % 5 == 0 else {},
            "validation": {"loss": 0.7 - r * 0.001, "mean_auroc": 0.5 + r * 0.002},
            "seconds": 1.5,
        }
        for r in range(1, rounds + 1)
    ]
    (run_dir / "rounds.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    watch = CpuWatch()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        _write_run(root / "run", args.rounds, args.nodes)
        (root / "reports").mkdir()
        (root / "reports" / "report.html").write_text("<html></html>")
        app = dashboard_app(run_dir=root / "run", reports=[root / "reports"])
        rows = []
        with running_dashboard(app) as url:
            for page in ("/", "/state.json"):
                times, size = [], 0
                for _ in range(args.repeats):
                    started = time.perf_counter()
                    with urllib.request.urlopen(f"{url}{page}") as response:
                        size = len(response.read())
                    times.append(time.perf_counter() - started)
                rows.append((page, statistics.median(times) * 1000, size))
    share = watch.foreign_share()
    print(
        f"{os.cpu_count()} CPUs, load {load_average()}; other programs used "
        f"{'n/a' if share is None else f'{share:.0%}'} of the CPUs meanwhile"
    )
    print(f"run of {args.rounds} rounds x {args.nodes} nodes, median of {args.repeats} fetches")
    for page, milliseconds, size in rows:
        print(f"{page:<12} {milliseconds:7.1f} ms  {size / 1024:7.1f} KiB")


if __name__ == "__main__":
    main()
