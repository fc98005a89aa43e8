"""Check a link to the coordinator before any model travels over it (``primia check``).

:func:`probe` uploads one blob to the coordinator's ``Probe`` call over a fresh mutual-TLS
channel, exactly as weights travel (chunks, each blob checked against its SHA-256 on
arrival), and returns how long it took and whether what arrived is what was sent. It
proves the whole path at once: the address and port, both certificates, the roster, the
integrity of the bytes, and the throughput.

>>> result = probe("coord.example.org:50051", files, size=64 * 10**6)  # doctest: +SKIP
>>> result.verified, round(result.megabytes_per_second)                # doctest: +SKIP
(True, 412)
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import grpc

from primia.blobs import CHUNK_SIZE, MAX_CHUNK_SIZE, MIB, Blob
from primia.errors import PrimiaError
from primia.pki import CertificateRejected, TLSFiles, verify_peer
from primia.rpc import methods
from primia.rpc.chunk_wire import messages_of
from primia.rpc.tls import secure_channel

MEGABYTE = 10**6
"""Throughput is in MB/s of 10^6 bytes, as network links are quoted."""

CONNECT_TIMEOUT_S = 30.0
"""How long the first (empty) probe may take to connect, hand-shake and be authorized."""


class ProbeFailed(PrimiaError):
    """The coordinator could not be reached, refused the probe, or received it damaged."""

    def __init__(self, message: str, code: grpc.StatusCode) -> None:
        super().__init__(message)
        self.code = code
        self.lasting = False
        """Whether trying again cannot succeed (see :func:`diagnose`)."""


@dataclass(frozen=True)
class ProbeResult:
    size: int
    """Bytes uploaded."""
    seconds: float
    """From the first chunk sent to the coordinator's receipt, on an open connection."""
    megabytes_per_second: float
    verified: bool
    """The coordinator's receipt names exactly the size and SHA-256 that were sent."""


def probe(
    address: str,
    files: TLSFiles,
    *,
    server_name: str = "coordinator",
    size: int | None = None,
    chunk_size: int = CHUNK_SIZE,
    payload: bytes | None = None,
) -> ProbeResult:
    """Upload ``payload``, or else ``size`` random bytes, to the coordinator at ``address``.

    An empty probe first opens the connection (TCP, TLS handshake, the coordinator's check
    of our certificate and roster entry), so the timing covers the upload alone. Raises
    :class:`ProbeFailed`, naming the gRPC status and what to check, when either call fails.
    """
    if payload is None:
        if size is None or size < 0:
            raise ValueError(f"give a payload, or a size of at least 0 bytes (got {size})")
        payload = _random_bytes(size)
    elif size is not None and size != len(payload):
        raise ValueError(f"size={size} but the payload holds {len(payload)} bytes")
    # messages_of checks this too, but only once gRPC pulls the first chunk on its own thread.
    if not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be in (0, {MAX_CHUNK_SIZE}], got {chunk_size}")
    blob = Blob.of("probe", payload)
    with secure_channel(address, files, server_name=server_name) as channel:
        upload = methods.probe(channel)
        try:
            upload(messages_of(Blob.of("probe", b""), envelope=False), timeout=CONNECT_TIMEOUT_S)
            started = time.perf_counter()
            # No deadline: the channel's keepalive pings notice a dead link within ~30 s,
            # however slow a live one is.
            receipt = upload(messages_of(blob, envelope=False, chunk_size=chunk_size))
            seconds = time.perf_counter() - started
        except grpc.RpcError as error:
            raise diagnose(
                address, error, files=files, server_name=server_name, what="probe"
            ) from error
    return ProbeResult(
        size=len(payload),
        seconds=seconds,
        megabytes_per_second=len(payload) / MEGABYTE / seconds,
        verified=receipt.size == len(payload) and receipt.sha256 == blob.sha256,
    )


