"""Throughput of streaming a tensor to the coordinator over loopback with mutual TLS, in MB/s.

Goal: at least 40 % of the machine's AES-128-GCM speed (``openssl speed -evp aes-128-gcm``
at 16 KB blocks, one core): that is the ceiling for any encrypted transport on one core,
since every byte must be sealed by the sender and opened by the receiver. The script also
prints the bound that the SHA-256 check on arrival sets (:func:`verified_stream_bound`):
hashing one blob is sequential, so no transport that checks it streams faster than
SHA-256 runs, and on a machine whose SHA-256 is slower than 40 % of its AES-GCM the
goal cannot be met by any design that keeps the check.

A coordinator (:class:`primia.rpc.coordinator_server.CoordinatorServer`, a temporary PKI)
runs in its own process, as on its own machine, and :func:`primia.rpc.probe.probe` uploads each
payload to it ``--repeats`` times on a fresh mutual-TLS channel: chunks, protobuf, gRPC,
TLS, then reassembly and the SHA-256 check on arrival, exactly as weights travel. Payloads:

* a 100 MB tensor: ``torch.randn(26_214_400)`` as safetensors (104.9 MB);
* ResNet-18 (float32, 4 outputs): primia's real state dict as safetensors (~45 MB).

The 100 MB tensor is also sent in chunks of each of ``--chunk-sizes`` MiB. MB/s counts MB
of 10^6 bytes over the time from the first chunk sent to the coordinator's receipt, on an
open connection. "coordinator CPU" is the CPU time the coordinator's process used per
100 MB (Linux only): near 1 s per second of transfer means it is the bottleneck. Client
and coordinator share the machine's cores, so run nothing else meanwhile.

    python benchmarks/bench_transport.py
    python benchmarks/bench_transport.py --repeats 5 --chunk-sizes 1 2 4 8
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import torch
from machine import load_average

from primia.blobs import CHUNK_SIZE, MAX_CHUNK_SIZE, MIB
from primia.federated.coordinator_config import CoordinatorConfig, ModelConfig
from primia.federated.weights import encode
from primia.memory import reuse_freed_memory
from primia.models import build_model
from primia.pki import TLSFiles, init_ca, issue, tls_files
from primia.rpc.coordinator_server import CoordinatorServer
from primia.rpc.probe import MEGABYTE, probe

GOAL = 0.40
"""Of the AES-128-GCM speed of one core at 16 KB blocks."""
OPENSSL_BLOCK = 16384
NODE = "hospital-a"


@dataclass(frozen=True)
class Measurement:
    label: str
    size: int
    speeds: list[float]  # MB/s, one per repeat
    coordinator_cpu: float | None  # seconds per 100 MB, over all repeats

    @property
    def best(self) -> float:
        return max(self.speeds)

    @property
    def median(self) -> float:
        return statistics.median(self.speeds)


def _serve(pki: Path, run_dir: Path, conn: Connection) -> None:
    """The coordinator's process: listen on a free loopback port until told to stop."""
    reuse_freed_memory()  # as the primia command does
    config = CoordinatorConfig(
        tls=tls_files(pki, "coordinator"),
        roster=[NODE],
        run_dir=run_dir,
        listen="127.0.0.1:0",
        min_nodes=1,
        aggregation="plaintext",
        model=ModelConfig(architecture="cnn", image_size=32),  # never built: no rounds run
    )
    server = CoordinatorServer(config)
    conn.send(server.start())
    conn.recv()  # any message, or the parent's end closing, means stop
    server.stop(grace=0)


def _cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of process ``pid`` (Linux /proc), or None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    label: str,
    payload: bytes,
    address: str,
    files: TLSFiles,
    *,
    server_pid: int,
    repeats: int,
    chunk_size: int = CHUNK_SIZE,
) -> Measurement:
    speeds: list[float] = []
    before = _cpu_seconds(server_pid)
    for _ in range(repeats):
        result = probe(address, files, payload=payload, chunk_size=chunk_size)
        if not result.verified:
            raise SystemExit(f"{label}: the coordinator's receipt does not match what was sent")
        speeds.append(result.megabytes_per_second)
    after = _cpu_seconds(server_pid)
    cpu = None
    if before is not None and after is not None:
        cpu = (after - before) / (repeats * len(payload) / (100 * MEGABYTE))
    return Measurement(label, len(payload), speeds, cpu)


