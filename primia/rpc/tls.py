"""Mutual TLS for every gRPC connection, and who is on the other end of one.

Both sides present a certificate issued by the consortium's CA (:mod:`primia.pki`)
and trust only that CA. gRPC's TLS layer refuses a peer whose certificate is from another
CA, expired, or missing before any message is read. A servicer then calls
:func:`peer_identity` to learn the peer's name and role and checks them against what the
call needs (role, roster), logging why it refuses.

A client names the server it expects (``server_name``): the connection fails unless the
server's certificate carries that name, so a node talks to the consortium's coordinator
whatever address it dials.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from typing import NoReturn

import grpc

from primia.blobs import MAX_MESSAGE_SIZE
from primia.pki import CertificateRejected, Identity, Role, TLSFiles, verify_peer

log = logging.getLogger(__name__)

KEEPALIVE_MS = 20_000
"""How often an idle connection is pinged, so a dead peer is noticed within ~30 s."""

_COMMON_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_SIZE),
    ("grpc.max_receive_message_length", MAX_MESSAGE_SIZE),
    ("grpc.keepalive_time_ms", KEEPALIVE_MS),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


def server_credentials(files: TLSFiles) -> grpc.ServerCredentials:
    """Credentials that present our certificate and require one from our CA."""
    ca_pem, cert_pem, key_pem = files.read()
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=ca_pem, require_client_auth=True
    )


def server_options() -> list[tuple[str, int | str]]:
    return [
        *_COMMON_OPTIONS,
        ("grpc.http2.min_recv_ping_interval_without_data_ms", KEEPALIVE_MS // 2),
        # Never answer pings with GOAWAY "too_many_pings": on a loaded node the keepalive
        # timer can fire late and then early, which would cut a node out of its round
        # mid-training (seen with three nodes training on two busy cores). Callers are
        # authenticated members of the consortium, so tolerating their pings costs little.
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.so_reuseport", 0),
    ]


def secure_channel(
    address: str,
    files: TLSFiles,
    *,
    server_name: str,
    extra_options: Sequence[tuple[str, int | str]] = (),
) -> grpc.Channel:
    """A mutual-TLS channel to ``address`` that accepts only a server named ``server_name``."""
    ca_pem, cert_pem, key_pem = files.read()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
    )
    options = [
        *_COMMON_OPTIONS,
        ("grpc.ssl_target_name_override", server_name),
        ("grpc.default_authority", server_name),
        *extra_options,
    ]
    return grpc.secure_channel(address, credentials, options=options)


def peer_identity(context: grpc.ServicerContext, ca_pem: bytes) -> Identity:
    """The verified identity of the peer of ``context``.

    TLS has already checked the chain; this parses the certificate and checks it again
    (defence in depth), raising :class:`CertificateRejected` with the reason.
    """
    auth = context.auth_context()
    certificates = auth.get("x509_pem_cert") or []
    if not certificates:
        raise CertificateRejected(f"peer {context.peer()} presented no client certificate")
    return verify_peer(certificates[0], ca_pem)


def authorize(
    context: grpc.ServicerContext,
    ca_pem: bytes,
    call: str,
    *,
    roles: Sequence[Role],
    names: Collection[str] = (),
) -> Identity:
    """The peer's identity if its role is one of ``roles`` (and, if ``names`` is not empty,
    its name one of them); otherwise the call is aborted and a log line says why."""
    try:
        identity = peer_identity(context, ca_pem)
    except CertificateRejected as error:
        log.warning("refused %s from %s: %s", call, context.peer(), error)
        abort(context, grpc.StatusCode.UNAUTHENTICATED, str(error))
    if identity.role not in roles:
        reason = f"{identity.name} has role {identity.role}; {call} needs {' or '.join(roles)}"
        log.warning("refused %s from %s: %s", call, context.peer(), reason)
        abort(context, grpc.StatusCode.PERMISSION_DENIED, reason)
    if names and identity.name not in names:
        reason = f"{identity.name} may not call {call} (not among {', '.join(sorted(names))})"
        log.warning("refused %s from %s: %s", call, context.peer(), reason)
        abort(context, grpc.StatusCode.PERMISSION_DENIED, reason)
    return identity


def abort(context: grpc.ServicerContext, code: grpc.StatusCode, detail: str) -> NoReturn:
    """End the call with ``code`` and ``detail`` (``context.abort`` raises)."""
    context.abort(code, detail)
    raise AssertionError("unreachable: context.abort raises")
