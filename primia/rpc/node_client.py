"""The data-owner node: dial out to the coordinator, keep one stream, do what it asks.

The node opens a mutual-TLS channel (it accepts only a coordinator whose certificate
carries ``coordinator_name``), sends Hello on a ``Join`` stream, and then answers every
task pushed down the stream: global weights arrive as chunks, a training task is run by
the :class:`~primia.federated.data_owner.DataOwner` (which may refuse it), and the update
goes back as chunks followed by the result — or, when the task asks for secure
aggregation, through the protocol's steps (keys, shares, masked input, revealed shares;
:class:`~primia.federated.secure.SecureContribution`), so the coordinator never sees it.
Anything it cannot use is answered with a refusal that says why; nothing the coordinator
sends can crash the node.

Before any task, the coordinator's Welcome announces the run's plan (model, training
plan, aggregation): the node checks it as it would check every round's task
(:meth:`~primia.federated.data_owner.DataOwner.check_plan`) and answers that it takes
part, or refuses to join, says why, and stops (:class:`PlanRefused`): such a refusal
would recur in every round. A round the coordinator abandons after the node trained is
marked in the node's ledger (the release's ε stays spent) and its log.

When the coordinator is gone the node tries again, waiting 1, 2, 4 … up to
``reconnect_max_s`` seconds (with jitter, so a consortium's nodes do not all return at
once). It does not retry what retrying cannot fix: a refused certificate, name or plan,
a TLS handshake failed on a certificate, or its own certificate and CA file that do not
agree end it with the same diagnosis as ``primia check``
(:func:`~primia.rpc.probe.diagnose`). Its privacy ledger is on disk and written
before any release, so a lost connection never loses a spent ε.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from primia.blobs import MAX_MESSAGE_SIZE, Blob, BlobAssembler, BlobChunk, BlobError
from primia.crypto.ring import ring_bytes
from primia.crypto.secagg import AggregationFailed, ProtocolViolation
from primia.errors import LedgerError, PrimiaError
from primia.federated.data_owner import DataOwner
from primia.federated.policy import roster_problems
from primia.federated.secure import SecureContribution
from primia.federated.tasks import (
    EvaluateTask,
    LocalTraining,
    Refusal,
    TaskRefused,
    TrainOutcome,
    TrainTask,
)
from primia.limits import LimitExceeded
from primia.rpc import codec, evaluation_codec, methods, secure_codec
from primia.rpc.chunk_wire import messages_of
from primia.rpc.generated import federation_pb2 as pb
from primia.rpc.node_config import NodeConfig
from primia.rpc.probe import diagnose
from primia.rpc.text_fields import check_strings
from primia.rpc.tls import secure_channel

log = logging.getLogger(__name__)

MAX_TEXT = 1024
"""The longest string field a node reads from its coordinator (as the coordinator's own
``limits.max_text`` bounds what a node sends)."""
ID_FIELDS = ("run_id", "node_name", "task_id")
"""The coordinator's names and ids a node logs and records: printable text only."""
FREE_TEXT_KINDS = ("shutdown", "abandoned", "error")
"""Messages whose free text (a reason, a detail) is cut and escaped where it is logged."""

_END = object()
BLOBS_KEPT = 1
"""Received blobs a node keeps. Tasks name only the latest weights sent down the stream
(the weights of round t serve its evaluation and round t+1's training), so one is
enough; each one more holds a model's size of memory and delays the reuse of receive
buffers (see :class:`~primia.blobs.BufferPool`) by a round."""


class JoinRefused(PrimiaError):
    """The coordinator refused this node (certificate, role, roster or Hello), or the TLS
    handshake failed on a certificate; retrying won't help."""


class PlanRefused(PrimiaError):
    """This node refuses to join the coordinator's run: it would refuse every round."""


class FederationEnded(PrimiaError):
    """The coordinator said its federation failed (for a node that exits when done)."""


@dataclass(frozen=True)
class _Ending:
    """How a session ended: the coordinator's Shutdown, if it sent one."""

    finished: bool = False
    failed: bool = False
    reason: str = ""


