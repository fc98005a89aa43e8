"""Detailed evaluations (:mod:`primia.evaluate`) to and from protobuf, checked on arrival.

The tables travel as raw little-endian arrays: values ``float64[metrics, columns]`` and
bootstrap replicates ``float32[resamples, metrics, columns]``. What a node sends is
checked against the task before it is used: the metric names, the labels, the array
sizes, and that every value is a proportion in [0, 1] or NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from primia.evaluate.bootstrap import DEFAULT_CONFIDENCE
from primia.evaluate.evaluation import Evaluation, MetricTable
from primia.evaluate.metrics import MEAN, METRICS
from primia.federated.tasks import EvaluationDetail, Refusal, TaskRefused
from primia.limits import clean_text
from primia.rpc.codec import MessageError
from primia.rpc.generated import federation_pb2 as pb

MAX_RESAMPLES = 10_000
MAX_GROUPS = 64


class DetailError(MessageError):
    """A detailed evaluation or its request is malformed."""


def detail_to_proto(detail: EvaluationDetail) -> pb.EvaluationDetail:
    return pb.EvaluationDetail(
        resamples=detail.resamples, seed=detail.seed, subgroups=detail.subgroups
    )


def detail_from_proto(message: pb.EvaluationDetail) -> EvaluationDetail:
    if not 1 <= message.resamples <= MAX_RESAMPLES:
        raise DetailError(f"resamples={message.resamples} is outside [1, {MAX_RESAMPLES}]")
    return EvaluationDetail(
        resamples=message.resamples, seed=message.seed, subgroups=message.subgroups
    )


def oversize_refusal(evaluation: Evaluation, size: int, limit: int) -> TaskRefused:
    """The refusal of a detailed evaluation whose message (``size`` bytes) exceeds the
    ``limit`` one gRPC message may carry, naming the most resamples that would fit (the
    replicates grow with resamples × subgroups × metrics × labels)."""
    replicate_bytes = sum(4 * table.replicates.size for table in evaluation.groups.values())
    per_resample = replicate_bytes / evaluation.resamples
    fitting = max(1, int((limit - (size - replicate_bytes)) // per_resample))
    return TaskRefused(
        Refusal.INVALID_PLAN,
        f"a detailed evaluation with {evaluation.resamples} resamples over "
        f"{len(evaluation.groups)} groups is {size / 1e6:.1f} MB, more than the "
        f"{limit / 1e6:.1f} MB one message may carry: ask for at most {fitting} resamples",
    )


def detailed_to_proto(evaluation: Evaluation) -> pb.DetailedEvaluation:
    first = evaluation.overall
    return pb.DetailedEvaluation(
        task=evaluation.task,
        metrics=list(first.metrics),
        columns=list(first.columns),
        thresholds=[float(value) for value in evaluation.thresholds],
        threshold_rule=evaluation.threshold_rule,
        threshold_notes=list(evaluation.threshold_notes),
        resamples=evaluation.resamples,
        confidence=evaluation.confidence,
        groups=[
            pb.MetricGroup(
                name=name,
                num_examples=table.num_examples,
                positives=list(table.positives),
                values=table.values.astype("<f8").tobytes(),
                replicates=table.replicates.astype("<f4").tobytes(),
            )
            for name, table in evaluation.groups.items()
        ],
    )


def detailed_from_proto(
    message: pb.DetailedEvaluation, *, label_names: tuple[str, ...], resamples: int
) -> Evaluation:
    """The evaluation a node sent for a task on a model of ``label_names`` asking for
    ``resamples``; :class:`DetailError` names what is wrong with it."""
    columns = (*label_names, MEAN)
    if tuple(message.metrics) != METRICS:
        raise DetailError(f"metrics {_few(message.metrics)} are not {list(METRICS)}")
    if tuple(message.columns) != columns:
        raise DetailError(f"columns {_few(message.columns)} are not {list(columns)}")
    if message.resamples != resamples:
        raise DetailError(f"{message.resamples} resamples sent, {resamples} asked for")
    if len(message.thresholds) != len(label_names):
        raise DetailError(f"{len(message.thresholds)} thresholds for {len(label_names)} labels")
    if not 0 < message.confidence < 1:
        raise DetailError(f"confidence {message.confidence} is outside (0, 1)")
    if not 1 <= len(message.groups) <= MAX_GROUPS:
        raise DetailError(f"{len(message.groups)} groups; expected 1 to {MAX_GROUPS}")
    shape = (len(METRICS), len(columns))
    groups: dict[str, MetricTable] = {}
    for group in message.groups:
        if not group.name or len(group.name) > 64 or group.name in groups:
            raise DetailError(f"group name {group.name[:64]!r} is empty, too long or repeated")
        values = _array(group.values, "<f8", shape, f"{group.name} values")
        replicates = _array(
            group.replicates, "<f4", (resamples, *shape), f"{group.name} replicates"
        )
        if len(group.positives) != len(label_names) or any(
            p > group.num_examples for p in group.positives
        ):
            raise DetailError(f"{group.name}: positives {_few(group.positives)} do not fit")
        groups[group.name] = MetricTable(
            columns=columns,
            values=values,
            replicates=replicates,
            num_examples=group.num_examples,
            positives=tuple(group.positives),
            confidence=message.confidence,
        )
    if "all" not in groups:
        raise DetailError("the evaluation has no group 'all'")
    return Evaluation(
        task=message.task,
        label_names=label_names,
        thresholds=np.array(message.thresholds, dtype=np.float64),
        threshold_notes=tuple(message.threshold_notes),
        resamples=message.resamples,
        groups=groups,
        threshold_rule=message.threshold_rule,
        confidence=message.confidence or DEFAULT_CONFIDENCE,
    )


def _array(payload: bytes, dtype: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if len(payload) != expected:
        raise DetailError(f"{what}: {len(payload)} bytes, expected {expected} for {shape}")
    array = np.frombuffer(payload, dtype=dtype).reshape(shape).astype(np.float64)
    proportion = np.isnan(array) | ((array >= 0) & (array <= 1))
    if not proportion.all():
        raise DetailError(f"{what}: a value is outside [0, 1] (metrics are proportions)")
    return array if dtype == "<f8" else array.astype(np.float32)


def _few(values: Sequence[Any], shown: int = 8) -> str:
    """The first ``shown`` of a node's ``values`` and how many there are: a refusal quotes
    them, and is logged and recorded, so it must not grow with what the node sent."""
    head = [clean_text(v, 64) if isinstance(v, str) else v for v in values[:shown]]
    return str(head) if len(values) <= shown else f"{str(head)[:-1]}, … ({len(values)} in all)]"
