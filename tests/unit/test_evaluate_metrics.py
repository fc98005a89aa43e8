"""Metrics at a threshold and the weighted AUROC, against scikit-learn on fixed inputs.

The expected values were computed with scikit-learn 1.9.1 (``roc_auc_score`` with and
without ``sample_weight``, ``roc_curve(drop_intermediate=False)`` and the arg-max of
TPR − FPR for Youden's threshold, ``accuracy_score``, ``recall_score``,
``precision_score``, ``f1_score``) on the inputs below; scikit-learn is not a dependency.
"""

from __future__ import annotations

import numpy as np
import pytest

from primia.data.dataset import Task
from primia.evaluate.metrics import MEAN, METRICS, Scores, metric_table, youden_thresholds

# fmt: off
TARGETS = [
    [
        0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0,
        0, 1, 0, 1, 1, 0, 0, 0, 0, 1, 1
    ],
    [
        0, 1, 0, 1, 1, 0, 0, 0, 0, 0, 1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0,
        1, 0, 1, 1, 0, 0, 0, 0, 1, 0, 1
    ],
    [
        0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1, 0,
        0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0
    ],
]
SCORES = [
    [
        0.39, 0.63, 0.72, 0.0, 0.81, 0.6, 0.3, 0.87, 0.49, 0.6, 0.35, 0.54, 0.29, 0.98, 0.42,
        0.31, 0.5, 0.2, 0.32, 0.62, 0.34, 0.78, 0.35, 0.73, 0.54, 0.46, 0.53, 0.1, 0.52, 0.12,
        0.45, 0.02, 0.66, 0.48, 0.16, 0.34, 0.22, 0.39, 0.72, 0.83
    ],
    [
        0.37, 0.25, 0.0, 0.8, 0.68, 0.64, 0.32, 0.24, 0.22, 0.32, 0.51, 0.35, 0.37, 0.52, 0.63,
        0.52, 0.35, 0.74, 0.43, 0.25, 0.26, 0.59, 0.89, 0.24, 0.54, 0.51, 0.56, 0.52, 0.73,
        0.31, 0.35, 0.23, 0.6, 0.05, 0.02, 0.43, 0.15, 0.49, 0.76, 0.63
    ],
    [
        0.23, 0.12, 0.52, 0.18, 0.04, 0.34, 0.15, 0.64, 0.09, 0.54, 0.58, 0.27, 0.19, 0.14,
        0.06, 0.0, 0.36, 0.24, 0.11, 0.41, 0.25, 0.32, 0.49, 0.07, 0.62, 0.52, 0.95, 0.75, 0.65,
        0.51, 0.52, 0.4, 0.66, 0.32, 0.45, 0.15, 0.17, 0.42, 0.07, 0.35
    ],
]
WEIGHTS = [
    3, 1, 3, 2, 2, 0, 2, 1, 3, 0, 0, 2, 2, 3, 2, 1, 1, 1, 2, 2, 1, 0, 2, 0, 0, 1, 3, 1, 2, 0, 1,
    3, 3, 2, 3, 1, 0, 0, 0, 3
]
# fmt: on
SKLEARN = [
    {
        "auroc": 0.929945054945055,
        "weighted_auroc": 0.9369047619047619,
        "youden": 0.63,
        "accuracy": 0.9,
        "sensitivity": 0.7142857142857143,
        "specificity": 1.0,
        "precision": 1.0,
        "f1": 0.8333333333333334,
        "weighted_f1": 0.8,
        "weighted_accuracy": 0.864406779661017,
    },
    {
        "auroc": 0.7276214833759591,
        "weighted_auroc": 0.8122119815668203,
        "youden": 0.37,
        "accuracy": 0.7,
        "sensitivity": 0.8235294117647058,
        "specificity": 0.6086956521739131,
        "precision": 0.6086956521739131,
        "f1": 0.7,
        "weighted_f1": 0.7741935483870968,
        "weighted_accuracy": 0.7627118644067796,
    },
    {
        "auroc": 0.9852941176470589,
        "weighted_auroc": 0.9950980392156862,
        "youden": 0.58,
        "accuracy": 0.975,
        "sensitivity": 1.0,
        "specificity": 0.9705882352941176,
        "precision": 0.8571428571428571,
        "f1": 0.9230769230769231,
        "weighted_f1": 0.8888888888888888,
        "weighted_accuracy": 0.9661016949152542,
    },
]
# fmt: off
MC_TARGETS = [
    2, 0, 1, 0, 2, 0, 1, 0, 2, 2, 2, 0, 2, 0, 2, 2, 1, 1, 2, 0, 0, 1, 0, 2, 2, 1, 0, 2, 1, 0
]
MC_PROBS = [
    [0.3982, 0.0581, 0.5436], [0.7451, 0.0138, 0.2411], [0.2221, 0.6975, 0.0804],
    [0.3352, 0.1351, 0.5297], [0.0936, 0.0666, 0.8398], [0.65, 0.2823, 0.0677],
    [0.3327, 0.494, 0.1733], [0.6924, 0.1457, 0.1619], [0.1742, 0.1828, 0.6431],
    [0.5129, 0.1971, 0.29], [0.0384, 0.0363, 0.9253], [0.7174, 0.1701, 0.1125],
    [0.0424, 0.1203, 0.8373], [0.5346, 0.232, 0.2334], [0.3218, 0.0586, 0.6195],
    [0.1037, 0.59, 0.3064], [0.1188, 0.8325, 0.0487], [0.1133, 0.6804, 0.2063],
    [0.0166, 0.0709, 0.9125], [0.6426, 0.2498, 0.1076], [0.8582, 0.0659, 0.0759],
    [0.4704, 0.1438, 0.3858], [0.8044, 0.0835, 0.1121], [0.752, 0.0877, 0.1604],
    [0.0195, 0.0788, 0.9017], [0.6375, 0.2587, 0.1038], [0.4326, 0.3529, 0.2146],
    [0.2693, 0.2924, 0.4382], [0.184, 0.64, 0.1761], [0.3514, 0.5074, 0.1412],
]
# fmt: on
MC_SKLEARN = {
    "auroc": [0.8995215311004785, 0.8881987577639752, 0.9351851851851851],
    "sensitivity": [0.8181818181818182, 0.7142857142857143, 0.75],
    "precision": [0.6923076923076923, 0.7142857142857143, 0.9],
    "f1": [0.75, 0.7142857142857143, 0.8181818181818182],
    "f1_macro": 0.760822510822511,
}
LABELS = ("pneumonia", "effusion", "nodule")