class NodeClient:
    """One node's connection to its coordinator; :meth:`serve` runs until told to stop."""

    def __init__(self, config: NodeConfig, owner: DataOwner) -> None:
        self.config = config
        self.owner = owner
        self.stop_event = threading.Event()

    @classmethod
    def from_config(cls, config: NodeConfig, *, default_image_size: int = 64) -> NodeClient:
        """The node ``config`` describes: its data owner (data, ledger, limits) and link."""
        owner = DataOwner(
            data=config.data,
            privacy=config.privacy,
            limits=config.limits,
            compute=config.compute,
            state_dir=config.state_dir,
            default_image_size=default_image_size,
            policy=config.policy,
        )
        return cls(config, owner)

    def serve(self) -> None:
        """Stay connected (reconnecting with back-off) until stopped or, with
        ``exit_when_done``, until a federation finishes (:class:`FederationEnded` if it
        failed). Raises :class:`JoinRefused` or :class:`PlanRefused` when trying again
        cannot help."""
        config = self.config
        delay = 1.0
        while not self.stop_event.is_set():
            try:
                ending = self._session()
                delay = 1.0
                if ending.finished and config.exit_when_done:
                    if ending.failed:
                        raise FederationEnded(ending.reason)
                    return
            except grpc.RpcError as error:
                failure = diagnose(
                    config.coordinator,
                    error,
                    files=config.tls,
                    server_name=config.coordinator_name,
                    what="Join",
                )
                if failure.lasting:
                    raise JoinRefused(str(failure)) from error
                log.warning("coordinator unreachable: %s", failure)
            wait = delay * random.uniform(0.8, 1.2)
            log.info("connecting again in %.1f s", wait)
            if self.stop_event.wait(wait):
                return
            delay = min(delay * 2, self.config.reconnect_max_s)

    def stop(self) -> None:
        self.stop_event.set()

    def _session(self) -> _Ending:
        """One connection, and how it ended."""
        outbound: queue.Queue[object] = queue.Queue()
        outbound.put(pb.NodeMessage(hello=codec.info_to_proto(self.owner.info())))
        config = self.config
        with secure_channel(
            config.coordinator, config.tls, server_name=config.coordinator_name
        ) as channel:
            responses = methods.join(channel)(_drain(outbound))
            stopper = threading.Thread(target=self._cancel_on_stop, args=(responses,), daemon=True)
            stopper.start()
            try:
                return _Session(self.owner, outbound, config.tls.read()).run(responses)
            finally:
                outbound.put(_END)

    def _cancel_on_stop(self, call: grpc.RpcContext) -> None:
        self.stop_event.wait()
        call.cancel()


