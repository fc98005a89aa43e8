"""Secure aggregation's cost: node and coordinator compute, and bytes each node uploads.

For each node count n, vector length d and dropout rate, one round of the protocol of
:mod:`primia.crypto.secagg` runs in this process with
:func:`primia.crypto.secagg.simulation.simulate`: every node's ``AggregationClient`` and
the coordinator's ``AggregationServer``, real X25519 keys signed with real certificates
of a temporary CA, sealed Shamir shares and AES-CTR masks; only the network is left out.
Each node aggregates d + 1 values (its update and its FedAvg weight) in Z_2^32, clip 8,
threshold a majority of n. With dropout, round(rate × n) nodes drop after sharing their
secrets and before uploading (``Step.MASKED``), so the coordinator must rebuild their
mask keys from the survivors' shares and remove the masks they shared with every
survivor: the expensive case for the coordinator. Columns:

* ``plain ms``: the plaintext baseline, summing the survivors' float32 vectors of length
  d with ``np.add`` into a float64 accumulator (as primia's plaintext FedAvg does);
  median of 5, measured in the same run just before the protocol;
* ``client s``: a node's time in ``advertise``, ``share``, ``mask`` and ``unmask``, the
  mean over the nodes that took part to the end (max in brackets); ``× plain`` is it
  over ``plain ms``;
* ``server s``: the coordinator's time in every ``receive_*``, ``close_*`` and
  ``finish`` (checking signatures, routing shares, summing the masked inputs, removing
  the masks); ``× plain`` likewise;
* ``up/4d``: the bytes one surviving node uploads over the float32 size of its update
  (4·d bytes); goal ≤ 1.05. Bytes are the serialized sizes (``ByteSize()``) of the
  ``NodeMessage`` s the node sends: its key advertisement, its share bundle, the masked
  input as 1 MiB chunk messages (little-endian uint32) plus the ``MaskedInput`` message
  with its ``TrainResult``, and its unmask shares; gRPC and TLS framing are left out.
  ``plain/4d`` is the same for a plaintext round: the update as one float32 safetensors
  tensor of d values, in chunk messages, plus its ``TrainResult``.

Each round's decoded sum is checked against the plaintext sum of the survivors' inputs
(within n × the encoding's resolution); the script fails on a wrong answer. The nodes run
one after another in one process, so their times do not contend; generating and
encoding the inputs and counting bytes are outside every timed figure (so is a node's
fixed-point encoding of its update, ``FixedPoint.encode``: about 0.7 s at d = 11.2·10^6 on
the 2-core VM of docs/benchmarks.md). The 8 default configurations took 2 minutes there,
with 3 GB of memory at most (n = 50, d = 11.2·10^6).

    python benchmarks/bench_secure_aggregation.py
    python benchmarks/bench_secure_aggregation.py --quick
    python benchmarks/bench_secure_aggregation.py --nodes 50 --dims 1e6 --dropouts 0.1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from machine import CpuWatch, load_average

from primia import pki
from primia.blobs import Blob
from primia.crypto.prg import SEED_BYTES, MaskGenerator
from primia.crypto.ring import ring_bytes
from primia.crypto.secagg import KeyAdvertisement, MaskedInput, Setup, ShareBundle, UnmaskShares
from primia.crypto.secagg.messages import majority
from primia.crypto.secagg.simulation import Credentials, Step, simulate
from primia.federated.weights import encode
from primia.rpc import secure_codec
from primia.rpc.chunk_wire import messages_of
from primia.rpc.generated import federation_pb2 as pb

GOAL_UPLOAD = 1.05
"""Bytes a node uploads over the float32 size of its update."""
BITS = 32
CLIP = 8.0
PLAIN_REPEATS = 5
MASK_REPEATS = 3
RESNET18 = 11_200_000
FLOWER = (
    "Flower 1.27 SecAgg+ (quoted from the issue, not measured here): n = 10, d = 10^6: "
    "~0.15 s per client, 0.4-0.6 s server; n = 50: server 18-32 s."
)


@dataclass(frozen=True)
class Config:
    nodes: int
    dim: int
    dropout: float

    @property
    def dropped(self) -> int:
        return round(self.dropout * self.nodes)


@dataclass
class Result:
    config: Config
    survivors: int
    plain_s: float
    client_mean_s: float
    client_max_s: float
    server_s: float
    upload: dict[str, int]
    """Bytes one surviving node sends, by message kind (mean over the survivors)."""
    plain_upload: int
    max_error: float
    bound: float
    wall_s: float
    foreign_load: float | None
    dropped_client_s: float | None = None

    @property
    def upload_total(self) -> int:
        return sum(self.upload.values())

    def upload_ratio(self) -> float:
        return self.upload_total / (4 * self.config.dim)

    def plain_upload_ratio(self) -> float:
        return self.plain_upload / (4 * self.config.dim)


# ---- what a node sends, as protobuf -------------------------------------------------------


def _train_result(task_id: str, update_blob: str = "") -> pb.TrainResult:
    """A DP node's training report, as sent with its update (sizes only matter)."""
    return pb.TrainResult(
        task_id=task_id,
        update_blob=update_blob,
        num_examples=1200,
        train_loss=0.4123,
        steps=38,
        seconds=61.7,
        release=pb.PrivacyRelease(
            epsilon=0.81,
            delta=1e-5,
            noise_multiplier=1.1,
            sample_rate=0.0267,
            steps=38,
            max_grad_norm=1.0,
        ),
        privacy=pb.PrivacyState(
            epsilon_spent=2.43, epsilon_budget=10.0, delta=1e-5, accountant="prv"
        ),
    )


