"""A whole federated round with secure aggregation vs plaintext, over the real gRPC path.

The issue's figure: "a whole federated round with secure aggregation vs plaintext over the
real gRPC path, 10 nodes, ResNet-18: goal ≤ 1.3×". The script runs the same federation
twice (see ``bench_round_overhead.py`` for the set-up: a coordinator in this process, N
node processes with one torch thread each, mutual TLS on loopback, DP-SGD on a ResNet-18
at 32 px, about 45 MB of float32 weights), once with ``aggregation = "plaintext"`` and
once with ``aggregation = "secure"``, and compares the rounds after the warm-up round:

* ``round s``: a round's wall time at the coordinator (training, secure aggregation or
  plaintext upload, and the validation evaluation);
* ``train s``: the slowest node's training task, until its update is ready to send
  (with secure aggregation: encoded into the ring and masked); ``rest s`` = round s −
  train s: what aggregation (and evaluation) add on top of training;
* the ratio secure / plaintext of the mean round time (the issue's figure), and of the
  mean ``rest`` (what secure aggregation costs beyond the plaintext protocol).

All processes share this machine's cores, so every node's masking (its pairwise masks
over 11.2 M values, one AES-CTR keystream per peer) competes with the others' for the
same cores: on a real deployment each node masks on its own machine.

    python benchmarks/bench_secure_round.py
    python benchmarks/bench_secure_round.py --nodes 3 --rounds 3
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench_round_overhead import Aggregation, RunResult, run_federation

from primia.memory import reuse_freed_memory

GOAL = 1.3


def _means(result: RunResult) -> tuple[float, float, float]:
    measured = result.rounds[1:]
    return (
        statistics.mean(t.seconds for t in measured),
        statistics.mean(t.train for t in measured),
        statistics.mean(t.overhead for t in measured),
    )


def main(argv: list[str] | None = None) -> int:
    reuse_freed_memory()  # the coordinator runs in this process: as `primia coordinator serve`
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=10, help="nodes in the federation")
    parser.add_argument("--rounds", type=int, default=4, help="rounds; round 1 is warm-up")
    parser.add_argument("--patients-per-site", type=int, default=10, help="2 images each")
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be at least 2: round 1 is warm-up and not reported")
    logging.basicConfig(level=logging.INFO, handlers=[logging.NullHandler()], force=True)
    print(
        f"Secure vs plaintext round: {args.nodes} nodes, ResNet-18, mutual TLS on loopback, "
        f"{os.cpu_count()} CPU cores shared by all processes; rounds 2..{args.rounds}."
    )
    print(f"{'aggregation':>11} {'round s':>8} {'train s':>8} {'rest s':>7}")
    means: dict[str, tuple[float, float, float]] = {}
    aggregations: tuple[Aggregation, ...] = ("plaintext", "secure")
    with tempfile.TemporaryDirectory(prefix="primia-secure-round-") as temporary:
        for aggregation in aggregations:
            work = Path(temporary) / aggregation
            work.mkdir()
            result = run_federation(
                work, args.nodes, args.rounds, args.patients_per_site, aggregation
            )
            means[aggregation] = _means(result)
            round_s, train_s, rest_s = means[aggregation]
            print(f"{aggregation:>11} {round_s:8.2f} {train_s:8.2f} {rest_s:7.2f}", flush=True)
    ratio = means["secure"][0] / means["plaintext"][0]
    rest_ratio = means["secure"][2] / means["plaintext"][2]
    met = "met" if ratio <= GOAL else "NOT met"
    print(
        f"\nround time secure / plaintext: {ratio:.2f}x (goal <= {GOAL}x: {met}); "
        f"time beyond training, secure / plaintext: {rest_ratio:.2f}x "
        f"(+{means['secure'][2] - means['plaintext'][2]:.2f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