class _Session:
    def __init__(
        self, owner: DataOwner, outbound: queue.Queue[object], tls: tuple[bytes, bytes, bytes]
    ) -> None:
        self._owner = owner
        self._outbound = outbound
        self._ca, self._certificate, self._key = tls
        self._assembler = BlobAssembler()
        self._blobs: OrderedDict[str, Blob] = OrderedDict()
        self._name = ""
        self._run = ""
        """The coordinator's run id (from its Welcome): the ledger counts ε per run."""
        self._secure: dict[str, SecureContribution] = {}
        """The round in secure aggregation, by task id (one at a time)."""
        self._refused: PlanRefused | None = None
        """Set when this node refused to join the run."""

    def run(self, responses: Iterator[pb.CoordinatorMessage | BlobChunk]) -> _Ending:
        for message in responses:
            if self._refused is not None:
                continue  # nothing more is done for a run this node refused to join
            if isinstance(message, BlobChunk):
                self._chunk(message)
                continue
            kind = message.WhichOneof("kind")
            problem = _text_problem(message, kind)
            if problem is not None and kind == "welcome":
                self._refuse_run(TaskRefused(Refusal.INVALID_PLAN, problem))
                continue
            if problem is not None:
                log.error("ignored a %s message from the coordinator: %s", kind, problem)
                continue
            if kind == "welcome":
                self._name = message.welcome.node_name
                self._run = message.welcome.run_id
                log.info(
                    "joined the federation as %s (run %s)",
                    message.welcome.node_name,
                    message.welcome.run_id,
                )
                self._check_record(message.welcome)
                self._answer_plan(message.welcome)
            elif kind == "chunk":
                self._chunk(message.chunk)
            elif kind == "train":
                self._train(message.train)
            elif kind == "evaluate":
                self._evaluate(message.evaluate)
            elif kind in ("key_roster", "share_delivery", "unmask_request", "survivor_signatures"):
                self._secure_step(getattr(message, kind))
            elif kind == "abandoned":
                self._abandoned(message.abandoned)
            elif kind == "shutdown":
                shutdown = message.shutdown
                reason = codec.printable(shutdown.reason)
                if shutdown.failed:
                    log.error("the coordinator ended the session: %s", reason)
                else:
                    log.info("the coordinator ended the session: %s", reason)
                return _Ending(shutdown.finished, shutdown.failed, reason)
            elif kind == "error":
                log.warning(
                    "the coordinator could not use a message: %s",
                    codec.printable(message.error.detail),
                )
        if self._refused is not None:
            raise self._refused
        log.warning("the coordinator closed the stream")
        return _Ending()

    def _answer_plan(self, welcome: pb.Welcome) -> None:
        """Accept the run's plan, or refuse to join: tell the coordinator why, and raise
        :class:`PlanRefused` (every round would be refused alike). A Welcome without a plan
        (a job whose rounds differ) is accepted; each task is then checked alone."""
        try:
            if welcome.HasField("plan"):
                plan = codec.federation_plan_from_proto(welcome.plan)
                self._owner.check_plan(plan, run=self._run)
        except (TaskRefused, codec.MessageError) as error:
            self._refuse_run(
                error
                if isinstance(error, TaskRefused)
                else TaskRefused(Refusal.INVALID_PLAN, str(error))
            )
            return
        self._send(pb.NodeMessage(plan_answer=pb.PlanAnswer(accepted=True)))

    def _refuse_run(self, refusal: TaskRefused) -> None:
        """Tell the coordinator why this node does not join its run; :meth:`run` raises
        :class:`PlanRefused` once the coordinator, having read the answer, ends the stream."""
        log.error("refused to join run %s: %s", self._run, refusal)
        answer = pb.PlanAnswer(accepted=False, refusal=codec.refusal_to_proto("", refusal))
        self._send(pb.NodeMessage(plan_answer=answer))
        self._refused = PlanRefused(
            f"this node refuses to join the coordinator's run {self._run}: {refusal}"
        )

    def _abandoned(self, message: pb.RoundAbandoned) -> None:
        """The coordinator abandoned the round of one of our tasks: a release made for it
        stays charged, and the ledger says it was never used."""
        reason = codec.printable(message.reason)
        self._secure.pop(message.task_id, None)
        try:
            epsilon = self._owner.abandoned(message.task_id, reason)
        except LedgerError as error:
            log.error("could not mark the release of %s abandoned: %s", message.task_id, error)
            return
        if epsilon is not None:
            log.warning(
                "the coordinator abandoned the round of task %s (%s): the update this node "
                "released (eps %.3g, charged) was never used; the ledger keeps the charge, "
                "marked abandoned",
                message.task_id,
                reason,
                epsilon,
            )

    def _check_record(self, welcome: pb.Welcome) -> None:
        """Compare the ledger with the ε the coordinator recorded; if it is below, say so
        to the coordinator (its status shows it) — training tasks are then refused."""
        recorded = (
            welcome.recorded_epsilon_spent if welcome.HasField("recorded_epsilon_spent") else None
        )
        problem = self._owner.check_coordinator_record(recorded)
        if problem is None:
            return
        log.error("%s", problem)
        alarm = pb.LedgerAlarm(
            ledger_epsilon=self._owner.ledger.spent_epsilon(),
            recorded_epsilon=recorded or 0.0,
            detail=str(problem),
        )
        self._send(pb.NodeMessage(ledger_alarm=alarm))

    def _chunk(self, chunk: BlobChunk | pb.Chunk) -> None:
        try:
            blob = self._assembler.add(chunk)
        except BlobError as error:
            log.warning("dropped a blob from the coordinator: %s", error)
            return
        if blob is not None:
            self._blobs[blob.blob_id] = blob
            while len(self._blobs) > BLOBS_KEPT:
                self._blobs.popitem(last=False)

    def _train(self, message: pb.TrainTask) -> None:
        """Train and send the update; with secure aggregation, only advertise keys now:
        the node trains once the shares are exchanged (see :meth:`_secure_step`)."""
        task_id = message.task_id
        try:
            task = TrainTask(
                task_id=task_id,
                round=message.round,
                spec=codec.spec_from_proto(message.model),
                weights=self._weights(message.weights_blob),
                plan=codec.plan_from_proto(message.plan),
                secure=secure_codec.secure_task_from_proto(
                    message.secure_aggregation, message.round
                )
                if message.HasField("secure_aggregation")
                else None,
            )
            if task.secure is not None:
                self._secure.clear()  # an unfinished earlier round is abandoned
                # The node's policy first: nothing is advertised for a round it refuses.
                self._owner.admit(task, run=self._run)
                self._owner.sessions.claim(task.secure.setup.session)
                contribution = SecureContribution(
                    task,
                    self._name,
                    certificate_pem=self._certificate,
                    key_pem=self._key,
                    ca_pem=self._ca,
                )
                keys = contribution.client.advertise()
                self._secure[task_id] = contribution
                self._send(pb.NodeMessage(keys=secure_codec.keys_to_proto(task_id, keys)))
                return
            outcome = self._run_training(task).as_safetensors(f"{task_id}-update")
        except Exception as error:  # any failure is an answer to this task, not a crash
            self._refuse(task_id, error)
            return
        self._outbound.put(outcome.update)
        result = _result_of(outcome)
        result.task_id = task_id
        result.update_blob = outcome.update.blob_id
        self._send(pb.NodeMessage(train_result=result))

    def _run_training(self, task: TrainTask) -> LocalTraining:
        log.info("round %d: training (%s)", task.round, task.task_id)

        def progress(fraction: float, stage: str) -> None:
            self._send(
                pb.NodeMessage(
                    progress=pb.TaskProgress(task_id=task.task_id, fraction=fraction, stage=stage)
                )
            )

        trained = self._owner.train(task, on_progress=progress, run=self._run)
        if trained.release is not None:
            log.info(
                "round %d: released an update at eps %.2f (sigma %.2f); spent %.2f of %.2f",
                task.round,
                trained.release.epsilon,
                trained.release.noise_multiplier,
                trained.privacy.epsilon_spent,
                trained.privacy.epsilon_budget,
            )
        return trained

    def _secure_step(
        self,
        message: pb.KeyRoster | pb.ShareDelivery | pb.UnmaskRequest | pb.SurvivorSignatures,
    ) -> None:
        """One step of secure aggregation for the task the message names; a message that
        fails a check abandons the round (the node reveals nothing more). Training runs
        between the share delivery and the masked upload; shares are revealed only after
        the consistency round (the survivors' signatures on the survivor set)."""
        task_id = message.task_id
        contribution = self._secure.get(task_id)
        try:
            if contribution is None:
                raise TaskRefused(
                    Refusal.PROTOCOL_VIOLATION,
                    f"no secure aggregation of task {task_id!r} is under way at this node",
                )
            client = contribution.client
            if isinstance(message, pb.KeyRoster):
                roster = secure_codec.roster_from_proto(message)
                bundle = client.share(roster)  # verifies every advertisement first
                advertised = [keys.node for keys in roster.keys]
                problems = roster_problems(self._owner.policy, advertised)
                if problems:
                    raise TaskRefused(Refusal.POLICY, "; ".join(problems))
                self._send(pb.NodeMessage(shares=secure_codec.bundle_to_proto(task_id, bundle)))
            elif isinstance(message, pb.ShareDelivery):
                client.receive_shares(secure_codec.delivery_from_proto(message, self._name))
                contribution.prepare_masks()
                trained = self._run_training(contribution.task)
                masked = contribution.masked_input(trained)
                blob = Blob.of(f"{task_id}-masked", ring_bytes(masked.values))
                self._outbound.put(blob)
                upload = pb.MaskedInput(
                    task_id=task_id,
                    session_id=masked.session,
                    vector_blob=blob.blob_id,
                    clipped=masked.clipped,
                    result=_result_of(trained.outcome(blob, clipped=masked.clipped)),
                )
                self._send(pb.NodeMessage(masked_input=upload))
            elif isinstance(message, pb.UnmaskRequest) and client.checks.consistency_round:
                signature = client.confirm(secure_codec.request_from_proto(message))
                self._send(
                    pb.NodeMessage(
                        survivor_signature=secure_codec.signature_to_proto(task_id, signature)
                    )
                )
            else:
                if isinstance(message, pb.UnmaskRequest):
                    revealed = client.unmask_without_consistency_round(
                        secure_codec.request_from_proto(message)
                    )
                else:
                    revealed = client.unmask(secure_codec.signatures_from_proto(message))
                del self._secure[task_id]
                self._send(
                    pb.NodeMessage(unmask_shares=secure_codec.unmask_to_proto(task_id, revealed))
                )
        except (ProtocolViolation, AggregationFailed) as error:
            self._secure.pop(task_id, None)
            log.warning("abandoned secure aggregation of %s: %s", task_id, error)
            self._refuse(task_id, TaskRefused(Refusal.PROTOCOL_VIOLATION, str(error)))
        except Exception as error:
            self._secure.pop(task_id, None)
            self._refuse(task_id, error)

    def _evaluate(self, message: pb.EvaluateTask) -> None:
        task_id = message.task_id
        try:
            task = EvaluateTask(
                task_id=task_id,
                round=message.round,
                spec=codec.spec_from_proto(message.model),
                weights=self._weights(message.weights_blob),
                split=codec.split_from_proto(message.split),
                detail=evaluation_codec.detail_from_proto(message.detail)
                if message.HasField("detail")
                else None,
            )
            outcome = self._owner.evaluate(task)
        except Exception as error:
            self._refuse(task_id, error)
            return
        result = codec.evaluation_to_proto(task_id, outcome)
        if outcome.detailed is not None:
            result.detailed.CopyFrom(evaluation_codec.detailed_to_proto(outcome.detailed))
        answer = pb.NodeMessage(evaluate_result=result)
        size = answer.ByteSize()
        if outcome.detailed is not None and size > MAX_MESSAGE_SIZE:
            # Sending it would end the stream (gRPC refuses messages over the limit).
            refusal = evaluation_codec.oversize_refusal(outcome.detailed, size, MAX_MESSAGE_SIZE)
            self._refuse(task_id, refusal)
            return
        self._send(answer)

    def _weights(self, blob_id: str) -> Blob:
        blob = self._blobs.get(blob_id)
        if blob is None:
            raise TaskRefused(
                Refusal.INVALID_WEIGHTS, f"weights blob {blob_id!r} was not received in full"
            )
        return blob

    def _refuse(self, task_id: str, error: Exception) -> None:
        if isinstance(error, TaskRefused):
            refusal = error
            log.warning("refused task %s: %s", task_id, error)
        elif isinstance(error, codec.MessageError):
            refusal = TaskRefused(Refusal.INVALID_PLAN, str(error))
            log.warning("refused task %s: %s", task_id, error)
        else:
            refusal = TaskRefused(Refusal.FAILED, f"{type(error).__name__}: {error}")
            log.exception("task %s failed", task_id)
        self._send(pb.NodeMessage(refused=codec.refusal_to_proto(task_id, refusal)))

    def _send(self, message: pb.NodeMessage) -> None:
        self._outbound.put(message)


