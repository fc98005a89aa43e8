"""Model quality under secure aggregation: test AUROC of the demo federation, secure vs plaintext.

Secure aggregation changes what the coordinator sees, not what it computes: the sum it
recovers is the fixed-point sum of the updates, exact up to the ring's resolution
(clip·n/2^31 per value, stochastically rounded, so unbiased). This script checks that
the trained model is as good: it runs the demo federation (``primia demo``: three
synthetic hospitals, DP-SGD at every node, processes on loopback with mutual TLS) with
``--aggregation plaintext`` and ``secure`` for each seed (the seed fixes the data and
the initial model; DP noise differs between any two runs), and prints each run's pooled
test AUROC, the mean and standard deviation per aggregation, and the paired difference.

    python benchmarks/bench_secure_auroc.py               # seeds 0 1 2, about 15 min on 2 cores
    python benchmarks/bench_secure_auroc.py --seeds 0 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from primia.demo.federation import DemoSettings, run_demo
from primia.memory import reuse_freed_memory


def main(argv: list[str] | None = None) -> int:
    reuse_freed_memory()  # as the primia command does
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=DemoSettings.rounds)
    args = parser.parse_args(argv)
    print(f"{'seed':>4} {'plaintext':>9} {'secure':>7} {'difference':>10}")
    auroc: dict[str, list[float]] = {"plaintext": [], "secure": []}
    with tempfile.TemporaryDirectory(prefix="primia-secure-auroc-") as temporary:
        for seed in args.seeds:
            for aggregation in ("plaintext", "secure"):
                settings = DemoSettings(
                    out=Path(temporary) / f"{aggregation}-{seed}",
                    aggregation=aggregation,
                    rounds=args.rounds,
                    seed=seed,
                    progress=False,
                )
                result = run_demo(settings)
                auroc[aggregation].append(float(result.result.test.mean_auroc))
            plain, secure = auroc["plaintext"][-1], auroc["secure"][-1]
            print(f"{seed:>4} {plain:9.3f} {secure:7.3f} {secure - plain:+10.3f}", flush=True)
    differences = [s - p for s, p in zip(auroc["secure"], auroc["plaintext"], strict=True)]
    for aggregation, values in auroc.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{aggregation:>9}: test AUROC {statistics.mean(values):.3f} ± {spread:.3f}")
    print(f"secure - plaintext, paired by seed: {statistics.mean(differences):+.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