def _blob_bytes(blob: Blob) -> int:
    return sum(len(message) for message in messages_of(blob, envelope=True))


class ByteCounter:
    """``observe`` for :func:`simulate`: each node's bytes on the wire, by message kind."""

    def __init__(self, setup: Setup, run_id: str) -> None:
        self.setup = setup
        self.run_id = run_id
        self.sent: dict[str, dict[str, int]] = defaultdict(dict)

    def task_id(self, node: str) -> str:
        return f"{self.run_id}-r{self.setup.round}a1-{node}"

    def __call__(self, sender: str, message: object) -> None:
        task_id = self.task_id(sender)
        if isinstance(message, KeyAdvertisement):
            keys = secure_codec.keys_to_proto(task_id, message)
            self.sent[sender]["keys"] = pb.NodeMessage(keys=keys).ByteSize()
        elif isinstance(message, ShareBundle):
            bundle = secure_codec.bundle_to_proto(task_id, message)
            self.sent[sender]["shares"] = pb.NodeMessage(shares=bundle).ByteSize()
        elif isinstance(message, MaskedInput):
            blob = Blob.of(f"{task_id}-masked", ring_bytes(message.values))
            upload = pb.MaskedInput(
                task_id=task_id,
                session_id=self.setup.session,
                vector_blob=blob.blob_id,
                clipped=message.clipped,
                result=_train_result(task_id),
            )
            self.sent[sender]["chunks"] = _blob_bytes(blob)
            self.sent[sender]["masked"] = pb.NodeMessage(masked_input=upload).ByteSize()
        elif isinstance(message, UnmaskShares):
            revealed = secure_codec.unmask_to_proto(task_id, message)
            self.sent[sender]["unmask"] = pb.NodeMessage(unmask_shares=revealed).ByteSize()
        else:
            raise TypeError(f"{sender!r} sent an unexpected {type(message).__name__}")


def plaintext_upload_bytes(update: npt.NDArray[np.float32], task_id: str) -> int:
    """What a node sends in a plaintext round: the safetensors update, then its result."""
    blob = Blob.of(f"{task_id}-update", encode({"update": torch.from_numpy(update)}))
    result = _train_result(task_id, update_blob=blob.blob_id)
    return _blob_bytes(blob) + pb.NodeMessage(train_result=result).ByteSize()


# ---- one configuration --------------------------------------------------------------------


def _credentials(folder: Path, names: list[str]) -> tuple[bytes, dict[str, Credentials]]:
    pki.init_ca(folder, "bench")
    credentials = {}
    ca_pem = b""
    for name in names:
        ca_pem, cert_pem, key_pem = pki.issue(folder, name, "node").read()
        credentials[name] = Credentials(cert_pem, key_pem)
    return ca_pem, credentials


