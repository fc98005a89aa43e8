"""Round overhead: a federated round's wall time minus the nodes' local training time.

The issue's figure: "wall time of a federated round minus the nodes' local training time,
for 3 and 10 nodes with a ResNet-18; goal under 2 s on loopback". For each node count N
the script synthesizes a small dataset with one site per node, makes a consortium (a CA,
a coordinator certificate and one node certificate per site), runs the coordinator in
this process (gRPC with mutual TLS on 127.0.0.1) and N nodes as separate processes
(``python -m primia node serve --exit-when-done``, one torch thread each, RDP
accounting), and runs ``--rounds`` rounds of DP-SGD on a ResNet-18 at 32 px (about 45 MB
of float32 weights: every round sends the global weights to each node and each node's
update back). Round 1 includes the nodes' warm-up (first data loading, allocator), so the
rounds after it are reported (6 by default: a node writes received weights into memory it
already used from round 4 on, see ``BufferPool``), from the coordinator's ``rounds.jsonl``:

* ``round s``: the round's wall time at the coordinator (``seconds``: from the start of
  the round to its pooled validation metrics);
* ``train s``: the longest node-reported training task (``train_seconds``: decoding the
  weights, DP-SGD, encoding the update, which secure aggregation encodes into the ring
  and masks), ``eval s`` the longest node evaluation;
* ``overhead``: ``seconds - train_seconds``, the issue's figure (evaluation counts as
  overhead: it is not local training);
* ``coord``: ``seconds - train_seconds - evaluate_seconds``, the coordination alone:
  encoding and hashing the global weights, sending them, receiving and checking the
  updates, aggregation, and the protocol's round trips;
* ``ckpt``: writing the round's checkpoint and its ``rounds.jsonl`` line, which happens
  after the round's clock stops (so it is in neither figure; shown for completeness).

All processes share this machine's cores (e.g. 10 node processes and the coordinator on
2 cores), so node-side times are inflated by contention, and ``train s`` is the slowest
node's. The CPU time other programs used during each node count's run is printed, to
tell whether the figures were measured on an otherwise idle machine.

    python benchmarks/bench_round_overhead.py
    python benchmarks/bench_round_overhead.py --nodes 3 --rounds 4 --keep runs/overhead
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomli_w
from machine import CpuWatch, load_average

from primia import pki
from primia.data.synth import SynthConfig, write_dataset
from primia.federated.coordinator_config import CoordinatorConfig, ModelConfig
from primia.federated.plan import DPPlan, TrainPlan
from primia.launch import stop_all, tail
from primia.memory import reuse_freed_memory
from primia.rpc.coordinator_server import CoordinatorServer

Aggregation = Literal["secure", "plaintext"]
GOAL_S = 2.0
COORDINATOR = "coordinator"
IMAGE_SIZE = 32
START_TIMEOUT_S = 600.0  # N node processes importing torch on a few cores take a while


@dataclass
class RoundTimes:
    round: int
    seconds: float
    train: float
    evaluate: float
    checkpoint: float

    @property
    def overhead(self) -> float:
        """The issue's figure: round wall time minus the nodes' local training time."""
        return self.seconds - self.train

    @property
    def coordination(self) -> float:
        """Overhead without the nodes' evaluation."""
        return self.seconds - self.train - self.evaluate


@dataclass
class RunResult:
    nodes: int
    rounds: list[RoundTimes] = field(default_factory=list)
    weights_mb: float = 0.0
    foreign_load: float | None = None  # share of all CPUs used by other programs
    seconds: float = 0.0


def _prepare(work: Path, sites: list[str], patients: int) -> pki.TLSFiles:
    write_dataset(
        work / "data",
        SynthConfig(
            sites=len(sites), patients_per_site=patients, images_per_patient=2, size=IMAGE_SIZE
        ),
        progress=False,
    )
    pki.init_ca(work / "pki", "primia-bench")
    coordinator = pki.issue(work / "pki", COORDINATOR, "coordinator")
    for site in sites:
        pki.issue(work / "pki", site, "node")
    (work / "logs").mkdir()
    return coordinator


