"""Pooling node evaluations: example-weighted means, AUROC only where it is defined."""

import math

import pytest

from primia.federated.evaluation import pool
from primia.federated.tasks import EvaluationOutcome, LabelMetrics


def outcome(n: int, loss: float, accuracy: float, **aurocs: float | None) -> EvaluationOutcome:
    return EvaluationOutcome(
        num_examples=n,
        loss=loss,
        accuracy=accuracy,
        labels={name: LabelMetrics(auroc=value, positives=1) for name, value in aurocs.items()},
    )


def test_loss_and_accuracy_are_weighted_by_examples():
    pooled = pool({"a": outcome(10, 1.0, 0.5), "b": outcome(30, 2.0, 0.9)})
    assert pooled["examples"] == 40
    assert pooled["loss"] == pytest.approx((10 * 1.0 + 30 * 2.0) / 40)
    assert pooled["accuracy"] == pytest.approx((10 * 0.5 + 30 * 0.9) / 40)


def test_auroc_is_weighted_over_the_nodes_where_it_is_defined():
    pooled = pool(
        {
            "a": outcome(10, 1.0, 0.5, effusion=0.6, nodule=None),
            "b": outcome(30, 1.0, 0.5, effusion=0.8, nodule=0.7),
            "c": outcome(60, 1.0, 0.5, effusion=None, nodule=0.9),
        }
    )
    effusion = (10 * 0.6 + 30 * 0.8) / 40
    nodule = (30 * 0.7 + 60 * 0.9) / 90
    assert pooled["auroc"] == {
        "effusion": pytest.approx(effusion),
        "nodule": pytest.approx(nodule),
    }
    assert pooled["mean_auroc"] == pytest.approx((effusion + nodule) / 2)


def test_a_label_undefined_everywhere_is_none_and_left_out_of_the_mean():
    pooled = pool(
        {
            "a": outcome(10, 1.0, 0.5, effusion=0.6, rare=None),
            "b": outcome(20, 1.0, 0.5, effusion=0.9, rare=None),
        }
    )
    assert pooled["auroc"]["rare"] is None
    assert pooled["mean_auroc"] == pytest.approx((10 * 0.6 + 20 * 0.9) / 30)


def test_no_defined_auroc_gives_no_mean():
    pooled = pool({"a": outcome(5, 1.0, 0.5, only=None)})
    assert pooled["auroc"] == {"only": None}
    assert pooled["mean_auroc"] is None


def test_a_label_present_at_one_node_only_uses_that_node():
    pooled = pool({"a": outcome(10, 1.0, 0.5, x=0.7), "b": outcome(90, 1.0, 0.5)})
    assert pooled["auroc"] == {"x": pytest.approx(0.7)}


def test_per_node_figures_are_kept_in_name_order():
    pooled = pool({"b": outcome(3, 0.2, 1.0, x=None), "a": outcome(2, 0.4, 0.5, x=0.75)})
    assert list(pooled["per_node"]) == ["a", "b"]
    assert pooled["per_node"]["a"] == {
        "examples": 2,
        "loss": 0.4,
        "accuracy": 0.5,
        "auroc": {"x": 0.75},
    }
    assert pooled["per_node"]["b"]["auroc"] == {"x": None}


def test_empty_input_gives_no_metrics():
    assert pool({}) == {
        "examples": 0,
        "loss": None,
        "accuracy": None,
        "auroc": {},
        "mean_auroc": None,
    }


def test_nodes_without_examples_give_no_metrics():
    assert pool({"a": outcome(0, 0.0, 0.0)})["loss"] is None


def test_a_node_without_examples_does_not_poison_the_pool():
    pooled = pool({"a": outcome(10, 1.0, 0.5), "empty": outcome(0, math.nan, math.nan)})
    assert pooled["loss"] == pytest.approx(1.0)
    assert pooled["accuracy"] == pytest.approx(0.5)
