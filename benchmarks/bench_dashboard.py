"""The dashboard's pages: load time and size of each (issue 27).

Serves a synthetic finished run (``--rounds`` rounds of ``--nodes`` nodes, in
``rounds.jsonl`` with each node's ε) and one report folder (the run's report page and a
transfer-matrix heatmap) with a real uvicorn on loopback, then fetches each page
``--repeats`` times over HTTP: the page ``/`` (run, nodes and reports sections), its
script, ``/state.json`` (what each poll fetches), ``/federation.html`` (the run's report,
rendered per request) and the report folder's page and image. Prints the
median time and the bytes, with the machine's load (``machine.py``). The pages are
fetched alternately, so each sees the same load. Run:
``python benchmarks/bench_dashboard.py``.
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
from primia.federated.run_view import write_run_report
from primia.transfer.report import heatmap


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
            "train": {
                name: {"epsilon_spent": 0.05 * r, "epsilon_budget": 10.0}
                for name in (names[1:] if r % 5 == 0 else names)
            },
        }
        for r in range(1, rounds + 1)
    ]
    (run_dir / "rounds.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


PAGES = (
    "/",
    "/dashboard.js",
    "/state.json",
    "/federation.html",
    "/reports/0/report.html",
    "/reports/0/heatmap.png",
)


def _report_folder(folder: Path, run_dir: Path, nodes: int) -> None:
    """A report folder as a run leaves one: the run's report page and a transfer-matrix
    heatmap of ``nodes`` sites."""
    folder.mkdir()
    write_run_report(run_dir)
    (folder / "report.html").write_bytes((run_dir / "report.html").read_bytes())
    sites = [f"site{k}" for k in range(nodes)]
    cell = {"value": 0.8, "lower": 0.75, "upper": 0.85}
    matrix = {trained: {tested: cell for tested in sites} for trained in sites}
    heatmap(matrix, sites, title="non-private").save(folder / "heatmap.png")


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
        _report_folder(root / "reports", root / "run", args.nodes)
        app = dashboard_app(run_dir=root / "run", reports=[root / "reports"])
        times: dict[str, list[float]] = {page: [] for page in PAGES}
        sizes: dict[str, int] = {}
        with running_dashboard(app) as url:
            for _ in range(args.repeats):
                for page in PAGES:
                    started = time.perf_counter()
                    with urllib.request.urlopen(f"{url}{page}") as response:
                        sizes[page] = len(response.read())
                    times[page].append(time.perf_counter() - started)
        rows = [(page, statistics.median(times[page]) * 1000, sizes[page]) for page in PAGES]
    share = watch.foreign_share()
    print(
        f"{os.cpu_count()} CPUs, load {load_average()}; other programs used "
        f"{'n/a' if share is None else f'{share:.0%}'} of the CPUs meanwhile"
    )
    print(f"run of {args.rounds} rounds x {args.nodes} nodes, median of {args.repeats} fetches")
    for page, milliseconds, size in rows:
        print(f"{page:<26} {milliseconds:7.1f} ms  {size / 1024:7.1f} KiB")


if __name__ == "__main__":
    main()
