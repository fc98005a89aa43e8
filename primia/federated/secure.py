"""Secure aggregation of a round's updates: the coordinator learns Σ w_i Δ_i and Σ w_i only.

Each node flattens its update Δ_i (tensors in sorted name order) and appends its weight
w_i = min(1, n_i / weight_unit), with weight_unit the largest training set on the
roster; it multiplies the update by w_i, encodes the vector into Z_2^k
(:mod:`primia.crypto.ring`) and takes part in the protocol of :mod:`primia.crypto.secagg`.
The coordinator decodes the sum and divides, so federated averaging keeps its weights:

    Σ w_i Δ_i / Σ w_i = Σ n_i Δ_i / Σ n_i   (when no node exceeds weight_unit).

:class:`SecureAggregator` drives the coordinator's state machine over the round's
:class:`~primia.federated.registry.NodeLink` s: keys and shares (small messages, before
the nodes train), then the masked inputs (each node masks and uploads as soon as its
training ends, while others still train), then the consistency round (survivors sign the
survivor set) and unmasking; each step is a barrier that
waits for the nodes still in the round. A node that refuses,
drops, times out or sends a message that fails a check leaves the round at that step; the
protocol recovers as long as the threshold of nodes remains, and otherwise the round
fails (the coordinator tries it again) having revealed nothing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import torch

from primia.crypto.ring import ring_values
from primia.crypto.secagg import (
    AggregationClient,
    AggregationFailed,
    AggregationServer,
    ConsistencyChecks,
    MaskedInput,
    ProtocolViolation,
    Setup,
)
from primia.crypto.secagg.messages import SESSION_BYTES, majority
from primia.federated.aggregation import RoundContributions, gather
from primia.federated.coordinator_config import SecureAggregationConfig
from primia.federated.registry import NodeLink
from primia.federated.round_view import round_view
from primia.federated.tasks import LocalTraining, SecureTask, TrainOutcome, TrainTask
from primia.federated.weights import State

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class VectorLayout:
    """Where each tensor of a state lies in the flat vector: sorted names, then the weight."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @classmethod
    def of(cls, state: State) -> VectorLayout:
        names = tuple(sorted(state))
        for name in names:
            if not state[name].is_floating_point():
                raise ValueError(
                    f"tensor {name} is {state[name].dtype}; secure aggregation sums floating "
                    "point tensors only"
                )
        return cls(names, tuple(state[name].shape for name in names))

    @property
    def length(self) -> int:
        """Values in the vector: every tensor's, plus one for the weight."""
        return sum(shape.numel() for shape in self.shapes) + 1

    def flatten(self, state: State, weight: float) -> npt.NDArray[np.float32]:
        """[w·Δ (tensors in order), w] as float32, the precision updates are trained in
        (the ring encoding carries it to float64 a block at a time)."""
        vector = torch.cat(
            [state[name].detach().to("cpu", torch.float32).reshape(-1) for name in self.names]
            + [torch.ones(1)]
        )
        vector *= weight
        return vector.numpy()

    def unflatten(self, vector: npt.NDArray[np.float64]) -> tuple[State, float]:
        """The tensors and the weight of a (summed) vector."""
        if vector.shape != (self.length,):
            raise ValueError(f"expected {self.length} values, got {vector.shape}")
        tensors: State = {}
        offset = 0
        for name, shape in zip(self.names, self.shapes, strict=True):
            size = shape.numel()
            tensors[name] = torch.from_numpy(vector[offset : offset + size].copy()).reshape(shape)
            offset += size
        return tensors, float(vector[-1])


def node_weight(examples: int, weight_unit: float) -> float:
    return min(1.0, examples / weight_unit)


