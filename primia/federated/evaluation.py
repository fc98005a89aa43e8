"""Pooling the nodes' evaluations of one global model into federation-wide metrics.

Loss and accuracy are example-weighted means over nodes, which equals the metric on the
pooled data. AUROC does not pool that way (it depends on how the nodes' scores
interleave), and pooling scores would send labels to the coordinator; so the reported
AUROC per label is the example-weighted mean of the nodes' AUROCs, over the nodes where
it is defined, and every node's own figures are kept beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from primia.federated.tasks import EvaluationOutcome


def pool(outcomes: Mapping[str, EvaluationOutcome]) -> dict[str, Any]:
    """Pooled metrics, with ``per_node`` holding each node's own (nodes that evaluated no
    example are left out: their loss is undefined)."""
    outcomes = {name: o for name, o in outcomes.items() if o.num_examples > 0}
    total = sum(outcome.num_examples for outcome in outcomes.values())
    if total == 0:
        return {"examples": 0, "loss": None, "accuracy": None, "auroc": {}, "mean_auroc": None}
    loss = sum(o.loss * o.num_examples for o in outcomes.values()) / total
    accuracy = sum(o.accuracy * o.num_examples for o in outcomes.values()) / total
    labels = sorted({name for o in outcomes.values() for name in o.labels})
    auroc: dict[str, float | None] = {}
    for label in labels:
        weighted = [
            (o.labels[label].auroc, o.num_examples)
            for o in outcomes.values()
            if label in o.labels and o.labels[label].auroc is not None
        ]
        weight = sum(n for _, n in weighted)
        auroc[label] = sum(a * n for a, n in weighted if a is not None) / weight if weight else None
    defined = [value for value in auroc.values() if value is not None]
    return {
        "examples": total,
        "loss": loss,
        "accuracy": accuracy,
        "auroc": auroc,
        "mean_auroc": sum(defined) / len(defined) if defined else None,
        "per_node": {
            name: {
                "examples": o.num_examples,
                "loss": o.loss,
                "accuracy": o.accuracy,
                "auroc": {label: m.auroc for label, m in o.labels.items()},
            }
            for name, o in sorted(outcomes.items())
        },
    }
