"""Aggregation: from the selected nodes' local training to one weighted sum of updates.

Federated averaging (McMahan et al., 2017) forms the new global weights as

    w_{t+1} = w_t + Σ_i n_i Δ_i / Σ_i n_i,     Δ_i = w_i − w_t,

with n_i node i's number of training examples. An :class:`Aggregator` runs one round's
training on the selected nodes and returns Σ n_i Δ_i and Σ n_i over the nodes that
finished; how much the coordinator learns on the way is the aggregator's business:

* :class:`PlaintextAggregator` sees every node's update (for comparison and debugging);
* secure aggregation (next in line) returns the same sums and reveals nothing else.

A node that refuses, disconnects, times out or sends an update that does not fit the
model is left out of the sums and reported; the round decides whether enough remain.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from typing import Protocol

import torch

from primia.federated.registry import NodeLink
from primia.federated.tasks import NodeDropped, TaskRefused, TrainOutcome, TrainTask
from primia.federated.weights import State, WeightsError, decode_like

log = logging.getLogger(__name__)


@dataclass
class RoundContributions:
    """The sums a round produced, and what happened at each node."""

    weighted_sum: State
    total_weight: float
    outcomes: dict[str, TrainOutcome] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)

    @property
    def contributors(self) -> list[str]:
        return sorted(self.outcomes)

    def mean_update(self) -> State:
        """Σ n_i Δ_i / Σ n_i, in the reference's dtypes."""
        return {name: total / self.total_weight for name, total in self.weighted_sum.items()}


class Aggregator(Protocol):
    name: str

    def collect(
        self,
        links: Sequence[NodeLink],
        make_task: Callable[[NodeLink], TrainTask],
        *,
        reference: State,
        timeout: float,
    ) -> RoundContributions: ...


class PlaintextAggregator:
    """Collects every node's update in the clear and sums them (see the module docstring)."""

    name = "plaintext"

    def collect(
        self,
        links: Sequence[NodeLink],
        make_task: Callable[[NodeLink], TrainTask],
        *,
        reference: State,
        timeout: float,
    ) -> RoundContributions:
        pending: dict[Future[TrainOutcome], NodeLink] = {
            link.train(make_task(link)): link for link in links
        }
        done, not_done = wait(pending, timeout=timeout)
        result = RoundContributions(
            weighted_sum={
                name: torch.zeros_like(t, dtype=torch.float64) for name, t in reference.items()
            },
            total_weight=0.0,
        )
        for future in not_done:
            future.cancel()
            result.dropped[pending[future].name] = f"no answer within {timeout:.0f} s"
        for future in done:
            name = pending[future].name
            try:
                outcome = future.result()
            except TaskRefused as refusal:
                result.refused[name] = str(refusal)
                continue
            except NodeDropped as error:
                result.dropped[name] = str(error)
                continue
            try:
                update = decode_like(outcome.update.data, reference, what=f"update of {name}")
            except WeightsError as error:
                log.warning("leaving %s out of the round: %s", name, error)
                result.dropped[name] = str(error)
                continue
            if outcome.num_examples < 1:
                result.dropped[name] = "the update claims no training examples"
                continue
            for tensor_name, delta in update.items():
                result.weighted_sum[tensor_name] += outcome.num_examples * delta.double()
            result.total_weight += outcome.num_examples
            result.outcomes[name] = outcome
        result.weighted_sum = {
            name: total.to(reference[name].dtype) for name, total in result.weighted_sum.items()
        }
        return result


def make_aggregator(name: str) -> Aggregator:
    if name == "plaintext":
        return PlaintextAggregator()
    raise ValueError(f"unknown aggregation {name!r}")
