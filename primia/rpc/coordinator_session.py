"""One node's session at the coordinator: the :class:`~primia.federated.registry.NodeLink`
that the rounds use, carried by the node's ``Join`` stream.

Outbound, tasks become messages on a queue that the stream's response generator drains
(a blob is cut into chunk messages once for all sessions, when the first sends it, and
goes down a stream once: the evaluation of round t and the training of round t+1 share
the weights). Inbound, the
stream's reader thread hands each message to :meth:`NodeSession.handle`, which settles
the task's future. When the stream ends, every pending future fails with
:class:`~primia.federated.tasks.NodeDropped`.

What a node can make its session hold is bounded (:class:`~primia.limits.ServerLimits`):
completed blobs that no result has named (``max_blobs_kept``, ``max_blob_bytes_kept``;
the next one is refused and freed), two blobs in flight of at most
``max_blob_bytes_kept`` each, every string in a message (``max_text``; the message is
refused), and the errors queued back to it (``MAX_QUEUED_ERRORS``; beyond that they are
counted, not queued). Bad messages are logged once per ``log_every_s`` with a count.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, InvalidStateError
from dataclasses import replace
from typing import Any

from primia.blobs import Blob, BlobAssembler, BlobChunk, BlobError
from primia.crypto.secagg import (
    KeyAdvertisement,
    KeyRoster,
    ShareBundle,
    ShareDelivery,
    SurvivorSignature,
    SurvivorSignatures,
    UnmaskRequest,
    UnmaskShares,
)
from primia.federated.registry import NodeRegistry
from primia.federated.tasks import (
    EvaluateTask,
    EvaluationOutcome,
    NodeDropped,
    NodeInfo,
    Refusal,
    TaskRefused,
    TrainOutcome,
    TrainTask,
)
from primia.limits import (
    LimitExceeded,
    LogThrottle,
    ServerLimits,
    clean_text,
)
from primia.rpc import codec, evaluation_codec, secure_codec
from primia.rpc.chunk_wire import messages_of
from primia.rpc.generated import federation_pb2 as pb
from primia.rpc.text_fields import check_strings

log = logging.getLogger(__name__)

_END = object()
MAX_UPDATE_SIZE = 8 * 1024 * 1024 * 1024
"""Bytes a node's update may announce; a bigger one is refused before it is buffered
(also never more than the session's ``max_blob_bytes_kept``)."""
MAX_QUEUED_ERRORS = 64
"""ProtocolErrors waiting to be sent to a node; a node that sends junk without reading
the answers cannot grow the queue further."""


class ChunkMessages:
    """The messages carrying the latest blob, cut once and shared by every session of one
    coordinator (all nodes get the same global weights in a round)."""

    def __init__(self) -> None:
        self._latest: tuple[str, list[bytes]] | None = None
        self._lock = threading.Lock()

    def of(self, blob: Blob) -> list[bytes]:
        """The blob's chunks as serialized CoordinatorMessages (see :mod:`primia.rpc.methods`)."""
        with self._lock:
            if self._latest is None or self._latest[0] != blob.blob_id:
                self._latest = (blob.blob_id, list(messages_of(blob, envelope=True)))
            return self._latest[1]


def _settle(future: Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    """Resolve ``future`` unless it is already done (e.g. cancelled on a timeout)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


class NodeSession:
    """A connected node as the rounds see it; see the module docstring."""

    def __init__(
        self,
        name: str,
        info: NodeInfo,
        registry: NodeRegistry,
        chunk_messages: ChunkMessages | None = None,
        *,
        limits: ServerLimits | None = None,
        active: Callable[[], bool] = lambda: True,
        peer: str = "",
    ) -> None:
        self.name = name
        self._chunk_messages = chunk_messages or ChunkMessages()
        self.info = info
        self._registry = registry
        self._limits = limits or ServerLimits()
        self._active = active
        self._peer = peer
        self._throttle = LogThrottle(self._limits.log_every_s)
        self._queued_errors = 0
        self._outbound: queue.Queue[object] = queue.Queue()
        self._pending: dict[tuple[str, str], Future[Any]] = {}
        """Futures by (task id, what answer they wait for)."""
        self._sent_blobs: set[str] = set()
        self._received: dict[str, Blob] = {}
        self._evaluations: dict[str, EvaluateTask] = {}
        """Evaluation tasks awaiting their result, to check a detailed one against."""
        self._assembler = BlobAssembler(
            max_size=min(MAX_UPDATE_SIZE, self._limits.max_blob_bytes_kept), max_in_flight=2
        )
        self._lock = threading.Lock()
        self._closed = False

    # ---- NodeLink -------------------------------------------------------------------

    def train(self, task: TrainTask) -> Future[TrainOutcome]:
        message = pb.CoordinatorMessage(
            train=pb.TrainTask(
                task_id=task.task_id,
                round=task.round,
                model=codec.spec_to_proto(task.spec),
                weights_blob=task.weights.blob_id,
                plan=codec.plan_to_proto(task.plan),
            )
        )
        answers = ["train"]
        if task.secure is not None:
            message.train.secure_aggregation.CopyFrom(
                secure_codec.secure_task_to_proto(task.secure)
            )
            answers.append("keys")
        return self._submit(task.task_id, answers, message, task.weights)[0]

    def advertised_keys(self, task_id: str) -> Future[KeyAdvertisement]:
        with self._lock:
            future = self._pending.get((task_id, "keys"))
        if future is None:
            future = Future()
            _settle(future, error=NodeDropped(f"{self.name} has no secure task {task_id!r}"))
        return future

    def send_roster(self, task_id: str, roster: KeyRoster) -> Future[ShareBundle]:
        message = pb.CoordinatorMessage(key_roster=secure_codec.roster_to_proto(task_id, roster))
        return self._submit(task_id, ["shares"], message)[0]

    def deliver_shares(self, task_id: str, delivery: ShareDelivery) -> None:
        message = pb.CoordinatorMessage(
            share_delivery=secure_codec.delivery_to_proto(task_id, delivery)
        )
        self._submit(task_id, [], message)

    def request_unmask(self, task_id: str, request: UnmaskRequest) -> Future[SurvivorSignature]:
        message = pb.CoordinatorMessage(
            unmask_request=secure_codec.request_to_proto(task_id, request)
        )
        return self._submit(task_id, ["confirm"], message)[0]

    def send_survivor_signatures(
        self, task_id: str, signatures: SurvivorSignatures
    ) -> Future[UnmaskShares]:
        message = pb.CoordinatorMessage(
            survivor_signatures=secure_codec.signatures_to_proto(task_id, signatures)
        )
        return self._submit(task_id, ["unmask"], message)[0]

    def request_unmask_without_consistency_round(
        self, task_id: str, request: UnmaskRequest
    ) -> Future[UnmaskShares]:
        message = pb.CoordinatorMessage(
            unmask_request=secure_codec.request_to_proto(task_id, request)
        )
        return self._submit(task_id, ["unmask"], message)[0]

    def evaluate(self, task: EvaluateTask) -> Future[EvaluationOutcome]:
        message = pb.CoordinatorMessage(
            evaluate=pb.EvaluateTask(
                task_id=task.task_id,
                round=task.round,
                model=codec.spec_to_proto(task.spec),
                weights_blob=task.weights.blob_id,
                split=codec.split_to_proto(task.split),
            )
        )
        if task.detail is not None:
            message.evaluate.detail.CopyFrom(evaluation_codec.detail_to_proto(task.detail))
        with self._lock:
            self._evaluations[task.task_id] = task
        return self._submit(task.task_id, ["evaluate"], message, task.weights)[0]

    def shutdown(self, reason: str, *, finished: bool, failed: bool = False) -> None:
        shutdown = pb.Shutdown(reason=reason, finished=finished, failed=failed)
        self._outbound.put(pb.CoordinatorMessage(shutdown=shutdown))
        self.close(reason)

    def abandon(self, task_id: str, reason: str) -> None:
        message = pb.RoundAbandoned(task_id=task_id, reason=reason)
        with self._lock:
            if not self._closed:
                self._outbound.put(pb.CoordinatorMessage(abandoned=message))

    def close(self, reason: str) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = list(self._pending.values())
            self._pending.clear()
            self._received.clear()
        for future in pending:
            _settle(future, error=NodeDropped(f"{self.name}: {reason}"))
        self._assembler.discard()
        self._outbound.put(_END)

    def alive(self) -> bool:
        with self._lock:
            closed = self._closed
        return not closed and self._active()

    @property
    def kept_bytes(self) -> int:
        """Bytes of completed blobs that no result has named yet."""
        return sum(len(blob.data) for blob in list(self._received.values()))

    # ---- the stream -----------------------------------------------------------------

    def outbound(
        self, welcome: pb.Welcome, active: Callable[[], bool]
    ) -> Iterator[pb.CoordinatorMessage | bytes]:
        """The messages to send, until the session closes or the stream stops being
        ``active`` (checked every second, so a handler never outlives its stream)."""
        yield pb.CoordinatorMessage(welcome=welcome)
        while True:
            try:
                item = self._outbound.get(timeout=1.0)
            except queue.Empty:
                if not active():
                    self.close("the stream ended")
                    return
                continue
            if item is _END:
                return
            if isinstance(item, Blob):
                yield from self._chunk_messages.of(item)
            else:
                assert isinstance(item, pb.CoordinatorMessage)
                if item.WhichOneof("kind") == "error":
                    with self._lock:
                        self._queued_errors -= 1
                yield item

    def handle(self, message: pb.NodeMessage | BlobChunk) -> None:
        """Take one message from the node; a bad one is answered with a ProtocolError."""
        try:
            if not isinstance(message, BlobChunk):
                check_strings(message, self._limits.max_text)
            self._dispatch(message)
        except (BlobError, codec.MessageError, LimitExceeded) as error:
            detail = clean_text(str(error), 2 * self._limits.max_text)
            held_back = self._throttle.admit(type(error).__name__, time.monotonic())
            if held_back is not None:
                more = f" ({held_back} more like it not logged)" if held_back else ""
                log.warning("bad message from %s: %s%s", self.name, detail, more)
            self.report_error(detail)

    def report_error(self, detail: str) -> None:
        with self._lock:
            if self._queued_errors >= MAX_QUEUED_ERRORS:
                return  # the node does not read its answers; the log has counted them
            self._queued_errors += 1
        self._outbound.put(pb.CoordinatorMessage(error=pb.ProtocolError(detail=detail)))

    def _dispatch(self, message: pb.NodeMessage | BlobChunk) -> None:
        if isinstance(message, BlobChunk):
            self._chunk(message)
            return
        kind = message.WhichOneof("kind")
        if kind == "chunk":
            self._chunk(message.chunk)
        elif kind == "train_result":
            trained = message.train_result
            self._train_result(trained, trained.update_blob, clipped=0)
        elif kind == "evaluate_result":
            self._evaluate_result(message.evaluate_result)
        elif kind == "refused":
            refusal = codec.refusal_from_proto(message.refused)
            with self._lock:
                self._evaluations.pop(message.refused.task_id, None)
            for future in self._take_all(message.refused.task_id):
                _settle(future, error=refusal)
        elif kind == "keys":
            future = self._take(message.keys.task_id, "keys")
            _settle(future, result=secure_codec.keys_from_proto(message.keys))
        elif kind == "shares":
            future = self._take(message.shares.task_id, "shares")
            _settle(future, result=secure_codec.bundle_from_proto(message.shares, self.name))
        elif kind == "masked_input":
            masked = message.masked_input
            masked.result.task_id = masked.task_id
            self._train_result(masked.result, masked.vector_blob, clipped=masked.clipped)
        elif kind == "survivor_signature":
            signed = message.survivor_signature
            future = self._take(signed.task_id, "confirm")
            _settle(future, result=secure_codec.signature_from_proto(signed, self.name))
        elif kind == "unmask_shares":
            revealed = message.unmask_shares
            future = self._take(revealed.task_id, "unmask")
            _settle(future, result=secure_codec.unmask_from_proto(revealed, self.name))
        elif kind == "ledger_alarm":
            alarm = message.ledger_alarm
            log.warning("%s refuses to train: %s", self.name, codec.printable(alarm.detail))
            self._registry.set_ledger_alarm(
                self.name,
                f"refuses to train (ledger eps {alarm.ledger_epsilon:.4g}, recorded "
                f"{alarm.recorded_epsilon:.4g}): {codec.printable(alarm.detail)[:300]}",
            )
        elif kind == "plan_answer":
            self._plan_answer(message.plan_answer)
        elif kind == "progress":
            progress = message.progress
            stage = clean_text(progress.stage, self._limits.max_text)
            fraction = progress.fraction if 0.0 <= progress.fraction <= 1.0 else 0.0
            self._registry.set_activity(self.name, f"{stage} ({fraction:.0%})")
        else:
            raise codec.MessageError(f"unexpected {kind or 'empty'} message in a session")

    def _plan_answer(self, answer: pb.PlanAnswer) -> None:
        """The node accepts the run's plan (the rounds may count it), or refuses to join:
        kept, with its reason, so the rounds know it will not take part."""
        if answer.accepted:
            self._registry.ready(self)
            return
        refusal = codec.refusal_from_proto(answer.refusal)
        detail = clean_text(str(refusal), 4 * self._limits.max_text)
        log.warning("%s refuses to join this run: %s", self.name, detail)
        self._registry.refused_to_join(self.name, detail)
        self.close("it refused to join")

    def _chunk(self, chunk: BlobChunk | pb.Chunk) -> None:
        limits = self._limits
        if len(chunk.blob_id) > limits.max_text:
            raise BlobError(
                f"a blob_id of {len(chunk.blob_id)} characters; the limit is "
                f"{limits.max_text} (limits.max_text)"
            )
        if chunk.offset == 0:
            # Refused at its first chunk, a blob over the limits costs no hashing or copy.
            self._check_room(chunk.blob_id, chunk.total_size)
        blob = self._assembler.add(chunk)
        if blob is None:
            return
        with self._lock:
            self._check_room(blob.blob_id, len(blob.data))
            if not self._closed:
                self._received[blob.blob_id] = blob

    def _check_room(self, blob_id: str, size: int) -> None:
        """Raise :class:`BlobError` unless a blob of ``size`` bytes may be kept next to the
        completed blobs this stream already has."""
        limits = self._limits
        kept = list(self._received.values())
        held = sum(len(other.data) for other in kept)
        if len(kept) >= limits.max_blobs_kept or held + size > limits.max_blob_bytes_kept:
            raise BlobError(
                f"blob {blob_id!r} refused: {len(kept)} blobs of {held} bytes already wait "
                f"for a result on this stream, and the limits are {limits.max_blobs_kept} "
                f"blobs (limits.max_blobs_kept) and {limits.max_blob_bytes_kept} bytes "
                "(limits.max_blob_bytes_kept); send each update just before its result"
            )

    def _evaluate_result(self, result: pb.EvaluateResult) -> None:
        future = self._take(result.task_id, "evaluate")
        with self._lock:
            task = self._evaluations.pop(result.task_id, None)
        try:
            outcome = codec.evaluation_from_proto(result)
            if task is not None and task.detail is not None:
                if not result.HasField("detailed"):
                    raise codec.MessageError("a detailed evaluation was asked for, none came")
                detailed = evaluation_codec.detailed_from_proto(
                    result.detailed,
                    label_names=task.spec.label_names,
                    resamples=task.detail.resamples,
                )
                outcome = replace(outcome, detailed=detailed)
        except codec.MessageError as error:
            _settle(future, error=TaskRefused(Refusal.PROTOCOL_VIOLATION, str(error)))
            raise
        _settle(future, result=outcome)

    def _train_result(self, result: pb.TrainResult, blob_id: str, *, clipped: int) -> None:
        """Settle a training task with its update (or, securely aggregated, masked input)."""
        future = self._take(result.task_id, "train")
        update = self._received.pop(blob_id, None)
        if update is None:
            error = TaskRefused(Refusal.FAILED, f"update blob {blob_id!r} never arrived")
            _settle(future, error=error)
            raise codec.MessageError(error.detail)
        _settle(
            future,
            result=TrainOutcome(
                update=update,
                num_examples=result.num_examples,
                train_loss=result.train_loss,
                steps=result.steps,
                seconds=result.seconds,
                release=codec.release_from_proto(result.release)
                if result.HasField("release")
                else None,
                privacy=codec.privacy_from_proto(result.privacy),
                clipped=clipped,
            ),
        )

    def _take(self, task_id: str, kind: str) -> Future[Any]:
        with self._lock:
            future = self._pending.pop((task_id, kind), None)
        if future is None:
            raise codec.MessageError(f"no task {task_id!r} waits for {kind}")
        return future

    def _take_all(self, task_id: str) -> list[Future[Any]]:
        with self._lock:
            keys = [key for key in self._pending if key[0] == task_id]
            futures = [self._pending.pop(key) for key in keys]
        if not futures:
            raise codec.MessageError(f"no task {task_id!r} is pending")
        return futures

    def _submit(
        self,
        task_id: str,
        answers: list[str],
        message: pb.CoordinatorMessage,
        weights: Blob | None = None,
    ) -> list[Future[Any]]:
        """Queue ``message`` (after ``weights``, unless this stream has them) and one future
        per answer it expects."""
        futures: list[Future[Any]] = [Future() for _ in answers]
        with self._lock:
            if self._closed:
                for future in futures:
                    _settle(future, error=NodeDropped(f"{self.name} is not connected"))
                return futures
            for answer, future in zip(answers, futures, strict=True):
                self._pending[(task_id, answer)] = future
            if weights is not None and weights.blob_id not in self._sent_blobs:
                self._sent_blobs.add(weights.blob_id)
                self._outbound.put(weights)
            self._outbound.put(message)
        return futures
