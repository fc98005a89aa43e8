"""The MPC links of one session: mutual TLS between exactly the session's three parties.

Each party knows, from the session set up over gRPC, the certificate name of each peer, the
roles that peer may hold, and either where to dial it or that the peer dials it. Between
two parties there are two TLS connections, both opened by the dialing party, one per
direction (each TLS connection is written by one thread and read by one thread at its
ends: an OpenSSL connection must not be used by two threads at once).

Establishing a link, the listener:

1. completes a TLS 1.3 handshake that requires a certificate signed by the consortium's CA
   (no certificate, or one from another CA: the handshake fails and nothing else happens);
2. checks the certificate again with :func:`~primia.pki.verify_peer` and that
   its name is one of the session's dialing peers with an allowed role, and closes the
   connection otherwise, without reading or writing any of its bytes;
3. reads the dialer's hello (a fixed ``HELLO`` struct: magic, session id, rank, direction)
   and closes unless the session is this one, the rank is that of the certificate's name,
   and that direction is still expected.

The dialer checks the listener's certificate the same way (host name = the expected name,
then role). A listener binds only to the configured address, on a port of the configured
range, and accepts nothing once its peers are in or ``join_timeout_s`` passed. Refused
connections are logged and never count: the real peer can still join afterwards.

Messages are frames of :mod:`primia.inference.wire`. A party writes its frames from
the calling thread and reads each peer's frames ahead in a receiving thread of its own, so
a send never waits for the peer's computation (both parties of an all-reduce send first,
then receive) and frames from one peer arrive in order; at most two frames' limit of
bytes unread, so that a peer cannot fill its memory with frames nobody asked for.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from primia.errors import PrimiaError
from primia.inference import wire
from primia.pki import CertificateRejected, Identity, TLSFiles, verify_peer

log = logging.getLogger(__name__)

HELLO = struct.Struct("<12s32sBB")
MAGIC = b"primia-mpc/1"
DIALER_WRITES, DIALER_READS = 0, 1
HANDSHAKE_TIMEOUT_S = 10.0
"""How long one incoming connection may take to prove who it is."""
MAX_PENDING_HANDSHAKES = 16
MAX_FRAME_BYTES = 4 << 30
"""The largest frame a party accepts: 4 GiB, above ResNet-18's largest share at batch 8."""


class LinkError(PrimiaError):
    """A link could not be set up, or broke (the peer left, or sent what it may not)."""


class LinkRefused(LinkError):
    """An incoming or outgoing connection was not the peer the session expects."""


@dataclass(frozen=True)
class LinkPeer:
    rank: int
    name: str
    """The name its certificate must carry."""
    roles: tuple[str, ...]
    """Roles its certificate may carry."""
    host: str = ""
    port: int = 0
    """Where to dial it; port 0: it dials this party."""

    @property
    def dials_us(self) -> bool:
        return self.port == 0


@dataclass(frozen=True)
class LinkPlan:
    """One party's view of a session's links."""

    session_id: str
    rank: int
    peers: tuple[LinkPeer, ...]
    tls: TLSFiles
    listen_host: str = ""
    listen_ports: tuple[int, int] = (0, 0)
    """First and last port to listen on; (0, 0): any free port (tests)."""
    join_timeout_s: float = 30.0
    """How long the links may take to come up."""
    max_frame_bytes: int = MAX_FRAME_BYTES

    def __post_init__(self) -> None:
        if len(self.session_id.encode()) > 32 or not self.session_id:
            raise LinkError(f"session id {self.session_id!r} must be 1-32 bytes")
        names = [peer.name for peer in self.peers]
        if len(set(names)) != len(names):
            raise LinkError(f"two peers of session {self.session_id} share a certificate name")

    @property
    def listens(self) -> bool:
        return any(peer.dials_us for peer in self.peers)