def _random_bytes(size: int) -> bytes:
    """``size`` bytes made of one random MiB repeated.

    The content does not change the speed of TLS (AES-GCM costs the same for any bytes, and
    gRPC does not compress unless asked), and repeating a block is ~50x faster than drawing
    100 MB of randomness.
    """
    block = os.urandom(min(size, MIB))
    return (block * -(-size // MIB))[:size]


def own_files_problem(files: TLSFiles) -> str:
    """Why our own certificate is not one our own CA file trusts ("" if it is): then a
    peer that trusts that CA (the consortium's) refuses it, or the CA file is not the
    consortium's. A refused handshake reaches us only as a closed socket; this says why."""
    ca_pem, cert_pem, _ = files.read()
    try:
        verify_peer(cert_pem, ca_pem)
    except CertificateRejected as rejected:
        return (
            f"{files.certificate} does not verify against {files.ca}: {rejected}. Both must "
            "come from the consortium's CA (copy its ca.pem, and use a certificate it issued "
            "with `primia certs issue`); the coordinator refuses any other, and retrying "
            "cannot fix this"
        )
    return ""


_LASTING_CODES = (
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION,
)
"""The coordinator refused our certificate, name or Hello: it will again."""


def _handshake_refused(details: str) -> bool:
    return any(marker in details for marker in _HANDSHAKE_MARKERS)


_HANDSHAKE_MARKERS = (
    "CERTIFICATE_VERIFY_FAILED",
    "Tls handshake failed",
    "Peer name",
    "certificate verify failed",
)
"""How gRPC's details show a handshake that failed on a certificate (not on the network)."""


def diagnose(
    address: str,
    error: grpc.RpcError,
    *,
    files: TLSFiles,
    server_name: str = "coordinator",
    what: str,
) -> ProbeFailed:
    """``error`` of a call to ``address`` with our TLS ``files`` (``what``: e.g. probe,
    Join) as one message: the gRPC status, its details, and what to check — ``primia
    check`` and every node say the same. Its ``lasting`` says whether calling again
    cannot succeed: the coordinator refused our certificate, name or Hello, the TLS
    handshake failed verifying a certificate, or our own certificate and CA file
    disagree. An unreachable address, a closed socket or a coordinator not yet listening
    may pass on a later try."""
    code = error.code()
    details = error.details() or "no details"
    message = f"{what} of {address} failed with {code.name}: {details}"
    handshake = code == grpc.StatusCode.UNAVAILABLE and _handshake_refused(details)
    problem = own_files_problem(files) if code == grpc.StatusCode.UNAVAILABLE else ""
    if problem:
        hint = problem
    elif handshake:
        hint = _HANDSHAKE_HINT.format(server_name=server_name)
    else:
        hint = _HINTS.get(code, "").format(address=address)
    failure = ProbeFailed(f"{message}. {hint}" if hint else message, code)
    failure.lasting = bool(problem) or handshake or code in _LASTING_CODES
    return failure


_HANDSHAKE_HINT = (
    "The TLS handshake failed on a certificate: the coordinator's certificate is not from "
    "the CA in your ca file, or is not named {server_name!r}. Copy the consortium's ca.pem "
    "(the one that issued your certificate) and check --server-name / coordinator_name; "
    "retrying cannot fix this"
)
_HINTS = {
    grpc.StatusCode.UNAVAILABLE: (
        "Is the coordinator running at {address}, and is the port open to you? A refused "
        "TLS handshake also reads UNAVAILABLE: check that your certificate is from the "
        "consortium's CA and still valid, and that --server-name is the name in the "
        "coordinator's certificate"
    ),
    grpc.StatusCode.DEADLINE_EXCEEDED: (
        "No answer from {address} within the time allowed; is a firewall dropping packets?"
    ),
    grpc.StatusCode.UNAUTHENTICATED: (
        "The coordinator rejected your certificate: use one issued by the consortium's CA "
        "with `primia certs issue` and not expired"
    ),
    grpc.StatusCode.PERMISSION_DENIED: (
        "Your certificate is valid but not allowed this call: it needs role node and a name on "
        "the coordinator's roster (or role coordinator)"
    ),
    grpc.StatusCode.DATA_LOSS: (
        "The bytes were corrupted in transit; run the check again, and if it fails again "
        "suspect something on the path that alters traffic"
    ),
}
