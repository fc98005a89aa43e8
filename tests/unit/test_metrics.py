import numpy as np
import pytest

from primia.data.dataset import Task
from primia.evaluate.metrics import auroc
from primia.train.metrics import classification_metrics


def test_auroc_perfect_inverse_random_and_ties():
    labels = np.array([0, 0, 1, 1])
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), labels) == 1.0
    assert auroc(np.array([0.9, 0.8, 0.2, 0.1]), labels) == 0.0
    assert auroc(np.array([0.5, 0.5, 0.5, 0.5]), labels) == 0.5
    # One positive ranked below one negative out of four pairs.
    assert auroc(np.array([0.1, 0.7, 0.6, 0.9]), labels) == pytest.approx(0.75)


def test_auroc_undefined_for_one_class():
    assert auroc(np.array([0.1, 0.2]), np.array([1, 1])) is None


def test_auroc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=200).round(1)  # rounding makes ties
    labels = rng.integers(0, 2, size=200)
    positives, negatives = scores[labels == 1], scores[labels == 0]
    greater = (positives[:, None] > negatives[None, :]).mean()
    equal = (positives[:, None] == negatives[None, :]).mean()
    assert auroc(scores, labels) == pytest.approx(greater + equal / 2)


def test_multilabel_metrics_skip_undefined_labels_in_the_mean():
    logits = np.array([[2.0, -1.0], [-2.0, -1.0], [1.0, -1.0]])
    targets = np.array([[1, 0], [0, 0], [1, 0]], dtype=np.float32)
    metrics = classification_metrics(
        logits, targets, task=Task.MULTILABEL, label_names=["a", "b"], loss=0.1
    )
    assert metrics.auroc == {"a": 1.0, "b": None}
    assert metrics.mean_auroc == 1.0
    assert metrics.accuracy == 1.0


def test_multiclass_metrics():
    logits = np.array([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0], [3.0, 0.0, 0.0]])
    targets = np.array([0, 1, 2, 1])
    metrics = classification_metrics(
        logits, targets, task=Task.MULTICLASS, label_names=["x", "y", "z"], loss=0.0
    )
    assert metrics.accuracy == 0.75
    assert metrics.auroc["z"] == 1.0