def multilabel() -> Scores:
    return Scores(
        probabilities=np.array(SCORES, dtype=np.float64).T,
        targets=np.array(TARGETS, dtype=bool).T,
        task=Task.MULTILABEL,
        label_names=LABELS,
    )


def row(table: np.ndarray, metric: str) -> np.ndarray:
    return table[METRICS.index(metric)]


def test_youden_thresholds_match_sklearn_roc_curve() -> None:
    thresholds, notes = youden_thresholds(multilabel())
    assert thresholds.tolist() == [expected["youden"] for expected in SKLEARN]
    assert notes == []


@pytest.mark.parametrize(
    "metric", ["auroc", "accuracy", "sensitivity", "specificity", "precision", "f1"]
)
def test_metrics_at_the_youden_threshold_match_sklearn(metric: str) -> None:
    scores = multilabel()
    thresholds, _ = youden_thresholds(scores)
    table = metric_table(scores, scores.predictions(thresholds), np.ones((1, 40)))[0]
    expected = [values[metric] for values in SKLEARN]
    np.testing.assert_allclose(row(table, metric)[:3], expected, rtol=1e-12)
    assert row(table, metric)[3] == pytest.approx(np.mean(expected))


def test_weighted_rows_match_sklearn_sample_weight() -> None:
    scores = multilabel()
    thresholds, _ = youden_thresholds(scores)
    weights = np.stack([np.ones(40), np.array(WEIGHTS, dtype=float)])
    table = metric_table(scores, scores.predictions(thresholds), weights)
    for metric, key in (
        ("auroc", "weighted_auroc"),
        ("f1", "weighted_f1"),
        ("accuracy", "weighted_accuracy"),
    ):
        np.testing.assert_allclose(
            table[1, METRICS.index(metric), :3], [v[key] for v in SKLEARN], rtol=1e-6
        )
        np.testing.assert_allclose(
            table[0, METRICS.index(metric), :3], [v[metric] for v in SKLEARN], rtol=1e-12
        )


def test_multiclass_is_one_vs_rest_with_the_argmax() -> None:
    targets = np.zeros((30, 3), dtype=bool)
    targets[np.arange(30), MC_TARGETS] = True
    scores = Scores(np.array(MC_PROBS), targets, Task.MULTICLASS, ("a", "b", "c"))
    thresholds, notes = youden_thresholds(scores)
    assert np.isnan(thresholds).all() and "arg-max" in notes[0]
    table = metric_table(scores, scores.predictions(thresholds), np.ones((1, 30)))[0]
    for metric in ("auroc", "sensitivity", "precision", "f1"):
        np.testing.assert_allclose(row(table, metric)[:3], MC_SKLEARN[metric], rtol=1e-12)
    assert row(table, "f1")[3] == pytest.approx(MC_SKLEARN["f1_macro"])


def test_undefined_metrics_are_nan_and_left_out_of_the_mean() -> None:
    scores = Scores(
        probabilities=np.array([[0.2, 0.1], [0.8, 0.9], [0.6, 0.4]]),
        targets=np.array([[False, False], [True, False], [True, False]]),
        task=Task.MULTILABEL,
        label_names=("a", "b"),
    )
    thresholds, notes = youden_thresholds(scores)
    assert thresholds[1] == 0.5 and "one class" in notes[0]
    table = metric_table(scores, scores.predictions(thresholds), np.ones((1, 3)))[0]
    assert np.isnan(row(table, "auroc")[1]) and np.isnan(row(table, "sensitivity")[1])
    assert row(table, "auroc")[2] == row(table, "auroc")[0] == 1.0  # mean of the defined one
    assert len(table[0]) == 2 + 1 and MEAN == "mean"


def test_a_zero_weight_row_gives_nan_not_an_error() -> None:
    scores = multilabel()
    table = metric_table(scores, scores.predictions(np.full(3, 0.5)), np.zeros((1, 40)))
    assert np.isnan(table).all()


def test_scores_refuse_bad_shapes_and_nan() -> None:
    with pytest.raises(Exception, match="shape"):
        Scores(np.zeros((3, 2)), np.zeros((3, 1), dtype=bool), Task.MULTILABEL, ("a", "b"))
    with pytest.raises(Exception, match="NaN"):
        Scores(np.full((2, 1), np.nan), np.zeros((2, 1), dtype=bool), Task.BINARY, ("a",))
