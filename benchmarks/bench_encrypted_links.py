"""Encrypted inference on secured links with warm sessions: latency, link cost, traffic.

For ResNet-18 (one input channel, width 64, 4 outputs, seeded random weights) at
``--size`` pixels (224 by default) and each batch size (1 and 8), on synthetic radiographs:

* ``service s/img``: the data owner's ``predict`` through the real servers on loopback
  (model owner and crypto provider gRPC servers with mutual TLS, each with a warm pool of
  one party process; the data owner with a warm pool of its own), from the request
  (Describe, OpenSession, Deal) to the logits, over the batch size. Every MPC byte goes
  over the mutual-TLS links.
* ``tls s/img`` and ``gloo s/img``: the same session run by
  :func:`primia.inference.local.run_local` with warm processes, once over the TLS links and
  once over CrypTen's own gloo process group (unauthenticated, unencrypted), alternating
  TLS, gloo, TLS, gloo for ``--repeats`` pairs; ``tls/gloo`` is the ratio of their
  medians: what securing the links costs.
* ``--unaccelerated``: also TLS sessions with CrypTen's own dealing and Beaver
  multiplication (``run_local(plain=True)``, without
  :mod:`primia.inference.acceleration`), alternating with the others: what the exact
  faster forms save.
* ``crypten s/img``: plain CrypTen (its ONNX path on a BatchNorm copy of the model, gloo,
  TTP, CrypTen's own dealing) in the same run, with warm processes (its model conversion counts).
* per party: CrypTen's own rounds and bytes (8 bytes an element) in the service session.

All three parties share this machine's cores (``--threads`` torch threads each), so their
computations compete; the machine's load and the share of the CPUs other programs used
(``machine.CpuWatch``) are printed beside the figures, which are only as good as that.

    python benchmarks/bench_encrypted_links.py                  # 224 px, batches 1 and 8
    python benchmarks/bench_encrypted_links.py --size 32 --batches 1 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from bench_encrypted_inference import (
    batchnorm_copy,
    crypten_data_owner,
    crypten_model_owner,
    radiographs,
)
from machine import CpuWatch, load_average

from primia import pki
from primia.inference.local import run_local
from primia.inference.party_config import (
    CryptoProviderConfig,
    DataOwnerConfig,
    ModelOwnerConfig,
    ModelOwnerEntry,
)
from primia.inference.processes import PartyPool
from primia.models.checkpoint import ModelSpec, save_model
from primia.rpc.inference_client import predict
from primia.rpc.inference_server import crypto_provider_server, model_owner_server

WARM_TIMEOUT_S = 600.0
LABELS = ("tls", "gloo", "tls-unaccel", "crypten")
GOALS = {1: 8.0, 8: 4.0}
"""Seconds per image the issue asks for, by batch size (secured links included)."""


def _service(
    spec: ModelSpec, model: torch.nn.Module, images: torch.Tensor, threads: int, scratch: Path
) -> tuple[float, torch.Tensor, list[tuple[str, int, int]]]:
    """Seconds per image of one warm prediction through the servers, its logits, and
    (role, rounds, bytes) per party."""
    pki.init_ca(scratch, "bench")
    for name in ("model-owner", "crypto-provider"):
        pki.issue(scratch, name, "inference")
    pki.issue(scratch, "hospital", "node")
    model_path = scratch / "model.safetensors"
    save_model(model_path, model, spec)
    ports = (29500, 29599)
    dealer = crypto_provider_server(
        CryptoProviderConfig(
            tls=pki.tls_files(scratch, "crypto-provider"),
            listen="127.0.0.1:0",
            model_owners=(ModelOwnerEntry("model-owner", "127.0.0.1", ports),),
            threads=threads,
            join_timeout_s=120,
        )
    )
    owner = model_owner_server(
        ModelOwnerConfig(
            tls=pki.tls_files(scratch, "model-owner"),
            listen="127.0.0.1:0",
            crypto_provider=f"127.0.0.1:{dealer.start()}",
            rendezvous_ports=ports,
            threads=threads,
            join_timeout_s=120,
        ),
        model_path,
    )
    owner.start()
    pool = PartyPool(1, threads=threads, name="data owner")
    config = DataOwnerConfig(
        tls=pki.tls_files(scratch, "hospital"), server=f"127.0.0.1:{owner.port}", threads=threads
    )
    try:
        for warm in (pool, owner.table.pool, dealer.table.pool):
            assert warm is not None and warm.wait_warm(WARM_TIMEOUT_S), "pool did not warm up"
        prediction = predict(images, config, pool=pool)
        stats = [("data owner", prediction.stats.rounds, prediction.stats.bytes_communicated)]
        for server in (owner, dealer):
            deadline = time.monotonic() + 120
            while server.table.running and time.monotonic() < deadline:
                server.table.reap()
                time.sleep(0.2)
            for session in server.table.finished:
                outcome = session.party.wait(0)
                if outcome is not None and outcome.stats is not None:
                    party = outcome.stats
                    stats.append((party.role, party.rounds, party.bytes_communicated))
    finally:
        pool.close()
        owner.stop()
        dealer.stop()
    return prediction.seconds / len(images), prediction.logits, stats


def _local(
    spec: ModelSpec,
    state: dict[str, torch.Tensor],
    images: torch.Tensor,
    threads: int,
    repeats: int,
    crypten: bool,
    unaccelerated: bool,
) -> dict[str, list[float]]:
    """Seconds per image of warm run_local sessions: TLS, gloo (and TLS without primia's
    faster dealing and multiplication) alternating, then plain CrypTen."""
    pool = PartyPool(3, threads=threads, name="bench")
    model = spec.build()
    model.load_state_dict(state)
    crypten_state = batchnorm_copy(model, seed=0).state_dict()
    times: dict[str, list[float]] = {label: [] for label in LABELS}
    pair = [("tls", True), ("gloo", False)] + ([("tls-unaccel", True)] if unaccelerated else [])
    order = pair * repeats + ([("crypten", False)] if crypten else [])
    try:
        for label, secure in order:
            if not pool.wait_warm(WARM_TIMEOUT_S):
                raise RuntimeError("the party pool did not warm up")
            functions: dict[str, Any] = (
                {"model_owner": crypten_model_owner, "data_owner": crypten_data_owner}
                if label == "crypten"
                else {}
            )
            # plain CrypTen runs the BatchNorm copy of the model (its converter's input)
            weights = crypten_state if label == "crypten" else state
            run = run_local(
                spec,
                weights,
                images,
                secure=secure,
                pool=pool,
                threads=threads,
                plain=label in ("crypten", "tls-unaccel"),
                **functions,
            )
            times[label].append(run.seconds / len(images))
    finally:
        pool.close()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="TLS/gloo pairs (default 1)")
    parser.add_argument("--no-crypten", action="store_true", help="skip plain CrypTen")
    parser.add_argument(
        "--unaccelerated",
        action="store_true",
        help="also time TLS sessions with CrypTen's own dealing and multiplication (without "
        "primia.inference.acceleration), alternating with the others",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    spec = ModelSpec("resnet18", 4, width=64, image_size=args.size)
    torch.manual_seed(0)
    model = spec.build().eval()
    print(f"ResNet-18, 1 channel, {args.size} px, {args.threads} thread(s) per party")
    print(f"load average before: {load_average()}")
    rows = []
    for batch in args.batches:
        watch = CpuWatch()
        images = radiographs(batch, args.size, seed=1)
        with torch.no_grad():
            plain = model(images)
        with tempfile.TemporaryDirectory() as scratch:
            service_s, logits, stats = _service(spec, model, images, args.threads, Path(scratch))
        local = _local(
            spec,
            model.state_dict(),
            images,
            args.threads,
            args.repeats,
            not args.no_crypten,
            args.unaccelerated,
        )
        tls, gloo = statistics.median(local["tls"]), statistics.median(local["gloo"])
        unaccelerated = statistics.median(local["tls-unaccel"]) if local["tls-unaccel"] else None
        row = {
            "batch": batch,
            "service_s_per_image": service_s,
            "tls_s_per_image": tls,
            "gloo_s_per_image": gloo,
            "tls_over_gloo": tls / gloo,
            "tls_unaccelerated_s_per_image": unaccelerated,
            "crypten_s_per_image": statistics.median(local["crypten"])
            if local["crypten"]
            else None,
            "max_error": (logits - plain).abs().max().item(),
            "parties": [{"role": r, "rounds": n, "bytes": b} for r, n, b in stats],
            "runs": local,
            "goal_s_per_image": GOALS.get(batch),
            "load_average": load_average(),
            "others_cpu_share": watch.foreign_share(),
        }
        rows.append(row)
        crypten_s = row["crypten_s_per_image"]
        print(
            f"batch {batch}: service {service_s:.2f} s/img (goal {GOALS.get(batch, '-')}), "
            f"tls {tls:.2f} s/img, gloo {gloo:.2f} s/img, tls/gloo {tls / gloo:.2f}, "
            f"crypten {'-' if crypten_s is None else f'{crypten_s:.2f}'} s/img, "
            f"max err {row['max_error']:.1e}"
        )
        if unaccelerated is not None:
            print(
                f"  tls without primia's acceleration {unaccelerated:.2f} s/img "
                f"(accelerated/unaccelerated {tls / unaccelerated:.2f})"
            )
        for role, rounds, nbytes in stats:
            print(f"  {role:16} {rounds:6d} rounds {nbytes / 1e9:7.3f} GB")
        share = row["others_cpu_share"]
        print(
            f"  load average {row['load_average']}; other programs used "
            f"{'n/a' if share is None else f'{share:.0%}'} of the CPUs"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