def contexts(tls: TLSFiles) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Server and client TLS 1.3 contexts that present ``tls``'s certificate and trust only
    the consortium's CA, both requiring the peer's certificate."""
    ca_pem, _, _ = tls.read()
    made = []
    for purpose in (ssl.PROTOCOL_TLS_SERVER, ssl.PROTOCOL_TLS_CLIENT):
        context = ssl.SSLContext(purpose)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=ca_pem.decode())
        context.load_cert_chain(str(tls.certificate), str(tls.key))
        made.append(context)
    server, client = made
    server.num_tickets = 0  # no resumption: every connection presents its certificate
    return server, client


def bind_listener(host: str, ports: tuple[int, int]) -> socket.socket:
    """A listening socket on ``host`` (never all interfaces) at the first free port of
    ``ports``; :class:`LinkError` naming the range when none is free."""
    if not host or host in ("0.0.0.0", "::"):
        raise LinkError(
            f"the MPC links must listen on one address, not {host!r}: set the address on "
            "the network the parties share (rendezvous_host, mpc_host)"
        )
    first, last = ports
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for port in range(first, last + 1):
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.bind((host, port))
        except OSError:
            listener.close()
            continue
        listener.listen(MAX_PENDING_HANDSHAKES)
        return listener
    raise LinkError(
        f"no free port for the MPC links on {host} in {first}-{last}; widen the range or "
        "wait for a session to end"
    )


def peer_identity(connection: ssl.SSLSocket, ca_pem: bytes) -> Identity:
    der = connection.getpeercert(binary_form=True)
    if der is None:
        raise LinkRefused("the peer presented no certificate")
    return verify_peer(ssl.DER_cert_to_PEM_cert(der).encode(), ca_pem)


class Links:
    """A party's established links: frames to and from each peer, by rank."""

    def __init__(self, plan: LinkPlan, writers: dict[int, Any], readers: dict[int, Any]) -> None:
        self.plan = plan
        self._outboxes = {rank: _Outbox(rank, sock) for rank, sock in writers.items()}
        self._inboxes = {
            rank: _Inbox(rank, sock, plan.max_frame_bytes) for rank, sock in readers.items()
        }

    def send_tensor(self, dst: int, tensor: torch.Tensor) -> threading.Event:
        """Send ``tensor`` to ``dst``; the returned event is set (it is sent)."""
        return self._outbox(dst).put(wire.tensor_header(tensor), wire.tensor_payload(tensor))

    def send_value(self, dst: int, value: Any) -> threading.Event:
        return self._outbox(dst).put(*wire.value_frame(value))

    def recv_tensor(self, src: int, like: torch.Tensor | None = None) -> torch.Tensor:
        """The next frame from ``src``, a tensor; with ``like``, of its dtype and number of
        elements (as gloo checks), in its shape."""
        kind, value = self._inbox(src).get()
        if kind != wire.TENSOR:
            raise LinkError(f"rank {src} sent a value where the protocol expects a tensor")
        if like is None:
            return value
        if value.dtype != like.dtype or value.numel() != like.numel():
            raise LinkError(
                f"rank {src} sent a {value.dtype} tensor of shape {tuple(value.shape)} where "
                f"the protocol expects {like.dtype} of {tuple(like.shape)}"
            )
        return value.view(like.shape)

    def recv_value(self, src: int) -> Any:
        kind, value = self._inbox(src).get()
        if kind != wire.VALUE:
            raise LinkError(f"rank {src} sent a tensor where the protocol expects a value")
        return value

    def flush(self) -> None:
        """Wait until every queued frame is sent."""
        for outbox in self._outboxes.values():
            outbox.close()

    def close(self) -> None:
        """Send what is queued, then close every connection."""
        self.flush()
        for outbox in self._outboxes.values():
            _close(outbox.sock)
        for inbox in self._inboxes.values():
            _close(inbox.sock)

    def _outbox(self, rank: int) -> _Outbox:
        if rank not in self._outboxes:
            raise LinkError(f"no link to rank {rank} in this session")
        return self._outboxes[rank]

    def _inbox(self, rank: int) -> _Inbox:
        if rank not in self._inboxes:
            raise LinkError(f"no link from rank {rank} in this session")
        return self._inboxes[rank]


