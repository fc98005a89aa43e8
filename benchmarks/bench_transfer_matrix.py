"""The domain-transfer matrix on 3 synthetic sites: non-DP and ε = 1, 3, 8.

Three node processes (``primia node serve``, one per site, mutual TLS on loopback) and
the matrix's coordinator in this process: per privacy level a model trained at each site
alone and a federated one (secure aggregation), every model evaluated at every site's
node. Prints the matrices, the mean on-site → cross-site AUROC drop per level with the
paired bootstrap P of "DP widens the drop", and the runtime of the whole matrix.

The synthetic sites differ as :mod:`primia.data.synth` describes (intensity curve,
noise, blur, markers, prevalence): the question is the study's (Tayebi Arasteh et al.,
Radiology: AI 2024, which found drops of 0.07 with and without DP, P > .1).

    python benchmarks/bench_transfer_matrix.py                # ~10 min on 2 cores
    python benchmarks/bench_transfer_matrix.py --quick        # 2 levels, small data
    python benchmarks/bench_transfer_matrix.py --quick --augmentations 2 --ema-decay 0.9 \
        --pretrain                                            # issue 25's techniques on

``--pretrain`` starts every model (non-DP and DP alike) from one trained non-privately on
synthetic sites of another seed, data the nodes need not protect (the coordinator's
``init``); ``--augmentations`` and ``--ema-decay`` go into the plan every node follows.
The nodes protect patients (their default unit).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import tomli_w
from machine import CpuWatch, load_average

from primia import pki
from primia.data.synth import SynthConfig, write_dataset
from primia.federated.coordinator_config import CoordinatorConfig, ModelConfig
from primia.federated.plan import DPPlan, TrainPlan
from primia.launch import free_port, start_primia, stop_all, tail
from primia.train import DPConfig, TrainConfig, train_local
from primia.transfer.matrix import TransferSettings
from primia.transfer.run import run_transfer_matrix, transfer_server

COORDINATOR = "coordinator"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="ε=8 only, fewer patients")
    parser.add_argument("--patients", type=int, default=300, help="patients per site")
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--model", default="resnet9", help="architecture (width 16)")
    parser.add_argument("--work", type=Path, help="keep the run here (default: a temp dir)")
    parser.add_argument("--augmentations", type=int, default=1, help="the plan's K")
    parser.add_argument("--ema-decay", type=float, default=0.0, help="the plan's EMA decay")
    parser.add_argument(
        "--pretrain", action="store_true", help="start from a model trained on other data"
    )
    args = parser.parse_args()
    epsilons = (8.0,) if args.quick else (1.0, 3.0, 8.0)
    patients = 60 if args.quick else args.patients
    with tempfile.TemporaryDirectory(prefix="primia-transfer-") as temporary:
        work = args.work or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        plan = TrainPlan(
            epochs=3,
            batch_size=128,
            lr=1e-3,
            ema_decay=args.ema_decay,
            augmentations=args.augmentations,
            dp=DPPlan(epsilon=1.0),
        )
        return run(
            work, epsilons, patients, args.image_size, args.rounds, args.model, plan, args.pretrain
        )


def pretrained(work: Path, patients: int, size: int, model: str) -> Path:
    """A model trained non-privately on synthetic sites of another seed (public data)."""
    data = work / "public-data"
    write_dataset(
        data,
        SynthConfig(sites=3, patients_per_site=patients, images_per_patient=3, size=size, seed=1),
        progress=False,
    )
    config = TrainConfig(
        data=data,
        out=work / "public-run",
        model=model,
        width=16,
        image_size=size,
        epochs=3,
        batch_size=128,
        lr=1e-3,
        threads=1,
        progress=False,
        dp=DPConfig(enabled=False),
    )
    return train_local(config).model_path


def run(
    work: Path,
    epsilons: tuple[float, ...],
    patients: int,
    size: int,
    rounds: int,
    model: str,
    plan: TrainPlan,
    pretrain: bool,
) -> int:
    sites = ["site0", "site1", "site2"]
    started = time.perf_counter()
    write_dataset(
        work / "data",
        SynthConfig(sites=3, patients_per_site=patients, images_per_patient=3, size=size),
        progress=False,
    )
    pki.init_ca(work / "pki", "primia-bench")
    coordinator_tls = pki.issue(work / "pki", COORDINATOR, "coordinator")
    for site in sites:
        pki.issue(work / "pki", site, "node")
    init = pretrained(work, patients, size, model) if pretrain else None
    data_seconds = time.perf_counter() - started
    port = free_port()
    config = CoordinatorConfig(
        tls=coordinator_tls,
        roster=sites,
        run_dir=work / "unused",
        listen=f"127.0.0.1:{port}",
        rounds=rounds,
        min_nodes=3,
        startup_wait_s=600.0,
        progress=False,
        model=ModelConfig(architecture=model, width=16, image_size=size),
        plan=plan,
        init=init,
    )
    settings = TransferSettings(out=work / "transfer", epsilons=epsilons, resamples=1000)
    server = transfer_server(config, settings)
    server.start()
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    processes = []
    for site in sites:
        node = {
            "coordinator": f"127.0.0.1:{port}",
            "coordinator_name": COORDINATOR,
            "state_dir": f"state-{site}",
            "reconnect_max_s": 1.0,
            "exit_when_done": True,
            "tls": {"ca": "pki/ca.pem", "certificate": f"pki/{site}.pem", "key": f"pki/{site}.key"},
            "data": {"path": "data", "site": site, "test_fraction": 0.25},
            "privacy": {"epsilon_budget": 2 * sum(epsilons) + 1, "accountant": "rdp"},
            "limits": {"require_dp": False},
            "compute": {"threads": 1},
            # A site-local model reaches the coordinator as one node's update (plaintext).
            "policy": {
                "aggregation": ["secure", "plaintext"],
                "min_participants": max(2, min(3, len(sites))),
            },
        }
        (work / f"node-{site}.toml").write_text(tomli_w.dumps(node))
        processes.append(
            start_primia(site, ["node", "serve", "--config", f"node-{site}.toml"], work, logs)
        )
    watch = CpuWatch()
    try:
        matrix_started = time.perf_counter()
        result = run_transfer_matrix(config, settings, server=server)
        matrix_seconds = time.perf_counter() - matrix_started
    except BaseException:
        for site in sites:
            print(f"--- {site}\n{tail(logs / f'{site}.log')}", file=sys.stderr)
        raise
    finally:
        stop_all(processes)

    print(
        f"{os.cpu_count()} CPUs, load {load_average()}; other programs used "
        f"{_share(watch.foreign_share())} of the CPUs meanwhile"
    )
    print(
        f"3 sites x {patients} patients x 3 images at {size} px; {model} (width 16); "
        f"{rounds} rounds x 3 "
        f"epochs per model; K {plan.augmentations}, EMA decay {plan.ema_decay:g}, "
        f"{'pre-trained' if init else 'from scratch'}; data, certificates and pre-training "
        f"{data_seconds:.0f} s"
    )
    for name, level in result.analysis["levels"].items():
        print(f"\n{name}: mean AUROC (rows trained at, columns tested at)")
        print("            " + "".join(f"{site:>22}" for site in sites))
        for row, cells in level["matrix"].items():
            line = "".join(
                f"{c['value']:>8.3f} [{c['lower']:.2f},{c['upper']:.2f}]"
                if c["value"] is not None
                else f"{'n/a':>22}"
                for c in (cells[site] for site in sites)
            )
            print(f"{row:>12}{line}")
    print("\nlevel     mean drop [95% CI]          minus non-DP drop [95% CI]    P")
    for name, level in result.analysis["levels"].items():
        drop = level.get("mean_drop") or {}
        versus = (level.get("vs_non_dp") or {}).get("mean_drop_difference") or {}
        print(
            f"{name:<9} {_fmt(drop, 'value'):<27} {_fmt(versus, 'difference'):<29} "
            f"{'' if versus.get('p_value') is None else format(versus['p_value'], '.3f')}"
        )
    trained = sum(v for k, v in result.timings.items() if k.startswith("train/"))
    evaluated = sum(v for k, v in result.timings.items() if k.startswith("evaluate/"))
    print(
        f"\nwhole matrix {matrix_seconds:.0f} s ({len(result.analysis['levels'])} levels, "
        f"{len(result.analysis['levels']) * 4} models, {len(result.analysis['levels']) * 12} "
        f"cells): training {trained:.0f} s summed over models (local models of one level "
        f"train at the same time), evaluation {evaluated:.0f} s summed over cells"
    )
    print(f"report: {result.files.html}")
    return 0


def _share(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.0%}"


def _fmt(estimate: dict, key: str) -> str:
    value = estimate.get(key)
    if value is None:
        return "n/a"
    return f"{value:+.3f} [{estimate['lower']:+.3f}, {estimate['upper']:+.3f}]"


if __name__ == "__main__":
    sys.exit(main())
