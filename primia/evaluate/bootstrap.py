"""The nonparametric bootstrap over test samples: resamples, intervals, paired p-values.

A resample draws N of the N test samples with replacement; it is represented by how many
times each sample was drawn (a row of counts), so a metric of every resample is one
weighted computation (:func:`primia.evaluate.metrics.metric_table`).

* **Interval**: the percentile interval — the (1−c)/2 and (1+c)/2 quantiles of the
  metric over the resamples (resamples where it is undefined are left out).
* **Paired p-value** of two models A and B scored on the *same* samples with the *same*
  resamples: with d = m_A − m_B on the data and d_b the same difference on resample b,
  the bootstrap distribution of d_b − d stands in for the difference's distribution under
  the null hypothesis of no difference, and p = (1 + #{b : |d_b − d| ≥ |d|}) / (1 + B),
  two-sided. Identical models give p = 1; the smallest possible p is 1/(B + 1).

Pairing needs the same resamples for both models: the same ``seed`` and the same samples
in the same order. The same holds across test sites for differences of differences (the
on-site vs cross-site drop of a DP model minus that of a non-DP model): every site's
resamples are independent of the others', and replicate b of each site combines into
replicate b of the whole.
"""

from __future__ import annotations

import hashlib
import hmac

import numpy as np

from primia.evaluate.metrics import FloatArray

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95


def resample_counts(samples: int, resamples: int, seed: int | bytes) -> np.ndarray:
    """``float32[resamples, samples]``: how often each sample is drawn in each resample.

    The same (samples, resamples, seed) always gives the same counts. ``seed`` may be
    bytes (a node mixes a secret into it, see :func:`secret_seed`).
    """
    if samples < 1:
        raise ValueError("the bootstrap needs at least one sample")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    rng = np.random.default_rng(_entropy(seed))
    draws = rng.integers(0, samples, size=(resamples, samples))
    offsets = (np.arange(resamples) * samples)[:, None]
    counts = np.bincount((draws + offsets).ravel(), minlength=resamples * samples)
    return counts.reshape(resamples, samples).astype(np.float32)


def secret_seed(key: bytes, *context: str) -> bytes:
    """A resampling seed only the holder of ``key`` can reproduce: HMAC-SHA256 of the
    context. A node uses it so that the coordinator, who sees replicates of metrics, does
    not know which samples made each replicate (with known resamples, enough replicates of
    a linear metric such as accuracy solve for every sample's correctness)."""
    return hmac.new(key, "\x1f".join(context).encode(), hashlib.sha256).digest()


def interval(
    replicates: FloatArray, confidence: float = DEFAULT_CONFIDENCE
) -> tuple[FloatArray, FloatArray]:
    """The percentile interval over axis 0 of ``replicates``; NaN where no resample has
    the metric defined."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    tail = (1 - confidence) / 2 * 100
    values = np.asarray(replicates, dtype=np.float64)
    defined = np.asarray(np.isfinite(values).any(axis=0))
    safe = np.where(defined[np.newaxis], values, 0.0)
    with np.errstate(all="ignore"):
        lower, upper = np.nanpercentile(safe, [tail, 100 - tail], axis=0)
    return np.where(defined, lower, np.nan), np.where(defined, upper, np.nan)


def paired_p_value(
    value_a: FloatArray | float,
    value_b: FloatArray | float,
    replicates_a: FloatArray,
    replicates_b: FloatArray,
) -> FloatArray:
    """Two-sided paired bootstrap p-value of m_A = m_B (see the module docstring),
    elementwise over the trailing axes; NaN where the difference is undefined."""
    observed = np.asarray(value_a, dtype=np.float64) - np.asarray(value_b, dtype=np.float64)
    differences = np.asarray(replicates_a, dtype=np.float64) - np.asarray(
        replicates_b, dtype=np.float64
    )
    defined = np.isfinite(differences)
    extreme = defined & (np.abs(differences - observed) >= np.abs(observed) - 1e-12)
    count = defined.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_value = (1 + extreme.sum(axis=0)) / (1 + count)
    return np.where(np.isfinite(observed) & (count > 0), p_value, np.nan)


def _entropy(seed: int | bytes) -> int:
    if isinstance(seed, bytes):
        return int.from_bytes(hashlib.sha256(seed).digest(), "little")
    if seed < 0:
        raise ValueError(f"seed must be 0 or positive, got {seed}")
    return seed