def plaintext_sum_seconds(vectors: list[npt.NDArray[np.float32]], dim: int) -> float:
    """Median time to sum float32 vectors of length ``dim`` into a float64 accumulator."""
    times = []
    for _ in range(PLAIN_REPEATS):
        started = time.perf_counter()
        total = np.zeros(dim, dtype=np.float64)
        for vector in vectors:
            np.add(total, vector[:dim], out=total)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def mask_seconds(length: int) -> float:
    """Median time of one mask: PRG(seed) of ``length`` uint32 values added into a vector."""
    masks = MaskGenerator(length, np.uint32)
    target = np.zeros(length, dtype=np.uint32)
    times = []
    for _ in range(MASK_REPEATS):
        seed = os.urandom(SEED_BYTES)
        started = time.perf_counter()
        masks.add(target, seed)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run(
    config: Config,
    base: npt.NDArray[np.float32],
    ca_pem: bytes,
    credentials: dict[str, Credentials],
    rng: np.random.Generator,
) -> Result:
    """One round of ``config``; ``base`` (d + 1 values) is the input the others derive from.

    Node i's input is ``roll(base, shift_i) + k_i / scale``: a fresh rotation and a distinct
    offset per node, so every node's vector differs, at the cost of one encoding per
    configuration (encode ``base`` once, then roll and add k_i in the ring).
    """
    started = time.perf_counter()
    watch = CpuWatch()
    n, d = config.nodes, config.dim
    names = sorted(credentials)[:n]
    setup = Setup(
        session=os.urandom(16),
        round=1,
        participants=tuple(names),
        threshold=majority(n),
        bits=BITS,
        clip=CLIP,
        vector_length=d + 1,
    )
    fixed_point = setup.fixed_point()
    dropped = sorted(str(x) for x in rng.choice(names, size=config.dropped, replace=False))
    survivors = [name for name in names if name not in dropped]

    shifts = {name: int(rng.integers(0, d + 1)) for name in names}
    offsets = {name: index + 1 for index, name in enumerate(names)}  # in units of 1/scale

    # The plaintext baseline on the survivors' own vectors, and the exact expected sum.
    vectors = [np.roll(base, shifts[name]) for name in survivors]
    plain_s = plaintext_sum_seconds(vectors, d)
    expected = np.zeros(d + 1, dtype=np.float64)
    for vector in vectors:
        np.add(expected, vector, out=expected)
    expected += sum(offsets[name] for name in survivors) / fixed_point.scale
    del vectors  # before the inputs exist: half the peak memory

    encoded = fixed_point.encode(base, rng).values
    inputs = {}
    for name in names:
        values = np.roll(encoded, shifts[name])
        values += values.dtype.type(offsets[name])
        inputs[name] = values
    del encoded

    counter = ByteCounter(setup, uuid.uuid4().hex[:12])
    aggregate, timings = simulate(
        setup,
        inputs,
        credentials,
        ca_pem,
        drop_before={name: Step.MASKED for name in dropped},
        observe=counter,
    )
    del inputs

    if list(aggregate.survivors) != survivors or list(aggregate.dropped) != dropped:
        raise SystemExit(
            f"{config}: the round's survivors {aggregate.survivors} and dropped "
            f"{aggregate.dropped} are not the expected {survivors} and {dropped}"
        )
    error = float(np.max(np.abs(fixed_point.decode(aggregate.total) - expected)))
    bound = len(survivors) * fixed_point.resolution
    if not error < bound:
        raise SystemExit(
            f"{config}: WRONG SUM: the decoded aggregate is off by up to {error:.3g}, more "
            f"than {len(survivors)} x resolution = {bound:.3g}"
        )

    upload: dict[str, int] = {}
    for kind in ("keys", "shares", "chunks", "masked", "unmask"):
        upload[kind] = round(statistics.mean(counter.sent[name][kind] for name in survivors))
    client = [timings.client_seconds[name] for name in survivors]
    dropped_client = [timings.client_seconds[name] for name in dropped]
    plain_upload = plaintext_upload_bytes(base[:d], counter.task_id(names[0]))

    wall = time.perf_counter() - started
    foreign = watch.foreign_share()
    return Result(
        config=config,
        survivors=len(survivors),
        plain_s=plain_s,
        client_mean_s=statistics.mean(client),
        client_max_s=max(client),
        server_s=timings.server_seconds,
        upload=upload,
        plain_upload=plain_upload,
        max_error=error,
        bound=bound,
        wall_s=wall,
        foreign_load=foreign,
        dropped_client_s=statistics.mean(dropped_client) if dropped_client else None,
    )


# ---- the table ----------------------------------------------------------------------------


def _dim_label(dim: int) -> str:
    return f"{dim / 1e6:g}M" if dim >= 100_000 else str(dim)


HEADER = (
    f"{'n':>3} {'d':>7} {'drop':>5} {'plain ms':>8} {'client s (max)':>15} {'x plain':>8} "
    f"{'server s':>9} {'x plain':>8} {'up/4d':>7} {'plain/4d':>8} {'error/bound':>11}"
)


def _row(result: Result) -> str:
    config = result.config
    client = f"{result.client_mean_s:.3f} ({result.client_max_s:.3f})"
    drop = f"{config.dropped}/{config.nodes}"
    return (
        f"{config.nodes:>3} {_dim_label(config.dim):>7} {drop:>5} {result.plain_s * 1e3:8.2f} "
        f"{client:>15} {result.client_mean_s / result.plain_s:8.1f} {result.server_s:9.3f} "
        f"{result.server_s / result.plain_s:8.1f} {result.upload_ratio():7.4f} "
        f"{result.plain_upload_ratio():8.4f} {result.max_error / result.bound:11.2f}"
    )


