"""One model's evaluation (thresholds, intervals, subgroups), comparisons, the codec and
the files an evaluation is stored in."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from primia.data.dataset import Task
from primia.errors import DataError
from primia.evaluate.evaluation import compare, evaluate_scores
from primia.evaluate.metrics import MEAN, METRICS, Scores
from primia.evaluate.store import evaluation_exists, load_evaluation, save_evaluation
from primia.evaluate.subgroups import ALL, age_band_names, subgroup_masks
from primia.rpc.evaluation_codec import DetailError, detailed_from_proto, detailed_to_proto

LABELS = ("pneumonia", "effusion")


def simulated(n: int, separation: float, seed: int) -> Scores:
    rng = np.random.default_rng(seed)
    targets = rng.random((n, 2)) < 0.4
    logits = rng.normal(separation * targets, 1.0)
    return Scores(
        probabilities=1 / (1 + np.exp(-logits)),
        targets=targets,
        task=Task.MULTILABEL,
        label_names=LABELS,
        attributes={
            "sex": np.array(["F", "M", ""] * (n // 3) + ["F"] * (n % 3), dtype=object),
            "age": np.concatenate([rng.uniform(1, 90, n - 1), [np.nan]]),
        },
    )


def test_evaluation_has_every_metric_with_an_interval_and_subgroups() -> None:
    evaluation = evaluate_scores(simulated(300, 2.0, 0), simulated(600, 2.0, 1), resamples=300)
    overall = evaluation.overall
    assert overall.columns == (*LABELS, MEAN) and overall.metrics == METRICS
    assert overall.replicates.shape == (300, len(METRICS), 3)
    for metric in METRICS:
        estimate = overall.estimate(metric)
        assert 0 <= estimate.lower <= estimate.value <= estimate.upper <= 1, metric
    assert overall.estimate("auroc").value > 0.8
    assert {"sex=F", "sex=M", "age=<18", "age=18-39", "age=40-64", "age=65+"} <= set(
        evaluation.groups
    )
    assert evaluation.groups["sex=F"].num_examples + evaluation.groups["sex=M"].num_examples < 600
    assert all(0.2 < t < 0.9 for t in evaluation.thresholds)
    document = json.loads(json.dumps(evaluation.as_dict()))
    assert document["groups"]["all"]["metrics"]["f1"]["mean"]["lower"] is not None
    assert "validation" in document["threshold_rule"]


def test_the_same_seed_gives_the_same_intervals() -> None:
    val, test = simulated(200, 1.5, 0), simulated(200, 1.5, 1)
    a = evaluate_scores(val, test, resamples=100, seed=7, subgroups=False)
    b = evaluate_scores(val, test, resamples=100, seed=7, subgroups=False)
    assert (a.overall.replicates == b.overall.replicates).all()
    assert list(a.groups) == ["all"]


def test_compare_finds_the_better_model_and_not_a_copy() -> None:
    rng = np.random.default_rng(3)
    test = simulated(500, 0.0, 4)
    good = Scores(
        1 / (1 + np.exp(-rng.normal(3.0 * test.targets, 1.0))),
        test.targets,
        test.task,
        LABELS,
        test.attributes,
    )
    a = evaluate_scores(good, good, resamples=500, seed=1)
    b = evaluate_scores(test, test, resamples=500, seed=1)
    comparison = compare(a, b)
    auroc = METRICS.index("auroc")
    overall = comparison.groups["all"]
    assert overall.values[auroc, -1] > 0.3 and overall.p_values[auroc, -1] < 0.01
    itself = compare(a, a).groups["all"]
    assert (itself.p_values[np.isfinite(itself.p_values)] == 1).all()
    assert json.dumps(comparison.as_dict())


def test_compare_refuses_evaluations_of_different_samples() -> None:
    a = evaluate_scores(simulated(100, 1, 0), simulated(100, 1, 1), resamples=50)
    b = evaluate_scores(simulated(100, 1, 0), simulated(120, 1, 1), resamples=50)
    with pytest.raises(DataError, match="same samples"):
        compare(a, b)


def test_empty_test_split_is_a_clear_error() -> None:
    empty = simulated(3, 1, 0).subset(np.zeros(3, dtype=bool))
    with pytest.raises(DataError, match="test split is empty"):
        evaluate_scores(simulated(30, 1, 0), empty)


def test_age_bands_and_sex_groups() -> None:
    assert age_band_names((18, 40, 65)) == ["<18", "18-39", "40-64", "65+"]
    masks = subgroup_masks(
        {
            "sex": np.array(["F", "M", "", "F"], dtype=object),
            "age": np.array([17.0, 18.0, np.nan, 70.0]),
        }
    )
    assert masks["sex=F"].tolist() == [True, False, False, True]
    assert masks["age=<18"].tolist() == [True, False, False, False]
    assert masks["age=18-39"].tolist() == [False, True, False, False]
    assert masks["age=65+"].tolist() == [False, False, False, True]
    assert "age=40-64" not in masks  # empty groups are left out


def test_store_round_trip(tmp_path: Path) -> None:
    evaluation = evaluate_scores(simulated(100, 1, 0), simulated(150, 1, 1), resamples=40)
    stem = tmp_path / "cells" / "site0.eps1__site1"
    assert not evaluation_exists(stem)
    save_evaluation(stem, evaluation, meta={"model": "site0.eps1"})
    assert evaluation_exists(stem)
    loaded, meta = load_evaluation(stem)
    assert meta == {"model": "site0.eps1"}
    assert set(loaded.groups) == set(evaluation.groups)
    for name, table in evaluation.groups.items():
        np.testing.assert_array_equal(loaded.groups[name].values, table.values)
        np.testing.assert_array_equal(loaded.groups[name].replicates, table.replicates)
    np.testing.assert_array_equal(loaded.thresholds, evaluation.thresholds)


def test_codec_round_trip_and_refusals() -> None:
    evaluation = evaluate_scores(simulated(100, 1, 0), simulated(150, 1, 1), resamples=40)
    message = detailed_to_proto(evaluation)
    decoded = detailed_from_proto(message, label_names=LABELS, resamples=40)
    np.testing.assert_array_equal(decoded.overall.values, evaluation.overall.values)
    np.testing.assert_array_equal(decoded.overall.replicates, evaluation.overall.replicates)
    assert list(decoded.groups) == list(evaluation.groups)

    with pytest.raises(DetailError, match="resamples"):
        detailed_from_proto(message, label_names=LABELS, resamples=41)
    with pytest.raises(DetailError, match="columns"):
        detailed_from_proto(message, label_names=("a", "b"), resamples=40)
    broken = detailed_to_proto(evaluation)
    broken.groups[0].values = broken.groups[0].values[:-8]
    with pytest.raises(DetailError, match="bytes"):
        detailed_from_proto(broken, label_names=LABELS, resamples=40)
    outside = detailed_to_proto(evaluation)
    outside.groups[0].values = np.full(len(METRICS) * 3, 1.5, dtype="<f8").tobytes()
    with pytest.raises(DetailError, match="outside"):
        detailed_from_proto(outside, label_names=LABELS, resamples=40)
    no_all = detailed_to_proto(evaluation)
    del no_all.groups[0]
    with pytest.raises(DetailError, match="'all'"):
        detailed_from_proto(no_all, label_names=LABELS, resamples=40)
    flood = detailed_to_proto(evaluation)  # a node's 100,000 metric names
    flood.metrics.extend(["x" * 1000] * 100_000)
    with pytest.raises(DetailError, match=r"100006 in all\)\] are not") as refused:
        detailed_from_proto(flood, label_names=LABELS, resamples=40)
    assert len(str(refused.value)) < 1200  # before: the whole list, logged and recorded


def test_the_mean_of_a_replicate_averages_the_same_labels_as_the_estimate() -> None:
    # label b has one positive, scored lowest (AUROC 0); label a separates perfectly (1):
    # the estimate is 0.5. A resample without b's positive must not count as 1.0 (a mean
    # of a alone), which pinned the interval's lower end at the estimate ([0.5, 1.0]).
    targets = np.zeros((10, 2), dtype=bool)
    targets[:5, 0] = True
    targets[0, 1] = True
    scores = np.where(targets, 0.8, 0.3)
    scores[0, 1] = 0.1
    split = Scores(scores, targets, Task.MULTILABEL, ("a", "b"))
    table = evaluate_scores(split, split, resamples=500, seed=1, subgroups=False).groups[ALL]
    row, mean = table.metrics.index("auroc"), table.columns.index(MEAN)
    replicates = table.replicates[:, row, mean]
    assert table.values[row, mean] == pytest.approx(0.5)
    without_b = ~np.isfinite(table.replicates[:, row, 1])
    assert without_b.any() and np.isnan(replicates[without_b]).all()
    assert np.nanmax(replicates) == pytest.approx(0.5)