def _write_node_config(
    work: Path, site: str, port: int, *, aggregation: Aggregation, nodes: int
) -> Path:
    node = {
        "coordinator": f"127.0.0.1:{port}",
        "coordinator_name": COORDINATOR,
        "state_dir": f"state-{site}",
        "reconnect_max_s": 1.0,
        "tls": {"ca": "pki/ca.pem", "certificate": f"pki/{site}.pem", "key": f"pki/{site}.key"},
        "data": {"path": "data", "site": site},
        # RDP: the PRV accountant's calibration takes seconds at tiny data's sampling rates.
        "privacy": {"epsilon_budget": 10.0, "accountant": "rdp"},
        "compute": {"threads": 1},
        # The plaintext baseline needs nodes that allow it; a round of two, nodes that
        # accept two participants.
        "policy": {
            "aggregation": ["secure", "plaintext"] if aggregation == "plaintext" else ["secure"],
            "min_participants": max(2, min(3, nodes)),
        },
    }
    path = work / f"node-{site}.toml"
    path.write_text(tomli_w.dumps(node))
    return path


def _start_node(
    work: Path, site: str, config: Path, primia: list[str] | None = None
) -> subprocess.Popen[bytes]:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    primia = primia or [sys.executable, "-m", "primia"]
    command = [*primia, "node", "serve", "--config", str(config)]
    with open(work / "logs" / f"{site}.log", "wb") as log:
        return subprocess.Popen(
            [*command, "--exit-when-done"],
            cwd=work,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )


def _stop(processes: dict[str, subprocess.Popen[bytes]], timeout: float) -> None:
    """Wait for the nodes to exit (they do when the federation finishes); end leftovers."""
    deadline = time.monotonic() + timeout
    for process in processes.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
    stop_all(processes.values())