def establish(
    plan: LinkPlan,
    listener: socket.socket | None = None,
    *,
    on_refused: Callable[[str], None] | None = None,
) -> Links:
    """Bring up ``plan``'s links: dial the peers that listen, accept those that dial (on
    ``listener``, which this closes once they are in). Raises :class:`LinkError` if they are
    not all up within ``plan.join_timeout_s``."""
    server, client = contexts(plan.tls)
    ca_pem, _, _ = plan.tls.read()
    deadline = time.monotonic() + plan.join_timeout_s
    connections: dict[tuple[int, int], ssl.SSLSocket] = {}
    accepted: queue.Queue[tuple[tuple[int, int], ssl.SSLSocket]] = queue.Queue()
    acceptor = None
    if plan.listens:
        if listener is None:
            raise LinkError("this party must listen for its peers but has no listening socket")
        acceptor = _Acceptor(plan, listener, server, ca_pem, accepted, on_refused)
        acceptor.start()
    try:
        for peer in plan.peers:
            if not peer.dials_us:
                for direction in (DIALER_WRITES, DIALER_READS):
                    connections[peer.rank, direction] = _dial(
                        plan, peer, direction, client, ca_pem, deadline
                    )
        expected = 2 * sum(peer.dials_us for peer in plan.peers)
        for _ in range(expected):
            remaining = deadline - time.monotonic()
            try:
                key, connection = accepted.get(timeout=max(remaining, 0.0))
            except queue.Empty:
                missing = [
                    p.name for p in plan.peers if p.dials_us and (p.rank, 0) not in connections
                ]
                raise LinkError(
                    f"session {plan.session_id}: {', '.join(missing) or 'a peer'} did not join "
                    f"within {plan.join_timeout_s:g} s"
                ) from None
            connections[key] = connection
    except BaseException:
        for connection in connections.values():
            connection.close()
        raise
    finally:
        if acceptor is not None:
            acceptor.stop()
    writers: dict[int, ssl.SSLSocket] = {}
    readers: dict[int, ssl.SSLSocket] = {}
    for (rank, direction), connection in connections.items():
        connection.settimeout(None)
        peer_dials = next(p for p in plan.peers if p.rank == rank).dials_us
        # the dialer writes on DIALER_WRITES; the listener reads there
        we_write = (direction == DIALER_WRITES) != peer_dials
        (writers if we_write else readers)[rank] = connection
    return Links(plan, writers, readers)


def _dial(
    plan: LinkPlan,
    peer: LinkPeer,
    direction: int,
    context: ssl.SSLContext,
    ca_pem: bytes,
    deadline: float,
) -> ssl.SSLSocket:
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            raw = socket.create_connection((peer.host, peer.port), timeout=HANDSHAKE_TIMEOUT_S)
        except OSError as error:  # not listening yet
            last_error = error
            time.sleep(0.05)
            continue
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = context.wrap_socket(raw, server_hostname=peer.name)
            identity = peer_identity(connection, ca_pem)
            if identity.name != peer.name or identity.role not in peer.roles:
                raise LinkRefused(
                    f"{peer.host}:{peer.port} is {identity.name} ({identity.role}), not "
                    f"{peer.name} ({' or '.join(peer.roles)})"
                )
            connection.sendall(HELLO.pack(MAGIC, plan.session_id.encode(), plan.rank, direction))
            return connection
        except (ssl.SSLCertVerificationError, CertificateRejected) as error:
            raw.close()
            raise LinkRefused(
                f"session {plan.session_id}: the MPC link to {peer.name} at "
                f"{peer.host}:{peer.port} failed: {error}"
            ) from error
        except OSError as error:
            # The listener closed the connection before the handshake ended: its handshake
            # slots were full (anyone who reaches the port, certificate or not, can fill
            # them), so try again until the deadline rather than end the session now.
            raw.close()
            last_error = error
            time.sleep(0.05)
    raise LinkError(
        f"session {plan.session_id}: could not reach {peer.name} at {peer.host}:{peer.port} "
        f"within {plan.join_timeout_s:g} s: {last_error}"
    )


class _Acceptor:
    """Accepts on the listener; each connection proves itself in a thread of its own, so a
    stalling stranger delays no one."""

    def __init__(
        self,
        plan: LinkPlan,
        listener: socket.socket,
        context: ssl.SSLContext,
        ca_pem: bytes,
        accepted: queue.Queue[tuple[tuple[int, int], ssl.SSLSocket]],
        on_refused: Callable[[str], None] | None,
    ) -> None:
        self._plan = plan
        self._listener = listener
        self._context = context
        self._ca_pem = ca_pem
        self._accepted = accepted
        self._on_refused = on_refused
        self._by_name = {peer.name: peer for peer in plan.peers if peer.dials_us}
        self._expected = {(peer.rank, d) for peer in self._by_name.values() for d in (0, 1)}
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_PENDING_HANDSHAKES)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mpc-accept", daemon=True)

    def start(self) -> None:
        self._listener.settimeout(0.2)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                raw, address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                raw.close()  # more strangers than slots: the peers dial again (_dial)
                continue
            threading.Thread(
                target=self._admit, args=(raw, address), name="mpc-admit", daemon=True
            ).start()

    def _admit(self, raw: socket.socket, address: Any) -> None:
        try:
            raw.settimeout(HANDSHAKE_TIMEOUT_S)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = self._context.wrap_socket(raw, server_side=True)
            key = self._check(connection)
        except (OSError, LinkRefused, CertificateRejected) as error:
            raw.close()
            reason = f"refused an MPC connection from {address[0]}:{address[1]}: {error}"
            log.warning("session %s: %s", self._plan.session_id, reason)
            if self._on_refused is not None:
                self._on_refused(reason)
            return
        finally:
            self._slots.release()
        self._accepted.put((key, connection))

    def _check(self, connection: ssl.SSLSocket) -> tuple[int, int]:
        identity = peer_identity(connection, self._ca_pem)
        peer = self._by_name.get(identity.name)
        if peer is None or identity.role not in peer.roles:
            # before reading a byte of what it sent
            connection.close()
            raise LinkRefused(f"{identity.name} ({identity.role}) is not a peer of this session")
        magic, session, rank, direction = HELLO.unpack(_read_exact(connection, HELLO.size))
        key = (rank, direction)
        with self._lock:
            if (
                magic != MAGIC
                or session.rstrip(b"\0") != self._plan.session_id.encode()
                or rank != peer.rank
                or key not in self._expected
            ):
                connection.close()
                raise LinkRefused(f"{identity.name} sent a hello for another session or rank")
            self._expected.discard(key)
        return key


