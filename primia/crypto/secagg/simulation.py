"""The whole protocol in one process: for tests, benchmarks and reading the protocol.

:func:`simulate` plays every node's :class:`AggregationClient` and the coordinator's
:class:`AggregationServer` through the four steps, dropping the nodes named in
``drop_before`` at the step named, and times each side. Nothing is mocked: the messages
are the ones the gRPC path carries.
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

from primia.crypto.secagg.client import AggregationClient
from primia.crypto.secagg.messages import Setup
from primia.crypto.secagg.server import Aggregate, AggregationServer

M = TypeVar("M")
R = TypeVar("R")


class Step(IntEnum):
    """The step before which a node drops out."""

    KEYS = 1
    SHARES = 2
    MASKED = 3
    UNMASK = 4


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
) -> tuple[Aggregate, Timings]:
    """Run one round; ``observe(sender, message)`` sees every message the coordinator
    receives (the coordinator's whole view)."""
    drop_before = drop_before or {}
    timings = Timings()
    server = AggregationServer(setup, ca_pem=ca_pem)
    clients = {
        name: AggregationClient(
            setup,
            name,
            certificate_pem=credentials[name].certificate_pem,
            key_pem=credentials[name].key_pem,
            ca_pem=ca_pem,
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

    for name in uploaded:
        if alive(name, Step.UNMASK):
            revealed = by_client(name, partial(clients[name].unmask, request))
            by_server(partial(server.receive_unmask, name, revealed))
    return by_server(server.finish), timings
