"""The cost of the defences against a lying coordinator (issue 20).

Two figures, measured in one run:

1. **The checks alone** — the secure-aggregation state machines of N nodes and the
   coordinator, in this process, run alternately with the checks (the round view in the
   key advertisement and its comparison; the consistency round: every survivor signs U3,
   the coordinator verifies and forwards the signatures, every survivor verifies the
   quorum) and without them (:data:`UNSAFE_WITHOUT_CONSISTENCY_CHECKS`). Bytes are the
   protobuf sizes of the messages on the wire; seconds the time in the state machines'
   calls, per node (mean) and at the coordinator. The vector is small here: the checks'
   cost does not depend on its length.
2. **A whole secure round** — the federation of ``bench_round_overhead.py`` (N node
   processes, mutual TLS on loopback, ResNet-18 at 32 px, DP-SGD), run alternately with
   the checks and without them (nodes started through this script with
   ``--node-without-consistency-checks``, a switch that exists only here, and the
   coordinator's aggregator built without them); mean round time over rounds 2..R.

Also the upload per node over the float32 update: the masked input (k = 32 bits per
value, the update's length plus its weight) plus every secure-aggregation message a
node sends, with the checks.

    python benchmarks/bench_consistency_cost.py                  # 10 nodes
    python benchmarks/bench_consistency_cost.py --nodes 4 --pairs 1 --rounds 2
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from machine import load_average

from primia import pki
from primia.crypto.secagg import (
    UNSAFE_WITHOUT_CONSISTENCY_CHECKS,
    AggregationClient,
    AggregationServer,
    ConsistencyChecks,
    RoundView,
    Setup,
)
from primia.crypto.secagg.messages import majority, participants_digest
from primia.data.synth import FINDINGS
from primia.models import build_model
from primia.rpc import secure_codec

GOAL_ROUND = 1.05
GOAL_UPLOAD = 1.05
LENGTH = 1000
T = TypeVar("T")


# ---- 1. the checks alone ---------------------------------------------------------------


@dataclass
class Cost:
    node_seconds: float = 0.0
    """Mean over nodes of the time in their state machine's calls."""
    server_seconds: float = 0.0
    node_sent: float = 0.0
    """Mean bytes a node sends (small messages only; the masked input is not counted)."""
    node_received: float = 0.0
    server_sent: int = 0
    server_received: int = 0


@dataclass
class _Clock:
    nodes: dict[str, float] = field(default_factory=dict)
    server: float = 0.0

    def node(self, name: str, action: Callable[[], T]) -> T:
        started = time.perf_counter()
        result = action()
        self.nodes[name] = self.nodes.get(name, 0.0) + time.perf_counter() - started
        return result

    def coordinator(self, action: Callable[[], T]) -> T:
        started = time.perf_counter()
        result = action()
        self.server += time.perf_counter() - started
        return result


