"""Figure: a round with secure aggregation over 50 nodes, on one machine.

The coordinator and 50 nodes run in this process, the nodes as threads (a process each
would need ~50 × 300 MB for torch alone), each with its own certificate, its own mutual-
TLS stream to the coordinator and its own privacy ledger; the nodes share 10 synthetic
sites' data (5 nodes per site). Model: the small CNN (width 4) at 32 px, one epoch of
DP-SGD per round, so the round time is mostly coordination: 50 training tasks, the four
steps of secure aggregation (50 nodes' keys, 50 × 49 sealed shares, 50 masked uploads,
the unmasking), FedAvg and 50 evaluations. Prints each round's wall time, the slowest
node's training and the rest.

    python benchmarks/bench_many_nodes.py [--nodes 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import threading
import time
from pathlib import Path

import torch
from machine import CpuWatch, load_average

from primia import pki
from primia.data.synth import SynthConfig, write_dataset
from primia.federated.coordinator_config import CoordinatorConfig, ModelConfig
from primia.federated.data_owner import ComputeSettings, DataSettings, PrivacySettings
from primia.federated.plan import DPPlan, TrainPlan
from primia.memory import reuse_freed_memory
from primia.rpc.coordinator_server import CoordinatorServer
from primia.rpc.node_client import NodeClient
from primia.rpc.node_config import NodeConfig

SITES = 10


def main() -> None:
    reuse_freed_memory()  # as the primia command does
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING, force=True)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        synth = SynthConfig(sites=SITES, patients_per_site=5, images_per_patient=2, size=32)
        write_dataset(work / "data", synth, progress=False)
        pki.init_ca(work / "pki", "primia-bench")
        names = [f"node{k:02d}" for k in range(args.nodes)]
        coordinator_tls = pki.issue(work / "pki", "coordinator", "coordinator")
        for name in names:
            pki.issue(work / "pki", name, "node")
        config = CoordinatorConfig(
            tls=coordinator_tls,
            roster=names,
            run_dir=work / "run",
            listen="127.0.0.1:0",
            rounds=args.rounds,
            min_nodes=args.nodes,
            startup_wait_s=300.0,
            node_wait_s=300.0,
            max_attempts=1,
            final_test=False,
            progress=False,
            model=ModelConfig(architecture="cnn", width=4, image_size=32),
            plan=TrainPlan(epochs=1, batch_size=8, dp=DPPlan(epsilon=1.0)),
        )
        server = CoordinatorServer(config)
        port = server.start()
        clients = []
        for k, name in enumerate(names):
            node = NodeConfig(
                tls=pki.tls_files(work / "pki", name),
                data=DataSettings(path=work / "data", site=f"site{k % SITES}"),
                coordinator=f"127.0.0.1:{port}",
                state_dir=work / f"state-{name}",
                privacy=PrivacySettings(epsilon_budget=10.0, accountant="rdp"),
                compute=ComputeSettings(threads=1),
                reconnect_max_s=1.0,
                exit_when_done=True,
            )
            client = NodeClient.from_config(node, default_image_size=32)
            threading.Thread(target=client.serve, name=name, daemon=True).start()
            clients.append(client)
        print(f"load average before: {load_average()}")
        watch, started = CpuWatch(), time.perf_counter()
        server.run()
        total = time.perf_counter() - started
        for client in clients:
            client.stop()
        server.stop(grace=1.0)
        records = [
            json.loads(line) for line in (work / "run" / "rounds.jsonl").read_text().splitlines()
        ]
    print(f"{args.nodes} nodes, secure aggregation, cnn width 4 at 32 px, 1 epoch of DP-SGD")
    print("round  contributors  round s  train s (slowest)  rest s")
    for record in records:
        seconds, train = float(record["seconds"]), float(record["train_seconds"])
        print(
            f"{record['round']:>5}  {len(record['contributors']):>12}  {seconds:7.2f}  "
            f"{train:17.2f}  {seconds - train:6.2f}"
        )
    foreign = watch.foreign_share()
    share = "n/a" if foreign is None else f"{foreign:.0%}"
    print(f"total {total:.0f} s (start-up included); other programs used {share} of the CPUs")


if __name__ == "__main__":
    main()
