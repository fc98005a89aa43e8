"""The bootstrap: resamples, interval coverage on a case of known AUROC, paired p-values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from primia.evaluate.bootstrap import interval, paired_p_value, resample_counts, secret_seed
from primia.evaluate.metrics import weighted_auroc


def test_resamples_draw_n_of_n_and_follow_the_seed() -> None:
    counts = resample_counts(50, 200, seed=3)
    assert counts.shape == (200, 50) and (counts.sum(axis=1) == 50).all()
    assert (resample_counts(50, 200, seed=3) == counts).all()
    assert (resample_counts(50, 200, seed=4) != counts).any()
    # About 1 - 1/e of the samples appear in a resample.
    assert 0.58 < (counts > 0).mean() < 0.68
    keyed = resample_counts(50, 10, seed=secret_seed(b"k" * 32, "test", "0"))
    assert (keyed != resample_counts(50, 10, seed=secret_seed(b"j" * 32, "test", "0"))).any()


def test_resample_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="sample"):
        resample_counts(0, 10, seed=0)
    with pytest.raises(ValueError, match="resamples"):
        resample_counts(10, 0, seed=0)
    with pytest.raises(ValueError, match="seed"):
        resample_counts(10, 10, seed=-1)


def test_the_95_percent_interval_covers_a_known_auroc() -> None:
    """Positives ~ N(d, 1), negatives ~ N(0, 1): AUROC = Φ(d/√2). Over 200 simulated
    test sets, the percentile interval should hold the true AUROC about 95% of the time."""
    rng = np.random.default_rng(0)
    separation = 1.0
    truth = norm.cdf(separation / np.sqrt(2))
    covered = 0
    trials = 200
    for trial in range(trials):
        positive = rng.random(300) < 0.3
        scores = rng.normal(separation * positive, 1.0)
        replicates = weighted_auroc(scores, positive, resample_counts(300, 400, seed=trial))
        lower, upper = interval(replicates)
        covered += bool(lower <= truth <= upper)
    assert 0.89 <= covered / trials <= 0.99


def test_interval_ignores_undefined_resamples() -> None:
    replicates = np.array([[0.1, np.nan], [0.2, np.nan], [np.nan, np.nan], [0.3, np.nan]])
    lower, upper = interval(replicates, confidence=0.5)
    assert 0.1 < lower[0] < upper[0] < 0.3
    assert np.isnan(lower[1]) and np.isnan(upper[1])


def test_p_value_is_one_for_identical_models_and_small_for_different_ones() -> None:
    rng = np.random.default_rng(1)
    positive = rng.random(400) < 0.4
    good = rng.normal(2.0 * positive, 1.0)
    poor = rng.normal(0.3 * positive, 1.0)
    counts = resample_counts(400, 1000, seed=2)
    observed = np.ones((1, 400))
    good_value, poor_value = (
        weighted_auroc(good, positive, observed),
        weighted_auroc(poor, positive, observed),
    )
    good_replicates = weighted_auroc(good, positive, counts)
    poor_replicates = weighted_auroc(poor, positive, counts)
    same = paired_p_value(good_value, good_value, good_replicates, good_replicates)
    assert same[0] == 1.0
    different = paired_p_value(good_value, poor_value, good_replicates, poor_replicates)
    assert different[0] == pytest.approx(1 / 1001)


def test_p_value_is_large_for_two_equally_good_models() -> None:
    rng = np.random.default_rng(5)
    positive = rng.random(300) < 0.5
    latent = rng.normal(1.0 * positive, 1.0)
    a = latent + rng.normal(0, 0.3, 300)
    b = latent + rng.normal(0, 0.3, 300)
    counts = resample_counts(300, 1000, seed=0)
    ones = np.ones((1, 300))
    p = paired_p_value(
        weighted_auroc(a, positive, ones),
        weighted_auroc(b, positive, ones),
        weighted_auroc(a, positive, counts),
        weighted_auroc(b, positive, counts),
    )
    assert p[0] > 0.05


def test_p_value_is_nan_where_the_metric_is_undefined() -> None:
    p = paired_p_value(
        np.array([np.nan]), np.array([0.5]), np.full((5, 1), np.nan), np.full((5, 1), 0.5)
    )
    assert np.isnan(p[0])