def one_round(
    nodes: int, ca: bytes, credentials: dict[str, tuple[bytes, bytes]], checks: ConsistencyChecks
) -> Cost:
    """One round of the protocol, nobody dropping; its time and bytes."""
    names = tuple(sorted(credentials))[:nodes]
    setup = Setup(os.urandom(16), 1, names, majority(nodes), 32, 8.0, LENGTH)
    view = RoundView(os.urandom(32), os.urandom(32), participants_digest(names))
    clock = _Clock()
    server = AggregationServer(setup, ca_pem=ca, checks=checks)
    clients = {
        name: AggregationClient(
            setup,
            name,
            certificate_pem=credentials[name][0],
            key_pem=credentials[name][1],
            ca_pem=ca,
            view=view,
            checks=checks,
        )
        for name in names
    }
    sent = dict.fromkeys(names, 0)
    received = dict.fromkeys(names, 0)
    task = "task"

    for name, client in clients.items():
        advertisement = clock.node(name, client.advertise)
        sent[name] += secure_codec.keys_to_proto(task, advertisement).ByteSize()
        clock.coordinator(lambda n=name, a=advertisement: server.receive_keys(n, a))
    roster = clock.coordinator(server.close_keys)
    roster_bytes = secure_codec.roster_to_proto(task, roster).ByteSize()
    for name, client in clients.items():
        received[name] += roster_bytes
        bundle = clock.node(name, lambda c=client: c.share(roster))
        sent[name] += secure_codec.bundle_to_proto(task, bundle).ByteSize()
        clock.coordinator(lambda n=name, b=bundle: server.receive_shares(n, b))
    deliveries = clock.coordinator(server.close_shares)
    rng = np.random.default_rng(0)
    for name, client in clients.items():
        received[name] += secure_codec.delivery_to_proto(task, deliveries[name]).ByteSize()
        clock.node(name, lambda n=name, c=client: c.receive_shares(deliveries[n]))
        values = rng.integers(0, 2**32, LENGTH, dtype=np.uint32)
        masked = clock.node(name, lambda c=client, v=values: c.mask(v))
        clock.coordinator(lambda n=name, m=masked: server.receive_masked(n, m))
    request = clock.coordinator(server.close_masked)
    request_bytes = secure_codec.request_to_proto(task, request).ByteSize()
    if checks.consistency_round:
        for name, client in clients.items():
            received[name] += request_bytes
            signature = clock.node(name, lambda c=client: c.confirm(request))
            sent[name] += secure_codec.signature_to_proto(task, signature).ByteSize()
            clock.coordinator(lambda n=name, s=signature: server.receive_confirmation(n, s))
        signatures = clock.coordinator(server.close_confirmations)
        signatures_bytes = secure_codec.signatures_to_proto(task, signatures).ByteSize()
        reveals = {}
        for name, client in clients.items():
            received[name] += signatures_bytes
            reveals[name] = clock.node(name, lambda c=client: c.unmask(signatures))
    else:
        reveals = {}
        for name, client in clients.items():
            received[name] += request_bytes
            reveals[name] = clock.node(
                name, lambda c=client: c.unmask_without_consistency_round(request)
            )
    for name, revealed in reveals.items():
        sent[name] += secure_codec.unmask_to_proto(task, revealed).ByteSize()
        clock.coordinator(lambda n=name, r=revealed: server.receive_unmask(n, r))
    clock.coordinator(server.finish)
    return Cost(
        node_seconds=statistics.mean(clock.nodes.values()),
        server_seconds=clock.server,
        node_sent=statistics.mean(sent.values()),
        node_received=statistics.mean(received.values()),
        server_sent=sum(received.values()),
        server_received=sum(sent.values()),
    )


def checks_alone(nodes: int, repeats: int) -> tuple[Cost, Cost]:
    """Mean costs with and without the checks, ``repeats`` rounds each, alternating."""
    with tempfile.TemporaryDirectory(prefix="primia-consistency-") as directory:
        ca = pki.init_ca(Path(directory), "bench").read_bytes()
        credentials = {}
        for k in range(nodes):
            _, certificate, key = pki.issue(Path(directory), f"site{k:02d}", "node").read()
            credentials[f"site{k:02d}"] = (certificate, key)
    runs: dict[bool, list[Cost]] = {True: [], False: []}
    for _ in range(repeats):
        for checked in (True, False):
            checks = ConsistencyChecks() if checked else UNSAFE_WITHOUT_CONSISTENCY_CHECKS
            runs[checked].append(one_round(nodes, ca, credentials, checks))

    def mean(costs: list[Cost]) -> Cost:
        return Cost(
            **{
                name: statistics.mean(getattr(cost, name) for cost in costs)
                for name in Cost.__dataclass_fields__
            }
        )

    return mean(runs[True]), mean(runs[False])


# ---- 2. a whole round ------------------------------------------------------------------


NODE_SWITCH = "--node-without-consistency-checks"


def _node_without_checks(argv: list[str]) -> int:
    """Run ``primia`` (a node) with every secure contribution built without the checks."""
    from primia.cli import main as primia_main
    from primia.federated import secure

    original = secure.SecureContribution.__init__

    def unchecked(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **{**kwargs, "checks": UNSAFE_WITHOUT_CONSISTENCY_CHECKS})

    secure.SecureContribution.__init__ = unchecked  # type: ignore[method-assign]
    return primia_main(argv)


@contextmanager
def _coordinator_without_checks() -> Iterator[None]:
    from primia.federated import secure

    original = secure.SecureAggregator.__init__

    def unchecked(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **{**kwargs, "checks": UNSAFE_WITHOUT_CONSISTENCY_CHECKS})

    secure.SecureAggregator.__init__ = unchecked  # type: ignore[method-assign]
    try:
        yield
    finally:
        secure.SecureAggregator.__init__ = original  # type: ignore[method-assign]


