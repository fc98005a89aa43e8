"""Figure: federation rounds with abusive certificate holders alongside, against the same
rounds without them (issue 22), in one run, alternating.

The coordinator runs as its own process (``primia coordinator serve``), so its memory is
its own; the honest nodes (default 10) are threads of this process, each with its own
certificate, stream and ledger; the attackers are a third process, so the CPU they burn
(TLS, hashing their junk) is measured apart: on a small machine it is taken from the
nodes' training, which no server-side limit can prevent. Rounds alternate: odd rounds
clean, even rounds abused (round 1, the warm-up, is left out). During an abused round,
with certificates of the consortium:

* **idle calls** — two certificates (role inference, and a node not on the roster) keep
  opening calls to Join, GetStatus and Probe that never send a message, 10 per
  certificate per second;
* **junk blobs** — ``mallory``, on the roster, streams complete 4 MiB blobs that no
  result names, at most 8 per second (it refuses every task, in clean rounds too, like a
  node out of budget, so both kinds of round have the same participants);
* **oversized fields** — Joins with a 3 MiB device name, twice a second;
* **reconnect storm** — Joins with an honest node's certificate, as fast as refused.

Prints each round's time, the ratio of the median abused round to the median clean one
(goal ≤ 1.2), the coordinator's peak RSS in each kind of round, what the attackers got
back, and whether every honest node contributed to every round.

    python benchmarks/bench_abuse.py [--nodes 10] [--rounds 7] [--patients 30]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import tomli_w
import torch
from machine import CpuWatch, load_average

from primia import pki
from primia.blobs import MIB
from primia.data.synth import SynthConfig, write_dataset
from primia.federated.data_owner import ComputeSettings, DataSettings, PrivacySettings
from primia.launch import free_port
from primia.memory import reuse_freed_memory
from primia.rpc.generated import federation_pb2 as pb
from primia.rpc.generated import federation_pb2_grpc as pb_grpc
from primia.rpc.node_client import NodeClient
from primia.rpc.node_config import NodeConfig
from primia.rpc.tls import secure_channel

SITES = 10
METHODS = tuple(f"/primia.v1.Coordinator/{name}" for name in ("Join", "GetStatus", "Probe"))


def _identity(data: bytes) -> bytes:
    return data


class Attack:
    """The abusive clients; they act while ``on`` is set and count what they got back."""

    def __init__(self, address: str, pki_dir: Path, honest: str) -> None:
        self.address = address
        self.pki_dir = pki_dir
        self.honest = honest
        self.on = threading.Event()
        self.done = threading.Event()
        self.outcomes: Counter[str] = Counter()
        self.junk_sent = 0
        self._lock = threading.Lock()

    def _count(self, what: str) -> None:
        if self.done.is_set():
            return  # the coordinator has finished; its exit is no answer to an attack
        with self._lock:
            self.outcomes[what] += 1

    def _channel(self, name: str) -> grpc.Channel:
        return secure_channel(
            self.address, pki.tls_files(self.pki_dir, name), server_name="coordinator"
        )

    def start(self) -> None:
        for target, args in (
            (self._idle, ("viewer",)),
            (self._idle, ("stranger",)),
            (self._mallory, ()),
            (self._oversized, ()),
            (self._storm, ()),
        ):
            threading.Thread(target=target, args=args, daemon=True).start()

    def _idle(self, holder: str) -> None:
        release = threading.Event()

        def silence():  # type: ignore[no-untyped-def]
            release.wait()
            return
            yield b""

        with self._channel(holder) as channel:
            futures = []
            while not self.done.is_set():
                if self.on.is_set():
                    for index in range(10):
                        call = channel.stream_unary(METHODS[index % 3], _identity, _identity)
                        future = call.future(silence(), timeout=60)
                        future.add_done_callback(
                            lambda f: (
                                self._count(f"idle: {f.exception().code().name}")  # type: ignore[union-attr]
                                if f.exception() is not None
                                else None
                            )
                        )
                        futures.append(future)
                time.sleep(1.0)
            release.set()

    def _mallory(self) -> None:
        """On the roster: refuses every task, and streams junk blobs while ``on``."""
        outbound: queue.Queue[pb.NodeMessage | None] = queue.Queue()
        outbound.put(
            pb.NodeMessage(
                hello=pb.Hello(
                    protocol_version=1,
                    device="cpu",
                    dataset=pb.DatasetSummary(task="multilabel", train_examples=10),
                    privacy=pb.PrivacyState(epsilon_budget=10, delta=1e-5),
                )
            )
        )
        data = b"\x5a" * (4 * MIB)
        digest = hashlib.sha256(data).digest()

        def read(responses) -> None:  # type: ignore[no-untyped-def]
            try:
                for message in responses:
                    kind = message.WhichOneof("kind")
                    if kind in ("train", "evaluate"):
                        task_id = getattr(message, kind).task_id
                        outbound.put(
                            pb.NodeMessage(
                                refused=pb.TaskRefused(
                                    task_id=task_id,
                                    reason=pb.REFUSAL_REASON_BUDGET_EXCEEDED,
                                    detail="mallory never trains",
                                )
                            )
                        )
                    elif kind == "error":
                        self._count("junk blob: refused")
            except grpc.RpcError:
                pass

        with self._channel("mallory") as channel:
            responses = pb_grpc.CoordinatorStub(channel).Join(iter(outbound.get, None))
            threading.Thread(target=read, args=(responses,), daemon=True).start()
            while not self.done.is_set():
                if self.on.is_set():
                    chunk = pb.Chunk(
                        blob_id=f"junk-{self.junk_sent}",
                        offset=0,
                        data=data,
                        total_size=len(data),
                        sha256=digest,
                    )
                    outbound.put(pb.NodeMessage(chunk=chunk))
                    self.junk_sent += 1
                time.sleep(1 / 8)
            outbound.put(None)

    def _join_once(self, name: str, device: str) -> None:
        message = pb.NodeMessage(
            hello=pb.Hello(
                protocol_version=1,
                device=device,
                dataset=pb.DatasetSummary(task="multilabel", train_examples=10),
                privacy=pb.PrivacyState(epsilon_budget=10, delta=1e-5),
            )
        )
        with self._channel(name) as channel:
            try:
                reply = next(pb_grpc.CoordinatorStub(channel).Join(iter([message]), timeout=10))
                self._count(f"join as {name}: ACCEPTED ({reply.WhichOneof('kind')})")
            except grpc.RpcError as error:
                self._count(f"join as {name}: {error.code().name}")

    def _oversized(self) -> None:
        while not self.done.is_set():
            if self.on.is_set():
                self._join_once("mallory2", "x" * (3 * MIB))
            time.sleep(0.5)

    def _storm(self) -> None:
        while not self.done.is_set():
            if self.on.is_set():
                self._join_once(self.honest, "storm")
            time.sleep(0.02)


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _abused(rounds_file: Path, rounds: int) -> bool:
    """Whether the round now running is an abused one (even), none once all are done."""
    done = len(rounds_file.read_text().splitlines()) if rounds_file.exists() else 0
    return done < rounds and (done + 1) % 2 == 0


def attack_main(args: argparse.Namespace) -> None:
    """The attacker process: abuse during even rounds; print what came back, as JSON."""
    attack = Attack(args.attack_at, args.pki, honest=args.honest)
    attack.start()
    while True:
        done = len(args.rounds_file.read_text().splitlines()) if args.rounds_file.exists() else 0
        if done >= args.rounds:
            break
        if _abused(args.rounds_file, args.rounds):
            attack.on.set()
        else:
            attack.on.clear()
        time.sleep(0.05)
    attack.on.clear()
    attack.done.set()
    print(json.dumps({**attack.outcomes, "junk_sent": attack.junk_sent}))


def main() -> None:
    reuse_freed_memory()  # as the primia command does
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--patients", type=int, default=30, help="per site; sets how long a round trains"
    )
    parser.add_argument("--attack-at", help=argparse.SUPPRESS)
    parser.add_argument("--pki", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--honest", help=argparse.SUPPRESS)
    parser.add_argument("--rounds-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR, force=True)
    if args.attack_at:
        attack_main(args)
        return
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        write_dataset(
            work / "data",
            SynthConfig(
                sites=SITES,
                patients_per_site=args.patients,
                images_per_patient=4,
                size=32,
            ),
            progress=False,
        )
        pki.init_ca(work / "pki", "primia-bench")
        names = [f"node{k:02d}" for k in range(args.nodes)]
        pki.issue(work / "pki", "coordinator", "coordinator")
        for name in [*names, "mallory", "mallory2", "stranger"]:
            pki.issue(work / "pki", name, "node")
        pki.issue(work / "pki", "viewer", "inference")
        port = free_port()
        config = {
            "tls": {
                "ca": "pki/ca.pem",
                "certificate": "pki/coordinator.pem",
                "key": "pki/coordinator.key",
            },
            "roster": [*names, "mallory", "mallory2"],
            "run_dir": "run",
            "listen": f"127.0.0.1:{port}",
            "rounds": args.rounds,
            "min_nodes": args.nodes,
            "startup_wait_s": 5.0,
            "node_wait_s": 300.0,
            "max_attempts": 1,
            "final_test": False,
            "progress": False,
            "model": {"architecture": "cnn", "width": 4, "image_size": 32},
            "plan": {"epochs": 1, "batch_size": 8, "dp": {"epsilon": 1.0}},
        }
        (work / "coordinator.toml").write_text(tomli_w.dumps(config))
        log = (work / "coordinator.log").open("w")
        coordinator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "primia",
                "coordinator",
                "serve",
                "--config",
                str(work / "coordinator.toml"),
                "--no-progress",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ,
        )
        address = f"127.0.0.1:{port}"
        clients = []
        for k, name in enumerate(names):
            node = NodeConfig(
                tls=pki.tls_files(work / "pki", name),
                data=DataSettings(path=work / "data", site=f"site{k % SITES}"),
                coordinator=address,
                state_dir=work / f"state-{name}",
                privacy=PrivacySettings(epsilon_budget=20.0, accountant="rdp"),
                compute=ComputeSettings(threads=1),
                reconnect_max_s=1.0,
                exit_when_done=True,
            )
            client = NodeClient.from_config(node, default_image_size=32)
            threading.Thread(target=client.serve, name=name, daemon=True).start()
            clients.append(client)
        rounds_file = work / "run" / "rounds.jsonl"
        attacker = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--attack-at",
                address,
                "--pki",
                str(work / "pki"),
                "--honest",
                names[1],
                "--rounds-file",
                str(rounds_file),
                "--rounds",
                str(args.rounds),
            ],
            stdout=subprocess.PIPE,
            env=os.environ,
            text=True,
        )
        peak = {"clean": 0, "abused": 0}
        cpu = {
            "clean": {"coordinator": 0.0, "attackers": 0.0, "wall": 0.0},
            "abused": {"coordinator": 0.0, "attackers": 0.0, "wall": 0.0},
        }
        print(f"load average before: {load_average()}")
        watch = CpuWatch()
        last = (time.perf_counter(), _cpu(coordinator.pid), _cpu(attacker.pid))
        while coordinator.poll() is None:
            kind = "abused" if _abused(rounds_file, args.rounds) else "clean"
            try:
                peak[kind] = max(peak[kind], _rss(coordinator.pid))
                now = (time.perf_counter(), _cpu(coordinator.pid), _cpu(attacker.pid))
            except OSError:
                break
            for key, index in (("wall", 0), ("coordinator", 1), ("attackers", 2)):
                cpu[kind][key] += now[index] - last[index]
            last = now
            time.sleep(0.05)
        outcomes = json.loads(attacker.communicate(timeout=60)[0])
        load_after = load_average()
        for client in clients:
            client.stop()
        records = [json.loads(line) for line in rounds_file.read_text().splitlines()]
        log.close()
        if coordinator.returncode != 0:
            print((work / "coordinator.log").read_text()[-3000:])
            raise SystemExit(f"the coordinator failed (exit {coordinator.returncode})")
    print(
        f"{args.nodes} honest nodes, secure aggregation, cnn width 4 at 32 px, 1 epoch of "
        "DP-SGD; odd rounds clean, even rounds abused; round 1 is the warm-up"
    )
    print("round  kind     seconds  honest contributors")
    times: dict[str, list[float]] = {"clean": [], "abused": []}
    all_contributed = True
    for record in records:
        kind = "abused" if record["round"] % 2 == 0 else "clean"
        honest = [name for name in record["contributors"] if name in names]
        all_contributed &= len(honest) == args.nodes
        if record["round"] > 1:
            times[kind].append(float(record["seconds"]))
        print(
            f"{record['round']:>5}  {kind:7}  {float(record['seconds']):7.2f}  "
            f"{len(honest)}/{args.nodes}"
        )
    ratio = statistics.median(times["abused"]) / statistics.median(times["clean"])
    print(f"round-time ratio abused/clean (medians, warm-up left out): {ratio:.2f} (goal <= 1.2)")
    print(
        f"coordinator peak RSS: clean rounds {peak['clean'] / MIB:.0f} MiB, "
        f"abused rounds {peak['abused'] / MIB:.0f} MiB"
    )
    print(f"every honest node contributed to every round: {all_contributed}")
    for kind in ("clean", "abused"):
        spent = cpu[kind]
        wall = max(spent["wall"], 1e-9)
        print(
            f"CPU in {kind} rounds: coordinator {spent['coordinator'] / wall:.0%} of a core, "
            f"attacker process {spent['attackers'] / wall:.0%} of a core"
        )
    print(f"junk blobs sent: {outcomes.pop('junk_sent')} x 4 MiB; what the attackers got back:")
    for what, count in sorted(outcomes.items()):
        print(f"  {what}: {count}")
    foreign = watch.foreign_share()
    share = "n/a" if foreign is None else f"{foreign:.0%}"
    print(f"load average after: {load_after}; other programs used {share} of the CPUs")


if __name__ == "__main__":
    main()
