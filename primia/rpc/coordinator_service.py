"""The coordinator's gRPC service: a thin layer of authentication and message plumbing.

Who may call what (the role and name come from the peer's verified certificate):

* ``Join``      — role ``node`` and a name on the roster;
* ``Probe``     — role ``node`` on the roster, or ``coordinator``;
* ``GetStatus`` — any certificate of the consortium; what it shows depends on the role
  (:class:`~primia.federated.status_access.StatusAccess`).

Every refusal is logged with its reason and answered with UNAUTHENTICATED or
PERMISSION_DENIED. A peer's bad message is answered with a ProtocolError (or
INVALID_ARGUMENT before a session exists); it never takes the server down. Limits on
calls, silence, text and blobs (:mod:`primia.limits`) are applied by the
server's :class:`~primia.rpc.guard.CallGuard` and by each :class:`NodeSession`.
A node holds one ``Join`` stream at a time: a second one with its name is refused with
ALREADY_EXISTS while the first is alive, never taken over silently.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import grpc

from primia.blobs import MIB, BlobAssembler, BlobChunk, BlobError
from primia.federated.coordinator import FederationStatus
from primia.federated.privacy_record import below
from primia.federated.registry import AlreadyConnected, NodeRegistry
from primia.federated.status_access import StatusAccess, StatusDenied
from primia.federated.tasks import FederationPlan
from primia.limits import LimitExceeded, clean_text
from primia.pki import Identity, Role
from primia.rpc import codec
from primia.rpc.coordinator_session import ChunkMessages, NodeSession
from primia.rpc.generated import federation_pb2 as pb
from primia.rpc.generated import federation_pb2_grpc as pb_grpc
from primia.rpc.guard import CallGuard
from primia.rpc.text_fields import check_strings
from primia.rpc.tls import abort, authorize

log = logging.getLogger(__name__)

MAX_PROBE_SIZE = 1024 * MIB


class CoordinatorService(pb_grpc.CoordinatorServicer):
    def __init__(
        self,
        *,
        registry: NodeRegistry,
        ca_pem: bytes,
        status: Callable[[], FederationStatus],
        guard: CallGuard,
        status_access: StatusAccess | None = None,
        plan: FederationPlan | None = None,
    ) -> None:
        """``plan``: what every round asks, sent in Welcome for the node to accept before
        it is counted (None, for a job whose rounds differ: the nodes accept at once and
        check each task alone)."""
        self._registry = registry
        self._plan = plan
        self._ca_pem = ca_pem
        self._status = status
        self._guard = guard
        self._limits = guard.limits
        self._status_access = status_access or StatusAccess()
        self._readers: list[threading.Thread] = []
        self._probing: set[str] = set()
        self._probe_lock = threading.Lock()
        self._chunk_messages = ChunkMessages()

    def Join(
        self, request_iterator: Iterator[pb.NodeMessage | BlobChunk], context: grpc.ServicerContext
    ) -> Iterator[pb.CoordinatorMessage | bytes]:
        identity = self._authorize(context, "Join", roles=("node",), roster=True)
        try:
            first = next(request_iterator)
        except StopIteration:
            return
        if isinstance(first, BlobChunk) or first.WhichOneof("kind") != "hello":
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "the first message must be Hello")
        try:
            check_strings(first, self._limits.max_text)
        except LimitExceeded as exceeded:
            self._guard.warn(
                identity.name, "text", "refused Join of %s: %s", identity.name, exceeded
            )
            abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exceeded))
        try:
            info = codec.info_from_proto(first.hello)
        except codec.MessageError as error:
            log.warning("refused %s: %s", identity.name, error)
            abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(error))
        session = NodeSession(
            identity.name,
            info,
            self._registry,
            self._chunk_messages,
            limits=self._limits,
            active=context.is_active,
            peer=context.peer(),
        )
        try:
            self._registry.admit(session, ready=False)
        except AlreadyConnected as duplicate:
            self._guard.warn(
                identity.name, "duplicate", "refused Join from %s: %s", context.peer(), duplicate
            )
            abort(context, grpc.StatusCode.ALREADY_EXISTS, str(duplicate))
        recorded = self._registry.recorded_epsilon(identity.name)
        if recorded is not None and below(info.privacy.epsilon_spent, recorded):
            alarm = (
                f"its ledger reports eps {info.privacy.epsilon_spent:.4g}, below the "
                f"{recorded:.4g} this run recorded for it"
            )
            log.warning("%s joined, but %s; it should refuse to train", identity.name, alarm)
            self._registry.set_ledger_alarm(identity.name, alarm)
        else:
            self._registry.set_ledger_alarm(identity.name, "")
        context.add_callback(lambda: session.close("the stream ended"))
        reader = threading.Thread(
            target=self._read, args=(session, request_iterator), name=f"read-{identity.name}"
        )
        reader.daemon = True
        self._readers = [thread for thread in self._readers if thread.is_alive()] + [reader]
        dataset = info.dataset
        log.info(
            "%s joined from %s: %d training examples, %s, eps %.2f of %.2f",
            identity.name,
            context.peer(),
            dataset.train_examples,
            clean_text(info.device, 64),
            info.privacy.epsilon_spent,
            info.privacy.epsilon_budget,
        )
        reader.start()
        welcome = pb.Welcome(
            protocol_version=codec.PROTOCOL_VERSION,
            node_name=identity.name,
            run_id=self._status().run_id,
        )
        if recorded is not None:
            welcome.recorded_epsilon_spent = recorded
        if self._plan is not None:
            welcome.plan.CopyFrom(codec.federation_plan_to_proto(self._plan))
        yield from session.outbound(welcome, context.is_active)

    def _read(self, session: NodeSession, messages: Iterator[pb.NodeMessage | BlobChunk]) -> None:
        try:
            for message in messages:
                session.handle(message)
        except grpc.RpcError:
            pass  # the node went away; the session's close below says so
        finally:
            session.close("disconnected")
            self._registry.leave(session)
            log.info("%s left", session.name)

    def join_readers(self, timeout: float) -> None:
        """Wait (up to ``timeout`` each) for the sessions' reader threads to finish."""
        for reader in list(self._readers):
            reader.join(timeout)

    def GetStatus(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.StatusReply:
        identity = self._authorize(context, "GetStatus", roles=("coordinator", "node", "inference"))
        try:
            status = self._status_access.view(
                self._status(), role=identity.role, name=identity.name
            )
        except StatusDenied as denied:
            self._guard.warn(identity.name, "status", "refused GetStatus: %s", denied)
            abort(context, grpc.StatusCode.PERMISSION_DENIED, str(denied))
        return codec.reply_of(status)

    def Probe(
        self, request_iterator: Iterator[BlobChunk | pb.Chunk], context: grpc.ServicerContext
    ) -> pb.ProbeReceipt:
        identity = self._authorize(context, "Probe", roles=("node", "coordinator"), roster=True)
        # One probe at a time per certificate, so a peer holds at most one probe's bytes.
        with self._probe_lock:
            busy = identity.name in self._probing
            self._probing.add(identity.name)
        if busy:
            abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{identity.name} already runs a probe; one at a time per certificate",
            )
        try:
            return self._probe(identity, request_iterator, context)
        finally:
            with self._probe_lock:
                self._probing.discard(identity.name)

    def _probe(
        self,
        identity: Identity,
        request_iterator: Iterator[BlobChunk | pb.Chunk],
        context: grpc.ServicerContext,
    ) -> pb.ProbeReceipt:
        size = min(MAX_PROBE_SIZE, self._limits.max_blob_bytes_kept)
        assembler = BlobAssembler(max_size=size, max_in_flight=1)
        started = time.perf_counter()
        try:
            for chunk in request_iterator:
                blob = assembler.add(chunk)
                if blob is not None:
                    return pb.ProbeReceipt(
                        size=len(blob.data),
                        sha256=blob.sha256,
                        seconds=time.perf_counter() - started,
                    )
        except BlobError as error:
            self._guard.warn(
                identity.name, "probe", "probe from %s failed: %s", identity.name, error
            )
            abort(context, grpc.StatusCode.DATA_LOSS, str(error))
        abort(context, grpc.StatusCode.INVALID_ARGUMENT, "the probe ended before its blob")

    def _authorize(
        self,
        context: grpc.ServicerContext,
        call: str,
        *,
        roles: Sequence[Role],
        roster: bool = False,
    ) -> Identity:
        identity = authorize(context, self._ca_pem, call, roles=roles)
        on_roster = identity.name in self._registry.roster or identity.role == "coordinator"
        if roster and not on_roster:
            reason = f"{identity.name} is not on the coordinator's roster"
            log.warning("refused %s from %s: %s", call, context.peer(), reason)
            abort(context, grpc.StatusCode.PERMISSION_DENIED, reason)
        return identity