def whole_rounds(nodes: int, rounds: int, pairs: int, patients: int) -> dict[bool, list[float]]:
    """Round times (rounds 2..R of each federation) with and without the checks."""
    from bench_round_overhead import run_federation

    times: dict[bool, list[float]] = {True: [], False: []}
    without = [sys.executable, str(Path(__file__).resolve()), NODE_SWITCH]
    with tempfile.TemporaryDirectory(prefix="primia-consistency-round-") as temporary:
        for pair in range(pairs):
            for checked in (True, False):
                work = Path(temporary) / f"{pair}-{'with' if checked else 'without'}"
                work.mkdir()
                if checked:
                    result = run_federation(work, nodes, rounds, patients, "secure")
                else:
                    with _coordinator_without_checks():
                        result = run_federation(work, nodes, rounds, patients, "secure", without)
                measured = [r.seconds for r in result.rounds[1:]]
                times[checked].extend(measured)
                label = "with" if checked else "without"
                print(
                    f"  federation {pair + 1} {label:>7} checks: rounds 2..{rounds} "
                    + " ".join(f"{s:.2f}" for s in measured)
                    + f" s  (load {load_average()})",
                    flush=True,
                )
    return times


def resnet18_length() -> int:
    """Values a node aggregates for ResNet-18 at 32 px: floating tensors, plus its weight."""
    model = build_model("resnet18", num_classes=len(FINDINGS), in_channels=1)
    state = model.state_dict()
    return sum(t.numel() for t in state.values() if t.is_floating_point()) + 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [NODE_SWITCH]:
        return _node_without_checks(argv[1:])
    from primia.memory import reuse_freed_memory

    reuse_freed_memory()  # the coordinator runs in this process: as `primia coordinator serve`
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=10, help="protocol runs per variant")
    parser.add_argument("--pairs", type=int, default=2, help="federations per variant")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per federation")
    parser.add_argument("--patients-per-site", type=int, default=10, help="2 images each")
    parser.add_argument("--skip-round", action="store_true", help="only the checks alone")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, handlers=[logging.NullHandler()], force=True)
    print(f"{args.nodes} nodes, {os.cpu_count()} CPU cores, load {load_average()}")

    with_, without = checks_alone(args.nodes, args.repeats)
    print(f"\n1. The checks alone ({args.repeats} protocol runs each, alternating)")
    print(f"{'':>16} {'with':>10} {'without':>10} {'added':>10}")
    rows = [
        ("node ms", 1e3, "node_seconds"),
        ("coordinator ms", 1e3, "server_seconds"),
        ("node sent B", 1, "node_sent"),
        ("node recv B", 1, "node_received"),
        ("coord sent B", 1, "server_sent"),
        ("coord recv B", 1, "server_received"),
    ]
    for label, scale, name in rows:
        a, b = getattr(with_, name) * scale, getattr(without, name) * scale
        print(f"{label:>16} {a:10.1f} {b:10.1f} {a - b:10.1f}")

    length = resnet18_length()
    update = 4 * (length - 1)
    upload = 4 * length + with_.node_sent
    print(
        f"\nUpload per node, ResNet-18 ({length - 1} values): {upload / 1e6:.3f} MB = "
        f"{upload / update:.5f}× the float32 update (goal ≤ {GOAL_UPLOAD}×; the small "
        f"messages {with_.node_sent:.0f} B, of which the checks add "
        f"{with_.node_sent - without.node_sent:.0f} B)"
    )
    if args.skip_round:
        return 0

    print(
        f"\n2. Whole secure rounds, {args.nodes} nodes, ResNet-18, {args.pairs} federations "
        f"per variant, alternating"
    )
    times = whole_rounds(args.nodes, args.rounds, args.pairs, args.patients_per_site)
    mean_with, mean_without = statistics.mean(times[True]), statistics.mean(times[False])
    ratio = mean_with / mean_without
    verdict = "met" if ratio < GOAL_ROUND else "not met"
    print(
        f"mean round: with checks {mean_with:.2f} s, without {mean_without:.2f} s: "
        f"{ratio:.3f}× (goal < {GOAL_ROUND}×: {verdict}); load {load_average()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