def _close(connection: Any) -> None:
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
    connection.close()


def _read_exact(connection: Any, count: int) -> bytes:
    buffer = bytearray(count)
    _read_into(connection, memoryview(buffer))
    return bytes(buffer)


def _read_into(connection: Any, view: memoryview) -> None:
    filled = 0
    while filled < len(view):
        received = connection.recv_into(view[filled:])
        if not received:
            raise LinkError("the peer closed the link")
        filled += received


class _Outbox:
    """Frames for one peer, written by the calling thread. A send never waits for the
    peer's computation: the peer's receiving thread reads every frame as it arrives."""

    def __init__(self, rank: int, sock: Any) -> None:
        self.rank = rank
        self.sock = sock
        self._lock = threading.Lock()
        self._error: BaseException | None = None

    def put(self, header: bytes, payload: Any) -> threading.Event:
        with self._lock:
            if self._error is not None:
                raise LinkError(f"the link to rank {self.rank} broke: {self._error}")
            try:
                self.sock.sendall(header)
                if len(payload):
                    self.sock.sendall(payload)
            except OSError as error:
                self._error = error
                raise LinkError(f"the link to rank {self.rank} broke: {error}") from error
        return _SENT

    def close(self) -> None:
        with self._lock:  # a send in progress finishes first
            pass


_SENT = threading.Event()
_SENT.set()


class _Inbox:
    """Frames from one peer, read ahead by a thread of their own, at most ``budget`` bytes
    of them unread (``2 × max_bytes``; a single frame of up to ``max_bytes`` always).

    Each frame is bounded by ``max_bytes``, but a peer can send frames the protocol has
    not asked for yet; read ahead without a bound they would fill this party's memory.
    Past the budget the thread stops reading (``paused`` is set) until frames are taken,
    and TCP holds the peer's sends. The budget is above what any protocol step sends
    before it reads (an opening of two shares), so an honest session never waits on it.
    """

    def __init__(self, rank: int, sock: Any, max_bytes: int) -> None:
        self.rank = rank
        self.sock = sock
        self._max_bytes = max_bytes
        self.budget = 2 * max_bytes
        self.unread = 0
        """Bytes of the frames read and not yet taken."""
        self.paused = threading.Event()
        self._room = threading.Condition()
        self._queue: queue.Queue[tuple[int, Any, int]] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"mpc-recv-{rank}", daemon=True)
        self._thread.start()

    def get(self) -> tuple[int, Any]:
        kind, value, nbytes = self._queue.get()
        if kind == 0:
            self._queue.put((kind, value, nbytes))  # every later get fails the same way
            raise LinkError(f"the link from rank {self.rank} broke: {value}")
        with self._room:
            self.unread -= nbytes
            self._room.notify()
        return kind, value

    def _make_room(self, nbytes: int) -> None:
        with self._room:
            if not self._fits(nbytes):
                self.paused.set()
                self._room.wait_for(lambda: self._fits(nbytes))
                self.paused.clear()
            self.unread += nbytes

    def _fits(self, nbytes: int) -> bool:
        return self.unread == 0 or self.unread + nbytes <= self.budget

    def _run(self) -> None:
        try:
            while True:
                header = wire.read_header(
                    lambda count: _read_exact(self.sock, count), max_bytes=self._max_bytes
                )
                self._make_room(header.nbytes)
                if header.kind == wire.VALUE:
                    value = wire.decode_value(_read_exact(self.sock, header.nbytes))
                    self._queue.put((wire.VALUE, value, header.nbytes))
                else:
                    tensor, view = wire.empty_payload(header)
                    _read_into(self.sock, view)
                    self._queue.put((wire.TENSOR, tensor, header.nbytes))
        except (OSError, PrimiaError, ValueError) as error:
            self._queue.put((0, error, 0))
