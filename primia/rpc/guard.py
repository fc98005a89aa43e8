"""Every call of a gRPC server under :class:`~primia.limits.ServerLimits`.

:func:`guarded_server` builds a server whose calls all pass a :class:`CallGuard` before
their handler runs:

1. Every method is served as a *client-streaming* one (a unary request is one message
   on the wire either way), so the guard runs the moment a call opens, before anything
   waits for a message. gRPC's sync server would otherwise hold a worker thread in its
   own wait for a unary request, where no limit can reach it.
2. The guard reads the peer's certificate name and admits the call
   (:class:`~primia.limits.Admission`) or ends it with RESOURCE_EXHAUSTED
   naming the limit. The pool has a thread for every call it can admit, and gRPC
   refuses calls beyond the pool instead of queueing them, so held calls never delay
   anyone else's.
3. A watchdog thread ends a call whose first message (or next message, mid-stream) is
   late with DEADLINE_EXCEEDED naming the limit; the handler's wait then ends.
4. A message that cannot be parsed ends its call with INVALID_ARGUMENT, logged once per
   peer per ``log_every_s`` with a count, instead of gRPC's traceback for each; a unary
   request with a string over ``max_text`` is refused with RESOURCE_EXHAUSTED (streams
   check their own messages, e.g. :class:`~primia.rpc.coordinator_session.NodeSession`).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf.message import Message

from primia.limits import (
    DEFAULT_MAX_CALLS,
    REFUSING_THREADS,
    Admission,
    Deadlines,
    LimitExceeded,
    LogThrottle,
    ServerLimits,
    clean_text,
)
from primia.pki import CertificateRejected
from primia.rpc.text_fields import check_strings
from primia.rpc.tls import peer_identity, server_options

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Malformed:
    """What the guard's deserializer returns for bytes that are not the method's message."""

    error: str


class CallEnded(grpc.RpcError):
    """Raised from a guarded request iterator once the guard has ended the call."""


def end_call(context: grpc.ServicerContext, code: grpc.StatusCode, detail: str) -> None:
    """End ``context``'s call now, from any thread, with ``code`` and ``detail``.

    ``ServicerContext.abort`` works only in the handler's thread, and ``cancel`` sends a
    bare CANCELLED; gRPC's call object cancels with a status the client then sees.
    """
    call = getattr(getattr(context, "_rpc_event", None), "call", None)
    try:
        call.cancel(code.value[0], detail)  # type: ignore[union-attr]
    except (AttributeError, TypeError):  # another gRPC build: the client sees CANCELLED
        context.cancel()


class _Watchdog:
    """Ends calls whose deadline passed; one thread per guard."""

    def __init__(self, name: str) -> None:
        self._deadlines = Deadlines()
        self._contexts: dict[int, grpc.ServicerContext] = {}
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"{name}-watchdog", daemon=True)
        self._thread.start()

    def arm(self, key: int, context: grpc.ServicerContext, seconds: float, reason: str) -> None:
        with self._changed:
            self._deadlines.arm(key, time.monotonic() + seconds, reason)
            self._contexts[key] = context
            self._changed.notify()

    def disarm(self, key: int) -> None:
        with self._changed:
            self._deadlines.disarm(key)
            self._contexts.pop(key, None)

    def _run(self) -> None:
        while True:
            with self._changed:
                next_at = self._deadlines.next_at()
                wait = None if next_at is None else max(next_at - time.monotonic(), 0.0)
                self._changed.wait(wait)
                due = self._deadlines.due(time.monotonic())
                contexts = [(self._contexts.pop(key), reason) for key, reason in due]  # type: ignore[call-overload]
            for context, reason in contexts:
                end_call(context, grpc.StatusCode.DEADLINE_EXCEEDED, reason)


class CallGuard:
    """The limits of one server, applied to its calls; see the module docstring."""

    def __init__(
        self,
        limits: ServerLimits,
        ca_pem: bytes,
        *,
        name: str,
        long_lived: Collection[str] = (),
    ) -> None:
        """``long_lived``: methods (e.g. ``"Join"``) whose streams may be silent between
        messages for as long as the server keeps them (keepalive watches their peer)."""
        self.limits = limits.sized(DEFAULT_MAX_CALLS)
        self.admission = Admission(limits)
        self._ca_pem = ca_pem
        self._name = name
        self._long_lived = frozenset(long_lived)
        self._watchdog = _Watchdog(name)
        self._keys = itertools.count()
        self._throttle = LogThrottle(limits.log_every_s)

    # ---- logging -----------------------------------------------------------------------

    def warn(self, peer: str, kind: str, message: str, *args: object) -> None:
        """Log ``message`` at most once per ``log_every_s`` for (``peer``, ``kind``)."""
        held_back = self._throttle.admit((peer, kind), time.monotonic())
        if held_back is None:
            return
        suffix = f" ({held_back} more like it not logged)" if held_back else ""
        log.warning(f"%s: {message}{suffix}", self._name, *args)

    # ---- calls ---------------------------------------------------------------------------

    def peer_of(self, context: grpc.ServicerContext) -> str:
        """The name in the peer's certificate, or its address if it has none we trust
        (the handler's own check then refuses it)."""
        try:
            return peer_identity(context, self._ca_pem).name
        except CertificateRejected:
            return f"unverified peer {clean_text(context.peer(), 64)}"

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """``handler`` served as a client-streaming method behind this guard."""
        short = method.rsplit("/", 1)[-1]
        deserialize = _safe(handler.request_deserializer)
        if handler.request_streaming:
            inner: Callable[..., Any] = handler.stream_stream or handler.stream_unary
        else:
            unary: Callable[..., Any] = handler.unary_stream or handler.unary_unary

            def inner(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                try:
                    request = next(requests)
                except StopIteration:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{short} needs a request")
                if isinstance(request, Message):
                    try:
                        check_strings(request, self.limits.max_text)
                    except LimitExceeded as exceeded:
                        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exceeded))
                return unary(request, context)

        if handler.response_streaming:

            def streaming(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                release = self._admit(short, context)
                try:
                    yield from inner(self._requests(short, requests, context), context)
                except CallEnded as ended:
                    _quiet_end(context, ended)
                finally:
                    release()

            return grpc.stream_stream_rpc_method_handler(
                streaming, deserialize, handler.response_serializer
            )

        def single(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            release = self._admit(short, context)
            try:
                return inner(self._requests(short, requests, context), context)
            except CallEnded as ended:
                _quiet_end(context, ended)
            finally:
                release()

        return grpc.stream_unary_rpc_method_handler(
            single, deserialize, handler.response_serializer
        )

    def _admit(self, method: str, context: grpc.ServicerContext) -> Callable[[], None]:
        peer = self.peer_of(context)
        try:
            self.admission.enter(peer)
        except LimitExceeded as exceeded:
            self.warn(peer, exceeded.limit, "refused %s from %s: %s", method, peer, exceeded)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exceeded))
        released = threading.Event()

        def release() -> None:
            if not released.is_set():
                released.set()
                self.admission.leave(peer)

        # Also when the call ends without its handler returning (a cancelled stream whose
        # response generator is never resumed).
        context.add_callback(release)
        return release

    def _requests(
        self, method: str, requests: Iterator[Any], context: grpc.ServicerContext
    ) -> Iterator[Any]:
        key = next(self._keys)
        limits = self.limits
        silence = None if method in self._long_lived else limits.silence_s
        first = True
        while True:
            if first:
                self._watchdog.arm(
                    key,
                    context,
                    limits.first_message_s,
                    f"{method}: no message within {limits.first_message_s:g} s of the call "
                    f"opening (limits.first_message_s); send the request when you open the call",
                )
            elif silence is not None:
                self._watchdog.arm(
                    key,
                    context,
                    silence,
                    f"{method}: the stream was silent for {silence:g} s mid-stream "
                    "(limits.silence_s); keep sending or close it",
                )
            try:
                message = next(requests)
            except StopIteration:
                return
            finally:
                self._watchdog.disarm(key)
            first = False
            if isinstance(message, Malformed):
                peer = self.peer_of(context)
                detail = f"{method}: a message could not be parsed ({message.error})"
                self.warn(peer, "malformed", "ended a call of %s: %s", peer, detail)
                end_call(context, grpc.StatusCode.INVALID_ARGUMENT, detail)
                raise CallEnded(detail)
            yield message


def _quiet_end(context: grpc.ServicerContext, ended: CallEnded) -> NoReturn:
    """Leave the handler of a call the guard has ended, without gRPC logging a traceback
    (it logs one for any exception but an abort or its own)."""
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(ended))
    raise AssertionError("unreachable: context.abort raises")


def _safe(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserialize`` returning :class:`Malformed` instead of raising."""
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as error:
            return Malformed(clean_text(f"{type(error).__name__}: {error}", 200))

    return parse


class _Interceptor(grpc.ServerInterceptor):
    def __init__(self, guard: CallGuard) -> None:
        self._guard = guard

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        return self._guard.wrap(handler_call_details.method, handler)


def guarded_server(guard: CallGuard) -> grpc.Server:
    """A gRPC server (mutual TLS is added with its port) whose calls pass ``guard``."""
    limits = guard.limits
    return grpc.server(
        ThreadPoolExecutor(max_workers=limits.pool_size, thread_name_prefix="rpc"),
        interceptors=(_Interceptor(guard),),
        options=server_options(),
        # Beyond the pool gRPC refuses at once (RESOURCE_EXHAUSTED) instead of queueing.
        maximum_concurrent_rpcs=limits.max_calls + REFUSING_THREADS,
    )