def _count(text: str) -> int:
    """A positive whole number, also written as 1e6 or 11.2e6."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(value)


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"a dropout rate lies in [0, 1), not {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--nodes", type=int, nargs="+", default=[10, 50], help="node counts n (default 10 50)"
    )
    parser.add_argument(
        "--dims",
        type=_count,
        nargs="+",
        default=[1_000_000, RESNET18],
        metavar="D",
        help="update sizes d in parameters, e.g. 1e6 (default 1e6 11.2e6, a ResNet-18)",
    )
    parser.add_argument(
        "--dropouts",
        type=_rate,
        nargs="+",
        default=[0.0, 0.1],
        metavar="RATE",
        help="share of the nodes that drop before uploading their masked input (default 0 0.1)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="n = 10 and d = 10^6 only (both dropout rates)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the inputs and dropouts")
    args = parser.parse_args(argv)
    if args.quick:
        args.nodes, args.dims = [10], [1_000_000]
    configs = [
        Config(nodes, dim, dropout)
        for dim in args.dims
        for nodes in args.nodes
        for dropout in args.dropouts
    ]
    for config in configs:
        if config.nodes < 2:
            parser.error("secure aggregation needs at least 2 nodes")
        if config.nodes - config.dropped < majority(config.nodes):
            parser.error(
                f"{config.dropped} of {config.nodes} nodes dropping leaves fewer than the "
                f"threshold ({majority(config.nodes)})"
            )

    cpus = os.cpu_count() or 1
    print(
        f"Secure aggregation, one round in one process, Z_2^{BITS}, clip {CLIP:g}, threshold "
        f"a majority; {cpus} CPU cores, load average {load_average()}.\n"
        "plain ms: summing the survivors' float32 vectors into float64 (median of "
        f"{PLAIN_REPEATS}); client s: a surviving node's\nadvertise+share+mask+unmask, mean "
        "(max); server s: the coordinator's whole protocol; x plain: over plain ms.\n"
        "up/4d: bytes a surviving node uploads (serialized NodeMessages) / 4d; plain/4d: the "
        f"same for a plaintext\nfloat32 safetensors update (goal up/4d <= {GOAL_UPLOAD}). "
        "error/bound: max |decoded - exact| / (n x resolution), must be < 1."
    )
    print(HEADER)
    print("-" * len(HEADER), flush=True)
    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    results: list[Result] = []
    masks: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="primia-secagg-") as folder:
        names = [f"site{k:02d}" for k in range(max(args.nodes))]
        ca_pem, credentials = _credentials(Path(folder), names)
        for dim in args.dims:
            # A stand-in update: small values, and the FedAvg weight last.
            base = rng.standard_normal(dim + 1, dtype=np.float32)
            base *= np.float32(0.01)
            base[-1] = 1.0
            masks[dim] = mask_seconds(dim + 1)
            for config in (c for c in configs if c.dim == dim):
                subset = {name: credentials[name] for name in names[: config.nodes]}
                result = run(config, base, ca_pem, subset, rng)
                results.append(result)
                print(_row(result), flush=True)
            del base
    total = time.perf_counter() - started

    print()
    for result in results:
        config, upload = result.config, result.upload
        foreign = "n/a" if result.foreign_load is None else f"{result.foreign_load:.0%}"
        dropped = (
            ""
            if result.dropped_client_s is None
            else f"; dropped nodes' client s {result.dropped_client_s:.3f}"
        )
        print(
            f"n={config.nodes} d={_dim_label(config.dim)} drop={config.dropped}: bytes per "
            f"node keys {upload['keys']:,}, shares {upload['shares']:,}, masked chunks "
            f"{upload['chunks']:,} + MaskedInput {upload['masked']:,}, unmask "
            f"{upload['unmask']:,} = {result.upload_total:,} (4d = {4 * config.dim:,}; "
            f"plaintext {result.plain_upload:,}){dropped}; run {result.wall_s:.0f} s, other "
            f"programs used {foreign} of the CPUs"
        )
    for dim, seconds in masks.items():
        print(
            f"One mask at d={_dim_label(dim)} (AES-256-CTR keystream of {dim + 1:,} uint32 "
            f"added into a vector): {seconds * 1e3:.3g} ms; a node applies n of them, the "
            "coordinator one per survivor plus (dropped x survivors)."
        )
    worst = max(results, key=lambda r: r.upload_ratio())
    verdict = "met" if worst.upload_ratio() <= GOAL_UPLOAD else "NOT met"
    print(
        f"Upload goal <= {GOAL_UPLOAD}: {verdict} (worst up/4d {worst.upload_ratio():.4f} at "
        f"n={worst.config.nodes}, d={_dim_label(worst.config.dim)}). Every decoded sum "
        "matched the plaintext sum."
    )
    print(FLOWER)
    print(f"Total {total:.0f} s; load average at end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
