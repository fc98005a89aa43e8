"""The whole protocol in one process: for tests, benchmarks and reading the protocol.

:func:`simulate` plays every node's :class:`AggregationClient` and the coordinator's
:class:`AggregationServer` through the five steps (four without the consistency
round), dropping the nodes named in ``drop_before`` at the step named, and times each
side. Nothing is mocked: the messages are the ones the gRPC path carries.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from functools import partial
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from primia.crypto import keys, shamir
from primia.crypto.prg import MaskGenerator
from primia.crypto.secagg.client import MASK_PURPOSE, AggregationClient
from primia.crypto.secagg.messages import (
    ConsistencyChecks,
    SecretKind,
    Setup,
    UnmaskShares,
    pair_sign,
)
from primia.crypto.secagg.server import Aggregate, AggregationServer

M = TypeVar("M")
R = TypeVar("R")


class Step(IntEnum):
    """The step before which a node drops out."""

    KEYS = 1
    SHARES = 2
    MASKED = 3
    UNMASK = 4
    """Before the consistency round (it then neither signs nor reveals)."""


@dataclass(frozen=True)
class Credentials:
    certificate_pem: bytes
    key_pem: bytes


@dataclass
class Timings:
    client_seconds: dict[str, float] = field(default_factory=dict)
    """Each node's time in its four steps (keys, shares, masking, revealing)."""
    server_seconds: float = 0.0
    """The coordinator's time, summing the masked inputs included."""


def simulate(
    setup: Setup,
    inputs: Mapping[str, npt.NDArray[np.unsignedinteger]],
    credentials: Mapping[str, Credentials],
    ca_pem: bytes,
    *,
    drop_before: Mapping[str, Step] | None = None,
    observe: Callable[[str, object], None] | None = None,
    checks: ConsistencyChecks | None = None,
) -> tuple[Aggregate, Timings]:
    """Run one round; ``observe(sender, message)`` sees every message the coordinator
    receives (the coordinator's whole view)."""
    drop_before = drop_before or {}
    checks = checks or ConsistencyChecks()
    timings = Timings()
    server = AggregationServer(setup, ca_pem=ca_pem, checks=checks)
    clients = {
        name: AggregationClient(
            setup,
            name,
            certificate_pem=credentials[name].certificate_pem,
            key_pem=credentials[name].key_pem,
            ca_pem=ca_pem,
            checks=checks,
        )
        for name in setup.participants
    }

    def alive(name: str, step: Step) -> bool:
        return drop_before.get(name, Step.UNMASK + 1) > step

    def by_client(name: str, action: Callable[[], M]) -> M:
        started = time.perf_counter()
        message = action()
        timings.client_seconds[name] = timings.client_seconds.get(name, 0.0) + (
            time.perf_counter() - started
        )
        if observe is not None and message is not None:
            observe(name, message)
        return message

    def by_server(action: Callable[[], R]) -> R:
        started = time.perf_counter()
        result = action()
        timings.server_seconds += time.perf_counter() - started
        return result

    advertised = {}
    for name in setup.participants:
        if alive(name, Step.KEYS):
            advertised[name] = by_client(name, clients[name].advertise)
            by_server(partial(server.receive_keys, name, advertised[name]))
    roster = by_server(server.close_keys)

    shared = []
    for name in advertised:
        if alive(name, Step.SHARES):
            bundle = by_client(name, partial(clients[name].share, roster))
            by_server(partial(server.receive_shares, name, bundle))
            shared.append(name)
    deliveries = by_server(server.close_shares)

    uploaded = []
    for name in shared:
        if alive(name, Step.MASKED):
            by_client(name, partial(clients[name].receive_shares, deliveries[name]))
            upload = by_client(name, partial(clients[name].mask, inputs[name]))
            by_server(partial(server.receive_masked, name, upload))
            uploaded.append(name)
    request = by_server(server.close_masked)

    survivors = [name for name in uploaded if alive(name, Step.UNMASK)]
    if not checks.consistency_round:
        for name in survivors:
            revealed = by_client(
                name, partial(clients[name].unmask_without_consistency_round, request)
            )
            by_server(partial(server.receive_unmask, name, revealed))
        return by_server(server.finish), timings

    for name in survivors:
        signature = by_client(name, partial(clients[name].confirm, request))
        by_server(partial(server.receive_confirmation, name, signature))
    signatures = by_server(server.close_confirmations)
    for name in survivors:
        revealed = by_client(name, partial(clients[name].unmask, signatures))
        by_server(partial(server.receive_unmask, name, revealed))
    return by_server(server.finish), timings


def unmask_one(
    setup: Setup,
    target: str,
    masked: npt.NDArray[np.unsignedinteger],
    revealed: Mapping[str, UnmaskShares],
    mask_publics: Mapping[str, bytes],
) -> npt.NDArray[np.unsignedinteger]:
    """What a coordinator holding t shares of ``target``'s self-mask seed b and t of its
    mask key s learns: its input x = y − PRG(b) − Σ_v ±PRG(s_target,v), bit for bit.

    This is the attack the consistency round prevents (a coordinator that tells some
    nodes ``target`` survived and others that it dropped); tests use it to show that
    without the round the attack succeeds. ``revealed`` maps each revealing node to what
    it revealed, ``mask_publics`` every contributor's mask public key (from the roster).
    ValueError when fewer than t shares of either secret were revealed.
    """
    found: dict[SecretKind, dict[int, bytes]] = {kind: {} for kind in SecretKind}
    for holder, message in revealed.items():
        for share in message.shares:
            if share.owner == target:
                found[share.kind][setup.index(holder)] = share.share
    for kind, shares in found.items():
        if len(shares) < setup.threshold:
            raise ValueError(
                f"{len(shares)} shares of {target!r}'s {kind.value} were revealed; "
                f"rebuilding it needs {setup.threshold}"
            )
    seed = shamir.combine(dict(list(found[SecretKind.SELF_MASK].items())[: setup.threshold]))
    mask_key = keys.KeyPair.from_private_bytes(
        shamir.combine(dict(list(found[SecretKind.MASK_KEY].items())[: setup.threshold]))
    )
    total = masked.copy()
    masks = MaskGenerator(setup.vector_length, setup.fixed_point().dtype)
    masks.add(total, seed, -1)
    for peer, public in mask_publics.items():
        if peer != target:
            pair_seed = keys.agree(
                mask_key.private, public, purpose=MASK_PURPOSE, session=setup.session
            )
            masks.add(total, pair_seed, -pair_sign(target, peer))
    return total
