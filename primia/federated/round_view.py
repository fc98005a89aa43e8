"""What a node was told of a secure round, as digests it signs (the model-consistency check).

A coordinator builds one task per node, so it could send one node other global weights
than the rest: with every other node's update a known function of weights it chose, the
aggregate reveals the target's update (Pasquini et al., CCS 2022, "Eluding secure
aggregation"). Other plans or participant lists serve the same end. Each node therefore
signs into its key advertisement

* the SHA-256 of the global weights blob it received (checked against its chunks when it
  arrived),
* the SHA-256 of the round's plan in a canonical encoding: the round, the model spec, the
  training plan (DP included) and the aggregation setup except the session id (which the
  signature covers anyway) — JSON with sorted keys and no whitespace, floats as Python's
  shortest round-trip repr,
* the SHA-256 of the participant list,

and :class:`~primia.crypto.secagg.AggregationClient` sends no share unless every
advertisement on its roster carries the same three digests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from primia.crypto.secagg import RoundView
from primia.crypto.secagg.messages import participants_digest
from primia.federated.tasks import TrainTask


def plan_encoding(task: TrainTask) -> bytes:
    """The canonical bytes of what a round asks of every node (identical for all)."""
    if task.secure is None:
        raise ValueError(f"task {task.task_id} does not ask for secure aggregation")
    setup = task.secure.setup
    document = {
        "version": 1,
        "round": task.round,
        "model": dataclasses.asdict(task.spec),
        "plan": dataclasses.asdict(task.plan),
        "aggregation": {
            "threshold": setup.threshold,
            "ring_bits": setup.bits,
            "clip": setup.clip,
            "vector_length": setup.vector_length,
            "weight_unit": task.secure.weight_unit,
        },
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def round_view(task: TrainTask) -> RoundView:
    """The digests a node signs for ``task`` (see the module docstring)."""
    if task.secure is None:
        raise ValueError(f"task {task.task_id} does not ask for secure aggregation")
    return RoundView(
        weights=task.weights.sha256,
        plan=hashlib.sha256(plan_encoding(task)).digest(),
        participants=participants_digest(task.secure.setup.participants),
    )
