"""The vectorised bootstrap: 1,000 resamples × 5 labels × 10,000 samples (goal: < 2 s).

Times :func:`primia.evaluate.evaluation.evaluate_scores` end to end (Youden thresholds,
resample counts, every metric on every resample, intervals) against a plain loop that
computes the same AUROCs one resample at a time (rank-based, scipy), on a sample of the
resamples, and prints the ratio.

    python benchmarks/bench_bootstrap.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from machine import CpuWatch, load_average
from scipy.stats import rankdata

from primia.data.dataset import Task
from primia.evaluate.bootstrap import resample_counts
from primia.evaluate.evaluation import evaluate_scores
from primia.evaluate.metrics import Scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--labels", type=int, default=5)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    targets = rng.random((args.samples, args.labels)) < 0.3
    probabilities = 1 / (1 + np.exp(-rng.normal(1.5 * targets, 1.0)))
    scores = Scores(
        probabilities, targets, Task.MULTILABEL, tuple(f"l{k}" for k in range(args.labels))
    )
    watch = CpuWatch()
    times = []
    for repeat in range(args.repeats):
        started = time.perf_counter()
        evaluation = evaluate_scores(
            scores, scores, resamples=args.resamples, seed=repeat, subgroups=False
        )
        times.append(time.perf_counter() - started)
    vectorised = min(times)

    sample = 20
    counts = resample_counts(args.samples, sample, seed=0)
    started = time.perf_counter()
    for row in counts:
        indices = np.repeat(np.arange(args.samples), row.astype(np.int64))
        for k in range(args.labels):
            _loop_auroc(probabilities[indices, k], targets[indices, k])
    loop = (time.perf_counter() - started) / sample * args.resamples

    print(
        f"{os.cpu_count()} CPUs, load {load_average()}; other programs used "
        f"{_share(watch.foreign_share())} of the CPUs meanwhile"
    )
    print(
        f"{args.resamples} resamples x {args.labels} labels x {args.samples} samples, "
        f"6 metrics each, intervals included"
    )
    print(
        f"vectorised: {vectorised:.2f} s (best of {args.repeats}: "
        f"{', '.join(f'{t:.2f}' for t in times)})"
    )
    print(f"loop over resamples (AUROC only, from {sample} resamples): {loop:.1f} s")
    print(
        f"loop / vectorised: {loop / vectorised:.0f}x; goal < 2 s: "
        f"{'met' if vectorised < 2 else 'NOT met'}"
    )
    print(f"mean AUROC {evaluation.overall.estimate('auroc')}")
    return 0


def _loop_auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    ranks = rankdata(scores)
    positives = int(positive.sum())
    negatives = len(positive) - positives
    return float(
        (ranks[positive].sum() - positives * (positives + 1) / 2) / (positives * negatives)
    )


def _share(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.0%}"


if __name__ == "__main__":
    sys.exit(main())