def run_federation(
    work: Path,
    nodes: int,
    rounds: int,
    patients: int,
    aggregation: Aggregation = "secure",
    node_command: list[str] | None = None,
) -> RunResult:
    """One federation of ``nodes`` node processes in ``work``; the rounds' times.
    ``node_command`` replaces ``python -m primia`` to start the nodes."""
    sites = [f"site{k}" for k in range(nodes)]
    coordinator_tls = _prepare(work, sites, patients)
    config = CoordinatorConfig(
        tls=coordinator_tls,
        roster=sites,
        run_dir=work / "run",
        listen="127.0.0.1:0",
        rounds=rounds,
        min_nodes=nodes,
        startup_wait_s=START_TIMEOUT_S,
        node_wait_s=START_TIMEOUT_S,
        round_timeout_s=1800.0,
        max_attempts=1,
        aggregation=aggregation,
        final_test=False,
        progress=False,
        model=ModelConfig(architecture="resnet18", image_size=IMAGE_SIZE),
        plan=TrainPlan(epochs=1, batch_size=8, dp=DPPlan(epsilon=1.0)),
    )
    stop = threading.Event()
    server = CoordinatorServer(config, stop=stop)
    run_dir = server.federation.run_dir
    checkpoint_s: dict[int, float] = {}
    record_round = run_dir.record_round

    def timed_record_round(record: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        record_round(record, *args, **kwargs)
        checkpoint_s[int(record["round"])] = time.perf_counter() - started

    run_dir.record_round = timed_record_round  # type: ignore[method-assign]
    log_file = logging.FileHandler(work / "logs" / f"{COORDINATOR}.log")
    log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(log_file)
    port = server.start()
    watch, started = CpuWatch(), time.perf_counter()
    processes: dict[str, subprocess.Popen[bytes]] = {}
    failure: list[BaseException] = []

    def federate() -> None:
        try:
            server.run()
        except BaseException as error:  # reported by the main thread
            failure.append(error)

    thread = threading.Thread(target=federate, name="federation", daemon=True)
    try:
        for site in sites:
            processes[site] = _start_node(
                work,
                site,
                _write_node_config(work, site, port, aggregation=aggregation, nodes=nodes),
                node_command,
            )
        thread.start()
        while thread.is_alive():
            thread.join(timeout=1.0)
            dead = [s for s, p in processes.items() if p.poll() not in (None, 0)]
            if dead and thread.is_alive():
                stop.set()
                server.stop(grace=1.0)
                log = work / "logs" / f"{dead[0]}.log"
                raise RuntimeError(f"node {dead[0]} failed; the end of {log}:\n{tail(log, 10)}")
        if failure:
            raise RuntimeError(f"the federation failed: {failure[0]}") from failure[0]
    finally:
        _stop(processes, timeout=60.0)
        logging.getLogger().removeHandler(log_file)
        log_file.close()
    seconds = time.perf_counter() - started
    foreign = watch.foreign_share()
    lines = (work / "run" / "rounds.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    checkpoint = run_dir.checkpoint_path(rounds)
    result = RunResult(
        nodes=nodes,
        weights_mb=checkpoint.stat().st_size / 1e6,
        foreign_load=foreign,
        seconds=seconds,
    )
    for record in records:
        result.rounds.append(
            RoundTimes(
                round=int(record["round"]),
                seconds=float(record["seconds"]),
                train=float(record["train_seconds"]),
                evaluate=float(record["evaluate_seconds"]),
                checkpoint=checkpoint_s.get(int(record["round"]), float("nan")),
            )
        )
    return result


def _row(nodes: int, times: RoundTimes) -> str:
    return (
        f"{nodes:>5} {times.round:>5} {times.seconds:8.2f} {times.train:8.2f} "
        f"{times.evaluate:7.2f} {times.overhead:9.2f} {times.coordination:7.2f} "
        f"{times.checkpoint:6.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    reuse_freed_memory()  # the coordinator runs in this process: as `primia coordinator serve`
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", nargs="+", type=int, default=[3, 10], help="node counts")
    parser.add_argument(
        "--rounds", type=int, default=6, help="rounds per federation; round 1 is warm-up"
    )
    parser.add_argument("--patients-per-site", type=int, default=10, help="2 images each")
    parser.add_argument("--keep", type=Path, default=None, help="keep the work files in DIR")
    parser.add_argument(
        "--aggregation",
        choices=["secure", "plaintext"],
        default="secure",
        help="how updates are combined (default: secure, the federation's default)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be at least 2: round 1 is warm-up and not reported")

    # The coordinator's log goes to logs/coordinator.log in each federation's folder, not
    # to the console (Opacus configures the root logger when imported).
    logging.basicConfig(level=logging.INFO, handlers=[logging.NullHandler()], force=True)
    cpus = os.cpu_count() or 1
    print(
        f"Round overhead, ResNet-18 at {IMAGE_SIZE} px, coordinator and nodes on loopback "
        f"with mutual TLS; {cpus} CPU cores, load average {load_average()}.\n"
        f"Each federation: N node processes (1 torch thread each) and the coordinator share "
        f"the {cpus} cores,\nso node-side times are inflated by contention; 'train s' is the "
        "slowest node's training task\n(decode weights + DP-SGD 1 epoch + encode update), "
        "'eval s' the slowest evaluation.\n"
        "overhead = round s - train s (the issue's figure; goal < 2 s); "
        "coord = overhead - eval s;\nckpt = checkpoint write after the round's clock stops "
        f"(in neither). Rounds 2..{args.rounds} (round 1 is warm-up); "
        f"{args.aggregation} aggregation."
    )
    header = (
        f"{'nodes':>5} {'round':>5} {'round s':>8} {'train s':>8} {'eval s':>7} "
        f"{'overhead':>9} {'coord':>7} {'ckpt':>6}"
    )
    print(header)
    print("-" * len(header), flush=True)
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="primia-overhead-") as temporary:
        root = args.keep or Path(temporary)
        for nodes in args.nodes:
            work = root / f"nodes-{nodes}"
            if work.exists():
                shutil.rmtree(work)
            work.mkdir(parents=True)
            result = run_federation(
                work, nodes, args.rounds, args.patients_per_site, args.aggregation
            )
            results.append(result)
            for times in result.rounds[1:]:
                print(_row(nodes, times), flush=True)

    print()
    for result in results:
        measured = result.rounds[1:]
        overhead = [t.overhead for t in measured]
        coordination = [t.coordination for t in measured]
        met = "met" if max(overhead) < GOAL_S else "NOT met"
        foreign = "n/a" if result.foreign_load is None else f"{result.foreign_load:.0%}"
        print(
            f"{result.nodes:>2} nodes: overhead mean {statistics.mean(overhead):.2f} s, "
            f"max {max(overhead):.2f} s (coordination alone mean "
            f"{statistics.mean(coordination):.2f} s): goal < {GOAL_S:.0f} s {met}. "
            f"{result.nodes} x {result.weights_mb:.0f} MB each way per round; "
            f"run {result.seconds:.0f} s, other programs used {foreign} of the CPUs."
        )
    if len(results) > 1:
        base = statistics.mean(t.overhead for t in results[0].rounds[1:])
        for result in results[1:]:
            mean = statistics.mean(t.overhead for t in result.rounds[1:])
            print(
                f"overhead at {result.nodes} nodes / at {results[0].nodes} nodes: "
                f"{mean / base:.2f}x ({result.nodes / results[0].nodes:.2f}x the nodes)"
            )
    print(f"Load average at end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