def _text_problem(message: pb.CoordinatorMessage, kind: str | None) -> str | None:
    """Why the coordinator's ``message`` (of oneof ``kind``) must not be used: a string
    field over :data:`MAX_TEXT` characters, or a name or id (``run_id``, ``node_name``,
    ``task_id``) that is not printable text. The node writes these into its log lines
    and, the run and task ids, into its privacy ledger's releases: a lying coordinator
    forged log lines with a newline in its run id, and grew every release with a
    megabyte one. None if it is fine. A chunk is left to the blob assembler (reading
    its fields would copy its data); the free text of :data:`FREE_TEXT_KINDS` is cut
    and escaped where it is logged, so a long reason still ends the session."""
    if kind is None or kind == "chunk":
        return None
    if kind not in FREE_TEXT_KINDS:
        try:
            check_strings(message, MAX_TEXT)
        except LimitExceeded as error:
            return (
                f"the coordinator's {kind} message has a text field over {MAX_TEXT} "
                f"characters ({codec.printable(str(error))}); primia's coordinator sends "
                "short names and ids"
            )
    body = getattr(message, kind)
    for field in ID_FIELDS:
        if field in body.DESCRIPTOR.fields_by_name:
            text = getattr(body, field)
            if len(text) > MAX_TEXT or not text.isprintable():
                return (
                    f"the coordinator's {kind} message has a {field} of {len(text)} "
                    f"characters, over {MAX_TEXT} or with control characters "
                    f"({codec.printable(text[:64])!r}); primia's coordinator sends short "
                    "printable ids"
                )
    return None


def _result_of(outcome: TrainOutcome) -> pb.TrainResult:
    """What a node reports of its training (the update travels separately)."""
    result = pb.TrainResult(
        num_examples=outcome.num_examples,
        train_loss=outcome.train_loss,
        steps=outcome.steps,
        seconds=outcome.seconds,
        privacy=codec.privacy_to_proto(outcome.privacy),
    )
    if outcome.release is not None:
        result.release.CopyFrom(codec.release_to_proto(outcome.release))
    return result


def _drain(outbound: queue.Queue[object]) -> Iterator[pb.NodeMessage | bytes]:
    """The request stream: queued messages, blobs cut into chunk messages as they are
    sent."""
    while True:
        item = outbound.get()
        if item is _END:
            return
        if isinstance(item, Blob):
            yield from messages_of(item, envelope=True)
        else:
            assert isinstance(item, pb.NodeMessage)
            yield item