class SecureAggregator:
    """The :class:`~primia.federated.aggregation.Aggregator` by secure aggregation."""

    name = "secure"

    def __init__(
        self,
        settings: SecureAggregationConfig,
        *,
        ca_pem: bytes,
        checks: ConsistencyChecks | None = None,
    ) -> None:
        self.settings = settings
        self._ca = ca_pem
        self.checks = checks or ConsistencyChecks()
        """Must match the nodes': only tests and benchmarks switch the checks off."""

    def collect(
        self,
        links: Sequence[NodeLink],
        make_task: Callable[[NodeLink], TrainTask],
        *,
        reference: State,
        timeout: float,
    ) -> RoundContributions:
        layout = VectorLayout.of(reference)
        result = RoundContributions(
            weighted_sum={},
            total_weight=0.0,
            dtypes={name: tensor.dtype for name, tensor in reference.items()},
        )
        by_name = {link.name: link for link in links}
        tasks = {link.name: make_task(link) for link in links}
        participants = tuple(sorted(by_name))
        threshold = self.settings.threshold or majority(len(participants))
        if len(participants) < 2 or threshold > len(participants):
            result.failure = (
                f"secure aggregation needs at least {max(2, threshold)} nodes in the round, "
                f"{len(participants)} are connected"
            )
            return result
        some_task = next(iter(tasks.values()))
        setup = Setup(
            session=os.urandom(SESSION_BYTES),
            round=some_task.round,
            participants=participants,
            threshold=threshold,
            bits=self.settings.ring_bits,
            clip=self.settings.clip,
            vector_length=layout.length,
        )
        weight_unit = float(max(1, *(link.info.dataset.train_examples for link in links)))
        secure = SecureTask(setup, weight_unit)
        server = AggregationServer(setup, ca_pem=self._ca, checks=self.checks)
        round_ = _Round(server, by_name, result)
        outcomes = {
            name: by_name[name].train(replace(task, secure=secure)) for name, task in tasks.items()
        }
        clock = _StepClock()
        try:
            keys = {name: by_name[name].advertised_keys(tasks[name].task_id) for name in tasks}
            # the weights travel to each node before its keys come back: the round's timeout
            round_.gather(
                keys, timeout, "receive the weights and advertise keys", server.receive_keys
            )
            step = self.settings.step_timeout_s
            roster = server.close_keys()
            clock.mark("keys")

            bundles = {
                name: by_name[name].send_roster(tasks[name].task_id, roster)
                for name in round_.active(keys.node for keys in roster.keys)
            }
            round_.gather(bundles, step, "share secrets", server.receive_shares)
            deliveries = server.close_shares()
            clock.mark("shares")

            for name, delivery in deliveries.items():
                by_name[name].deliver_shares(tasks[name].task_id, delivery)
            masked = {name: outcomes[name] for name in deliveries}
            # the nodes train now, and upload as soon as they finish
            round_.gather(masked, timeout, "train and upload", round_.receive_masked)
            request = server.close_masked()
            clock.mark("training and masked upload")

            if self.checks.consistency_round:
                confirmations = {
                    name: by_name[name].request_unmask(tasks[name].task_id, request)
                    for name in request.survivors
                }
                round_.gather(
                    confirmations, step, "sign the survivors", server.receive_confirmation
                )
                signatures = server.close_confirmations()
                clock.mark("consistency round")
                reveals = {
                    name: by_name[name].send_survivor_signatures(tasks[name].task_id, signatures)
                    for name in round_.active(request.survivors)
                }
            else:
                reveals = {
                    name: by_name[name].request_unmask_without_consistency_round(
                        tasks[name].task_id, request
                    )
                    for name in request.survivors
                }
            round_.gather(reveals, step, "reveal shares", server.receive_unmask)
            aggregate = server.finish()
            clock.mark("unmasking")
        except AggregationFailed as error:
            log.warning("round %d: secure aggregation failed: %s", setup.round, error)
            result.failure = str(error)
            result.outcomes.clear()
            return result
        finally:
            for future in outcomes.values():
                future.cancel()  # a node that stalled is not waited for in later rounds
        total = setup.fixed_point().decode(aggregate.total)
        result.weighted_sum, result.total_weight = layout.unflatten(total)
        clock.mark("decoding")
        log.info(
            "round %d: secure aggregation of %d of %d nodes (threshold %d): %s",
            setup.round,
            len(aggregate.survivors),
            len(participants),
            threshold,
            clock,
        )
        if result.total_weight <= 0:
            result.failure = "the aggregated weight is not positive"
            result.outcomes.clear()
            return result
        for name in aggregate.survivors:
            result.outcomes[name] = replace(
                round_.outcomes[name], clipped=aggregate.clipped.get(name, 0)
            )
        for name in aggregate.dropped:
            result.dropped.setdefault(name, "dropped before uploading its masked input")
        return result


