"""One node's session at the coordinator: the :class:`~primia.federated.registry.NodeLink`
that the rounds use, carried by the node's ``Join`` stream.

Outbound, tasks become messages on a queue that the stream's response generator drains
(a blob is cut into chunk messages once for all sessions, when the first sends it, and
goes down a stream once: the evaluation of round t and the training of round t+1 share
the weights). Inbound, the
stream's reader thread hands each message to :meth:`NodeSession.handle`, which settles
the task's future. When the stream ends, every pending future fails with
:class:`~primia.federated.tasks.NodeDropped`.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, InvalidStateError
from typing import Any

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
from primia.nodes import codec
from primia.transport.blobs import Blob, BlobAssembler, BlobError, chunks_of
from primia.transport.generated import federation_pb2 as pb

log = logging.getLogger(__name__)

_END = object()
MAX_UPDATE_SIZE = 8 * 1024 * 1024 * 1024
"""Bytes a node's update may announce; a bigger one is refused before it is buffered."""


class ChunkMessages:
    """The messages carrying the latest blob, cut once and shared by every session of one
    coordinator (all nodes get the same global weights in a round)."""

    def __init__(self) -> None:
        self._latest: tuple[str, list[pb.CoordinatorMessage]] | None = None
        self._lock = threading.Lock()

    def of(self, blob: Blob) -> list[pb.CoordinatorMessage]:
        with self._lock:
            if self._latest is None or self._latest[0] != blob.blob_id:
                messages = [pb.CoordinatorMessage(chunk=chunk) for chunk in chunks_of(blob)]
                self._latest = (blob.blob_id, messages)
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
    ) -> None:
        self.name = name
        self._chunk_messages = chunk_messages or ChunkMessages()
        self.info = info
        self._registry = registry
        self._outbound: queue.Queue[object] = queue.Queue()
        self._pending: dict[str, tuple[str, Future[Any]]] = {}
        self._sent_blobs: set[str] = set()
        self._received: dict[str, Blob] = {}
        self._assembler = BlobAssembler(max_size=MAX_UPDATE_SIZE)
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
        return self._submit(task.task_id, "train", task.weights, message)

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
        return self._submit(task.task_id, "evaluate", task.weights, message)

    def shutdown(self, reason: str, *, finished: bool) -> None:
        self._outbound.put(
            pb.CoordinatorMessage(shutdown=pb.Shutdown(reason=reason, finished=finished))
        )
        self.close(reason)

    def close(self, reason: str) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = list(self._pending.values())
            self._pending.clear()
        for _, future in pending:
            _settle(future, error=NodeDropped(f"{self.name}: {reason}"))
        self._assembler.discard()
        self._outbound.put(_END)

    # ---- the stream -----------------------------------------------------------------

    def outbound(
        self, welcome: pb.Welcome, active: Callable[[], bool]
    ) -> Iterator[pb.CoordinatorMessage]:
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
                yield item

    def handle(self, message: pb.NodeMessage) -> None:
        """Take one message from the node; a bad one is answered with a ProtocolError."""
        try:
            self._dispatch(message)
        except (BlobError, codec.MessageError) as error:
            log.warning("bad message from %s: %s", self.name, error)
            self.report_error(str(error))

    def report_error(self, detail: str) -> None:
        self._outbound.put(pb.CoordinatorMessage(error=pb.ProtocolError(detail=detail)))

    def _dispatch(self, message: pb.NodeMessage) -> None:
        kind = message.WhichOneof("kind")
        if kind == "chunk":
            blob = self._assembler.add(message.chunk)
            if blob is not None:
                self._received[blob.blob_id] = blob
        elif kind == "train_result":
            self._train_result(message.train_result)
        elif kind == "evaluate_result":
            result = message.evaluate_result
            future = self._take(result.task_id, "evaluate")
            _settle(future, result=codec.evaluation_from_proto(result))
        elif kind == "refused":
            future = self._take(message.refused.task_id, None)
            _settle(future, error=codec.refusal_from_proto(message.refused))
        elif kind == "progress":
            progress = message.progress
            self._registry.set_activity(self.name, f"{progress.stage} ({progress.fraction:.0%})")
        else:
            raise codec.MessageError(f"unexpected {kind or 'empty'} message in a session")

    def _train_result(self, result: pb.TrainResult) -> None:
        future = self._take(result.task_id, "train")
        update = self._received.pop(result.update_blob, None)
        if update is None:
            error = TaskRefused(Refusal.FAILED, f"update blob {result.update_blob!r} never arrived")
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
            ),
        )

    def _take(self, task_id: str, kind: str | None) -> Future[Any]:
        with self._lock:
            entry = self._pending.get(task_id)
            if entry is None or (kind is not None and entry[0] != kind):
                raise codec.MessageError(f"no {kind or ''} task {task_id!r} is pending")
            del self._pending[task_id]
        return entry[1]

    def _submit(
        self, task_id: str, kind: str, weights: Blob, message: pb.CoordinatorMessage
    ) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                _settle(future, error=NodeDropped(f"{self.name} is not connected"))
                return future
            self._pending[task_id] = (kind, future)
            if weights.blob_id not in self._sent_blobs:
                self._sent_blobs.add(weights.blob_id)
                self._outbound.put(weights)
            self._outbound.put(message)
        return future
