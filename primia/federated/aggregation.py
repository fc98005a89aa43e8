"""Aggregation: from the selected nodes' local training to one weighted sum of updates.

Federated averaging (McMahan et al., 2017) forms the new global weights as

    w_{t+1} = w_t + Σ_i n_i Δ_i / Σ_i n_i,     Δ_i = w_i − w_t,

with n_i node i's number of training examples. An :class:`Aggregator` runs one round's
training on the selected nodes and returns Σ n_i Δ_i and Σ n_i over the nodes that
finished; how much the coordinator learns on the way is the aggregator's business:

* :class:`PlaintextAggregator` sees every node's update (for comparison and debugging);
* :class:`~primia.federated.secure.SecureAggregator` returns the same sums (weights
  normalised to at most 1) and reveals nothing else.

A node that refuses, disconnects, times out or sends an update that does not fit the
model is left out of the sums and reported; the round decides whether enough remain.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, TimeoutError, as_completed
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import torch

from primia.errors import PrimiaError
from primia.federated.registry import NodeLink
from primia.federated.tasks import RECURRING, NodeDropped, TaskRefused, TrainOutcome, TrainTask
from primia.federated.weights import State, WeightsError, decode_like

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class RoundContributions:
    """The sums a round produced, and what happened at each node."""

    weighted_sum: State
    """Σ n_i Δ_i in float64 (float32 sums of many large updates lose precision)."""
    total_weight: float
    dtypes: dict[str, torch.dtype] = field(default_factory=dict)
    """Each tensor's dtype in the model, which :meth:`mean_update` returns."""
    outcomes: dict[str, TrainOutcome] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    recurring: dict[str, str] = field(default_factory=dict)
    """The refusals among ``refused`` that asking again cannot change
    (:data:`~primia.federated.tasks.RECURRING`)."""
    dropped: dict[str, str] = field(default_factory=dict)
    failure: str | None = None
    """Why the round produced no sum at all (e.g. secure aggregation fell below its
    threshold); the contributors are then empty."""

    @property
    def contributors(self) -> list[str]:
        return sorted(self.outcomes)

    def mean_update(self) -> State:
        """Σ n_i Δ_i / Σ n_i, in the model's dtypes."""
        return {
            name: (total / self.total_weight).to(self.dtypes.get(name, total.dtype))
            for name, total in self.weighted_sum.items()
        }


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


def gather(
    futures: dict[str, Future[T]],
    receive: Callable[[str, T], None],
    result: RoundContributions,
    *,
    timeout: float,
    late: str,
    report: Callable[[str, str], None] | None = None,
) -> None:
    """Hand each node's answer to ``receive`` as it arrives, leaving out (in ``result``)
    the nodes that refuse, drop, send what ``receive`` rejects (a
    :class:`~primia.errors.PrimiaError`, told to the node through ``report``), or have not
    answered within ``timeout`` (``late`` says what they failed to do)."""
    pending = {future: name for name, future in futures.items()}
    try:
        for future in as_completed(pending, timeout=timeout):
            name = pending[future]
            try:
                receive(name, future.result())
            except TaskRefused as refusal:
                result.refused[name] = str(refusal)
                if refusal.reason in RECURRING:
                    result.recurring[name] = str(refusal)
            except NodeDropped as error:
                result.dropped[name] = str(error)
            except PrimiaError as error:
                log.warning("leaving %s out of the round: %s", name, error)
                result.dropped[name] = str(error)
                if report is not None:
                    report(name, str(error))
            except Exception as error:  # a broken link must not end the round for the rest
                log.exception("leaving %s out of the round", name)
                result.dropped[name] = f"{type(error).__name__}: {error}"
    except TimeoutError:
        for future, name in pending.items():
            if not future.done():
                future.cancel()
                result.dropped[name] = f"{late} within {timeout:g} s"


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
        futures = {link.name: link.train(make_task(link)) for link in links}
        result = RoundContributions(
            weighted_sum={
                name: torch.zeros_like(t, dtype=torch.float64) for name, t in reference.items()
            },
            total_weight=0.0,
            dtypes={name: tensor.dtype for name, tensor in reference.items()},
        )

        def add(name: str, outcome: TrainOutcome) -> None:
            update = decode_like(outcome.update.data, reference, what=f"update of {name}")
            if outcome.num_examples < 1:
                raise WeightsError("the update claims no training examples")
            for tensor_name, delta in update.items():
                result.weighted_sum[tensor_name].add_(delta, alpha=outcome.num_examples)
            result.total_weight += outcome.num_examples
            result.outcomes[name] = outcome

        # Each update is checked and added as it arrives, while other nodes still upload.
        gather(futures, add, result, timeout=timeout, late="no answer")
        return result