class _StepClock:
    """How long each step of a round took, for the log."""

    def __init__(self) -> None:
        self._last = time.perf_counter()
        self._steps: list[tuple[str, float]] = []

    def mark(self, step: str) -> None:
        now = time.perf_counter()
        self._steps.append((step, now - self._last))
        self._last = now

    def __str__(self) -> str:
        return ", ".join(f"{step} {seconds:.2f} s" for step, seconds in self._steps)


class _Round:
    """The bookkeeping of one round: who is still in, and why the others left."""

    def __init__(
        self,
        server: AggregationServer,
        links: dict[str, NodeLink],
        result: RoundContributions,
    ) -> None:
        self.server = server
        self.links = links
        self.result = result
        self.outcomes: dict[str, TrainOutcome] = {}

    def active(self, names: Iterable[str]) -> list[str]:
        left = self.result.dropped.keys() | self.result.refused.keys()
        return [name for name in names if name not in left]

    def gather(
        self,
        futures: dict[str, Future[T]],
        timeout: float,
        step: str,
        receive: Callable[[str, T], None],
    ) -> None:
        """Wait for each node's answer to this step; a node whose message breaks the
        protocol is told why."""
        gather(
            futures,
            receive,
            self.result,
            timeout=timeout,
            late=f"did not {step}",
            report=lambda name, detail: self.links[name].report_error(detail),
        )

    def receive_masked(self, name: str, outcome: TrainOutcome) -> None:
        try:
            values = ring_values(outcome.update.data, self.server.setup.bits)
        except ValueError as error:
            raise ProtocolViolation(
                f"the masked input of {name!r} is unreadable: {error}"
            ) from error
        self.server.receive_masked(
            name, MaskedInput(self.server.setup.session, name, values, outcome.clipped)
        )
        self.outcomes[name] = outcome


class SecureContribution:
    """A node's part in one round's secure aggregation: it exchanges keys and shares
    before training, then its update becomes [w·Δ, w] in the ring and is masked."""

    def __init__(
        self,
        task: TrainTask,
        node: str,
        *,
        certificate_pem: bytes,
        key_pem: bytes,
        ca_pem: bytes,
        checks: ConsistencyChecks | None = None,
    ) -> None:
        if task.secure is None:
            raise ValueError(f"task {task.task_id} does not ask for secure aggregation")
        self.task = task
        self.client = AggregationClient(
            task.secure.setup,
            node,
            certificate_pem=certificate_pem,
            key_pem=key_pem,
            ca_pem=ca_pem,
            view=round_view(task),
            checks=checks,
        )
        self._mask_sum: Future[npt.NDArray[np.unsignedinteger]] | None = None

    def prepare_masks(self) -> None:
        """Start computing the masks in a background thread, once the shares are in: they
        need only the round's seeds, so the node computes them while it trains, and
        masking after training is one addition."""
        future: Future[npt.NDArray[np.unsignedinteger]] = Future()

        def compute() -> None:
            try:
                future.set_result(self.client.mask_sum())
            except BaseException as error:  # re-raised by masked_input
                future.set_exception(error)

        self._mask_sum = future
        threading.Thread(target=compute, name="secure-aggregation-masks", daemon=True).start()

    @property
    def secure(self) -> SecureTask:
        assert self.task.secure is not None  # checked when made
        return self.task.secure

    def masked_input(self, trained: LocalTraining) -> MaskedInput:
        """Encode this node's update into the ring and mask it."""
        setup = self.secure.setup
        update = trained.update
        layout = VectorLayout.of(update)
        if layout.length != setup.vector_length:
            raise ProtocolViolation(
                f"this node's update has {layout.length} values, the round aggregates "
                f"{setup.vector_length}: the coordinator's model differs from the task's"
            )
        weight = node_weight(trained.num_examples, self.secure.weight_unit)
        encoded = setup.fixed_point().encode(
            layout.flatten(update, weight), np.random.default_rng()
        )
        if encoded.clipped:
            log.warning(
                "round %d: %d values of the update lay outside [-%g, %g] and were clipped",
                setup.round,
                encoded.clipped,
                setup.clip,
                setup.clip,
            )
        if self._mask_sum is not None:
            self._mask_sum.result()  # the background computation ends before mask() reads it
        masked = self.client.mask(encoded.values)
        return replace(masked, clipped=encoded.clipped)