def openssl_speed(algorithm: str, seconds: int) -> float | None:
    """``openssl speed -evp ALGORITHM`` on one core at 16 KB blocks in MB/s, or None."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    command = [openssl, "speed", "-evp", algorithm, "-seconds", str(seconds)]
    try:
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    # A header "type  16 bytes  64 bytes ... 16384 bytes", then "AES-128-GCM  123.45k ...":
    # the figures are in 1000s of bytes per second.
    sizes: list[str] = []
    for line in output.splitlines():
        if line.startswith("type"):
            sizes = re.findall(r"(\d+) bytes", line)
        elif line.upper().startswith(algorithm.upper()) and str(OPENSSL_BLOCK) in sizes:
            figure = line.split()[1 + sizes.index(str(OPENSSL_BLOCK))]
            return float(figure.rstrip("k")) * 1e3 / MEGABYTE
    return None


def verified_stream_bound(aes: float, sha256: float, cores: int) -> float:
    """The most MB/s any loopback transport can reach here while the receiver checks a
    SHA-256 of each blob: every byte is sealed (AES-GCM), opened (AES-GCM) and hashed
    once; the hash of one blob is sequential, so it runs at most at SHA-256's speed, and
    the three together share ``cores`` cores at best. Copies, system calls and framing
    are free in this bound, which no real transport attains."""
    work = 2 / aes + 1 / sha256  # CPU-seconds per MB
    return min(sha256, cores / work)


def _tensor_100mb() -> bytes:
    generator = torch.Generator().manual_seed(0)
    return encode({"w": torch.randn(26_214_400, generator=generator)})


def _resnet18() -> bytes:
    torch.manual_seed(0)
    return encode(build_model("resnet18", num_classes=4).state_dict())


def _row(measurement: Measurement, ceiling: float | None) -> str:
    cpu = "n/a" if measurement.coordinator_cpu is None else f"{measurement.coordinator_cpu:.2f} s"
    ratio = f"{measurement.best / ceiling:6.1%}" if ceiling else "   n/a"
    return (
        f"{measurement.label:<30} {measurement.size / MEGABYTE:7.1f} {measurement.best:7.0f} "
        f"{measurement.median:7.0f} {ratio:>7} {cpu:>9}"
    )


def main(argv: list[str] | None = None) -> int:
    reuse_freed_memory()  # as the primia command does
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="uploads per payload (default 3)")
    parser.add_argument(
        "--chunk-sizes",
        type=int,
        nargs="+",
        default=[1, 2, 4],
        metavar="MIB",
        help=f"chunk sizes to try for the 100 MB tensor, in MiB, at most "
        f"{MAX_CHUNK_SIZE // MIB} (default 1 2 4)",
    )
    parser.add_argument(
        "--openssl-seconds", type=int, default=2, help="seconds per openssl speed block size"
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as folder:
        pki = Path(folder) / "pki"
        init_ca(pki, "Benchmark")
        issue(pki, "coordinator", "coordinator")
        files = issue(pki, NODE, "node")
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        server = context.Process(target=_serve, args=(pki, Path(folder) / "run", child))
        server.start()
        try:
            address = f"127.0.0.1:{parent.recv()}"
            payloads = {
                "100 MB tensor": _tensor_100mb(),
                "ResNet-18 state dict": _resnet18(),
            }
            common = {"server_pid": server.pid or 0, "repeats": args.repeats}
            measurements = [
                measure(label, payload, address, files, **common)
                for label, payload in payloads.items()
            ]
            chunked = [
                measure(
                    f"100 MB tensor, {mib} MiB chunks",
                    payloads["100 MB tensor"],
                    address,
                    files,
                    chunk_size=mib * MIB,
                    **common,
                )
                for mib in args.chunk_sizes
            ]
        finally:
            parent.send("stop")
            server.join(timeout=30)
    started = time.perf_counter()
    ceiling = openssl_speed("aes-128-gcm", args.openssl_seconds)
    sha256 = openssl_speed("sha256", args.openssl_seconds)
    openssl_seconds = time.perf_counter() - started

    print(
        f"Transport throughput over loopback with mutual TLS, {os.cpu_count()} cores, load "
        f"average {load_average()}.\nMB = 10^6 bytes; best and median of {args.repeats} uploads; "
        f"chunks of {CHUNK_SIZE // MIB} MiB unless stated.\n'of AES': best / AES-128-GCM "
        "speed; 'coord CPU': the coordinator's CPU seconds per 100 MB received."
    )
    header = f"{'payload':<30} {'MB':>7} {'best':>7} {'median':>7} {'of AES':>7} {'coord CPU':>9}"
    print(header)
    print("-" * len(header))
    for measurement in [*measurements, *chunked]:
        print(_row(measurement, ceiling))
    if ceiling is None:
        print("openssl speed -evp aes-128-gcm: unavailable (no openssl?), so no ratio.")
        return 0
    print(
        f"AES-128-GCM, one core, {OPENSSL_BLOCK}-byte blocks (openssl speed, "
        f"{openssl_seconds:.0f} s): {ceiling:.0f} MB/s"
    )
    ratio = measurements[0].best / ceiling
    verdict = "met" if ratio >= GOAL else "NOT met"
    print(
        f"100 MB tensor: {measurements[0].best:.0f} MB/s = {ratio:.1%} of AES-128-GCM; "
        f"goal {GOAL:.0%}: {verdict}."
    )
    if sha256 is not None:
        cores = os.cpu_count() or 1
        bound = verified_stream_bound(ceiling, sha256, cores)
        print(
            f"SHA-256, one core, {OPENSSL_BLOCK}-byte blocks: {sha256:.0f} MB/s. Bound for any "
            f"transport on this machine that encrypts, decrypts and checks a SHA-256 of each "
            f"blob on {cores} cores: {bound:.0f} MB/s = {bound / ceiling:.1%} of AES-128-GCM; "
            f"measured / bound: {measurements[0].best / bound:.1%}."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
