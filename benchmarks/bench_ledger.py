"""The cost of the ledger's hash chain and anchor (issue 22): append one record and read
(verify) a ledger of N records, chained and anchored vs the version-1 format.

Version 1 wrote the JSON lines (keys sorted) atomically and read them back with one
``json.loads`` each. Version 2 also checks each line's canonical form, its SHA-256 link
and its fields, and writes and reads the anchor (a second atomic write, with fsync).
Accounting is left out of both (it is the same, and cached). A and B alternate.

    python benchmarks/bench_ledger.py --records 10 1000
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import load_average

from primia.config import atomic_write_bytes
from primia.train.ledger_chain import Anchor, chain_of, parse, read_anchor, reconcile, write_anchor


def events(count: int) -> list[dict[str, Any]]:
    """A header and ``count - 1`` records, reserves and completes alternating."""
    out: list[dict[str, Any]] = [
        {
            "event": "header",
            "version": 2,
            "ledger_id": "0" * 32,
            "accountant": "prv",
            "budget": {"epsilon": 1e9, "delta": 1e-5},
            "time": "2026-01-01T00:00:00+00:00",
        }
    ]
    for k in range(count - 1):
        release = f"{k // 2:032x}"
        if k % 2 == 0:
            out.append(
                {
                    "event": "reserve",
                    "release_id": release,
                    "noise_multiplier": 1.1,
                    "sample_rate": 0.05,
                    "steps": 60,
                    "epsilon": 1.0,
                    "delta": 1e-5,
                    "description": f"federated round {k // 2}",
                    "time": "2026-01-01T00:00:00+00:00",
                }
            )
        else:
            out.append(
                {
                    "event": "complete",
                    "release_id": release,
                    "steps": 60,
                    "epsilon": 1.0,
                    "time": "2026-01-01T00:00:00+00:00",
                }
            )
    return out


def v1_append(path: Path, records: list[dict[str, Any]]) -> None:
    atomic_write_bytes(
        path, "".join(json.dumps(e, sort_keys=True) + "\n" for e in records).encode()
    )


def v1_read(path: Path) -> int:
    return len([json.loads(line) for line in path.read_text().splitlines() if line.strip()])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, nargs="+", default=[10, 1000])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"load average before: {load_average()}")
    print(
        f"{'N':>6} {'append v1':>10} {'append v2':>10} {'ratio':>6} "
        f"{'read v1':>9} {'verify v2':>10} {'ratio':>6}  (ms, median of {args.repeats})"
    )
    with tempfile.TemporaryDirectory() as scratch:
        for count in args.records:
            records = events(count)
            old, new = Path(scratch) / f"v1-{count}.jsonl", Path(scratch) / f"v2-{count}.jsonl"
            base = chain_of(records[:-1])
            v1_append(old, records)
            chained = base.extended(records[-1])
            atomic_write_bytes(new, chained.text())
            write_anchor(new, Anchor.of(chained, 1.0))
            times: dict[str, list[float]] = {"a1": [], "a2": [], "r1": [], "r2": []}
            for _ in range(args.repeats):
                started = time.perf_counter()
                v1_append(old, records)
                times["a1"].append(time.perf_counter() - started)
                started = time.perf_counter()
                chained = base.extended(records[-1])
                atomic_write_bytes(new, chained.text())
                write_anchor(new, Anchor.of(chained, 1.0))
                times["a2"].append(time.perf_counter() - started)
                started = time.perf_counter()
                v1_read(old)
                times["r1"].append(time.perf_counter() - started)
                started = time.perf_counter()
                anchor = read_anchor(new)
                assert anchor is not None
                reconcile(new, parse(new, new.read_text()), anchor)
                times["r2"].append(time.perf_counter() - started)
            ms = {key: 1000 * statistics.median(value) for key, value in times.items()}
            print(
                f"{count:>6} {ms['a1']:>10.2f} {ms['a2']:>10.2f} {ms['a2'] / ms['a1']:>6.2f} "
                f"{ms['r1']:>9.2f} {ms['r2']:>10.2f} {ms['r2'] / ms['r1']:>6.2f}"
            )
    print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
