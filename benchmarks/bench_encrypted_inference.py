"""Encrypted inference's cost: latency per image, communication and peak memory per party.

For each model and image size (ResNet-18 at 224 and 128 px, ResNet-9 at 128 px by
default; one input channel, width 64, 4 outputs, seeded random weights) and each batch
size (1 and 8), the script runs one encrypted inference with
:func:`primia.inference.local.run_local`: the model owner (rank 0), the data owner
(rank 1) and CrypTen's TTP crypto provider (rank 2), each a spawned process with
``--threads`` torch threads (1 by default: three processes share this machine's cores), on
a batch of synthetic radiographs scaled to [0, 1]. Columns of the first table:

* ``wall s``: run_local's wall time, from starting the three processes to the data
  owner's logits. It includes spawning the processes, importing torch and CrypTen in each
  (several seconds on 2 cores, more on a busy machine) and sharing the weights, since
  primia runs every session in fresh processes (see :mod:`primia.inference.processes`):
  it is what a request costs.
  ``wall s/img`` is it over the batch size: the figure the goal and the ratios use;
* ``sess s/img``: the data owner's own time in the session (its ``PartyStats.seconds``,
  from joining CrypTen to leaving it: waiting at the rendezvous for the other parties,
  the weights' and the images' sharing and the forward pass, without its own process
  start and imports), over the batch size;
* ``plain ms/img``: the same model on the same images in plaintext in this process
  (torch, eval, no_grad, ``--threads`` threads like one party), median of 5 batches after
  a warm-up, over the batch size; ``x plain`` is ``wall s/img`` over it;
* ``ref s/img`` and ``x ref``: plain CrypTen's per-image latency as quoted in the issue
  (its ONNX path, a BatchNorm ResNet-18 with one input channel, two parties and the TTP
  dealer, one thread each, on a 2-core machine like this one: 10.7 s at 64 px, 20.8 s at
  128 px, 55 s at 224 px). These figures are NOT re-measured here (see ``--plain-crypten``);
  they exist only for ResNet-18 at width 64, so other rows show no ratio;
* ``max err``: max |encrypted − plaintext| over the logits (fixed point, 16 fractional
  bits; rows above 0.05, the integration tests' tolerance, are marked ``!``);
* ``others``: the share of the CPUs other programs used meanwhile (``machine.CpuWatch``):
  figures taken while it is high are not this code's.

The second table has one row per party: ``rounds`` and ``GB comm`` are CrypTen's own
communication statistics (``get_communication_stats``: messages, and bytes of the tensors
the party sent and received as CrypTen counts them, 8 bytes an element; GB = 10^9 bytes),
``peak GB`` the process's peak resident memory (``ru_maxrss``: torch, CrypTen and
everything else the process ever held), ``s`` its time in the session. The goal, checked
at 224 px for ResNet-18: under 20 s per image (wall) and under 4 GB peak per party.
Plain CrypTen at 224 px, quoted in the issue: 1.34 GB peak per party, 5.1 GB sent by
party 0.

``--plain-crypten`` also measures plain CrypTen in the same run, in the same three-process
TTP setting: a BatchNorm copy of the model (every GroupNorm swapped for BatchNorm2d in
eval mode, with seeded random statistics; CrypTen's ONNX exporter turns equal
initializers into Identity ops it refuses, so the fresh 1s and 0s of an untrained
BatchNorm cannot be used), converted with ``crypten.nn.from_pytorch`` (the TorchScript
ONNX exporter: ``dynamo=False``, as CrypTen 0.4.1 needs) and shared with
``.encrypt(src=0)``; its rows read ``crypten`` and its error is against the BatchNorm
copy's own plaintext logits. A model its converter cannot take is skipped, with the
reason. Plain CrypTen's parties convert the model before joining the session, so the
conversion counts in ``wall`` (and in the peak memory), not in ``sess``.

All three parties share this machine's cores, so their computations compete (on a real
deployment each party runs on its own machine, with a real network in between).

    python benchmarks/bench_encrypted_inference.py
    python benchmarks/bench_encrypted_inference.py --quick
    python benchmarks/bench_encrypted_inference.py --models resnet18:224 --batches 1 \\
        --plain-crypten --json encrypted.json
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from machine import CpuWatch, load_average
from safetensors.torch import load as load_safetensors
from torch import nn

from primia.data.synth import SynthConfig, generate
from primia.inference import parties
from primia.inference.compat import import_crypten
from primia.inference.local import EncryptedRun, InferenceFailed, run_local
from primia.models import model_names
from primia.models.checkpoint import ModelSpec

NUM_OUTPUTS = 4
PLAIN_REPEATS = 5
TOLERANCE = 0.05
"""Max |encrypted − plaintext| logit error of tests/integration/test_encrypted_inference.py."""
GB = 1e9

REFERENCE_SECONDS = {64: 10.7, 128: 20.8, 224: 55.0}
"""Plain CrypTen, ResNet-18 (BatchNorm, 1 channel, width 64), seconds per image by image
size, on a 2-core machine like this one: quoted from the issue, not measured here."""
REFERENCE_PEAK_224 = 1.34e9
REFERENCE_SENT_224 = 5.1e9
GOAL_SIZE = 224
GOAL_SECONDS = 20.0
GOAL_PEAK = 4e9
REFERENCE = (
    "Plain CrypTen reference (quoted from the issue, measured on a 2-core machine like "
    "this one, NOT re-measured in this run): ONNX path, BatchNorm ResNet-18, 1 channel, two "
    "parties + TTP dealer, one thread each: 10.7 s/img at 64 px, 20.8 s/img at 128 px, "
    "55 s/img at 224 px; at 224 px 1.34 GB peak per party, 5.1 GB sent by party 0."
)
DEFAULT_MODELS = ("resnet18:224", "resnet18:128", "resnet9:128")
DEFAULT_BATCHES = (1, 8)
QUICK_MODELS = ("cnn:32",)
QUICK_BATCHES = (1, 2)
PATHS = ("primia", "crypten")
"""Our encrypted inference, and plain CrypTen (``--plain-crypten``)."""


@dataclass(frozen=True)
class Config:
    architecture: str
    size: int
    batch: int
    width: int | None

    def spec(self) -> ModelSpec:
        return ModelSpec(self.architecture, NUM_OUTPUTS, width=self.width, image_size=self.size)

    @property
    def label(self) -> str:
        return f"{self.architecture} {self.size}px b{self.batch}"

    def reference_seconds(self) -> float | None:
        """Plain CrypTen's quoted seconds per image, where the issue gives them."""
        if self.architecture != "resnet18" or self.width not in (None, 64):
            return None
        return REFERENCE_SECONDS.get(self.size)

    @property
    def has_goal(self) -> bool:
        return self.size == GOAL_SIZE and self.reference_seconds() is not None


@dataclass(frozen=True)
class PartyFigures:
    role: str
    rounds: int
    bytes_communicated: int
    peak_memory_bytes: int
    seconds: float


@dataclass
class Measured:
    """One encrypted path on one configuration, over ``--repeats`` runs."""

    wall_s: float
    """Median of run_local's wall time."""
    session_s: float
    """Median of the data owner's time in the session."""
    max_error: float
    """Max |encrypted − plaintext| logit over every run."""
    parties: list[PartyFigures]
    """Rounds and bytes of the first run (they depend only on the shapes), the largest peak
    memory and the median seconds over the runs."""
    walls: list[float] = field(default_factory=list)


@dataclass
class Result:
    config: Config
    plain_s: float
    """Median plaintext seconds for the whole batch."""
    measured: dict[str, Measured]
    """By path: "primia", and "crypten" with --plain-crypten."""
    skipped: dict[str, str]
    """Paths not measured, with the reason."""
    foreign_load: float | None

    def per_image(self, seconds: float) -> float:
        return seconds / self.config.batch

    def goal(self) -> tuple[bool, bool] | None:
        """(latency met, memory met) for primia's path, at the goal's configuration."""
        if not self.config.has_goal:
            return None
        ours = self.measured["primia"]
        peak = max(party.peak_memory_bytes for party in ours.parties)
        return self.per_image(ours.wall_s) < GOAL_SECONDS, peak < GOAL_PEAK


# ---- inputs and the plaintext baseline ----------------------------------------------------


def radiographs(count: int, size: int, seed: int) -> torch.Tensor:
    """``count`` synthetic radiographs scaled to [0, 1], shape (count, 1, size, size)."""
    batch = generate(
        SynthConfig(sites=1, patients_per_site=count, images_per_patient=1, size=size, seed=seed)
    )
    return torch.from_numpy(batch.images).float().div(255).unsqueeze(1)


def plaintext(model: nn.Module, images: torch.Tensor, threads: int) -> tuple[torch.Tensor, float]:
    """The logits of ``images`` and the median seconds of a forward pass over the batch, in
    this process with ``threads`` threads (as one party has), after one warm-up pass."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model.eval()
        times = []
        with torch.no_grad():
            logits = model(images)
            for _ in range(PLAIN_REPEATS):
                started = time.perf_counter()
                model(images)
                times.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous)
    return logits, statistics.median(times)


# ---- plain CrypTen: a BatchNorm copy through crypten.nn.from_pytorch ----------------------


def batchnorm_copy(model: nn.Module, seed: int) -> nn.Module:
    """``model`` with every GroupNorm replaced by a BatchNorm2d in eval mode, in place.

    The BatchNorm's affine parameters and running statistics are seeded random values near
    1 and 0: all-equal ones would become Identity ops in the ONNX export, which CrypTen's
    converter refuses. The other layers keep their weights.
    """
    generator = torch.Generator().manual_seed(seed)

    def noise(n: int) -> torch.Tensor:
        return 0.1 * torch.randn(n, generator=generator)

    def swap(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, nn.GroupNorm):
                n = child.num_channels
                norm = nn.BatchNorm2d(n, eps=child.eps)
                with torch.no_grad():
                    norm.weight.copy_(1 + noise(n))
                    norm.bias.copy_(noise(n))
                # assigning a registered buffer replaces its value
                norm.running_mean = noise(n)
                norm.running_var = 1 + noise(n).abs()
                setattr(module, name, norm)
            else:
                swap(child)

    swap(model)
    return model.eval()


def from_pytorch(crypten: Any, model: nn.Module, shape: tuple[int, ...]) -> Any:
    """``crypten.nn.from_pytorch(model, zeros(shape))`` with the TorchScript ONNX exporter.

    CrypTen 0.4.1 relies on the TorchScript exporter, which PyTorch no longer uses by
    default (``dynamo=True`` needs onnxscript, and emits a graph CrypTen cannot read).
    """
    export = functools.partial(torch.onnx.export, dynamo=False)
    with warnings.catch_warnings(), mock.patch.object(torch.onnx, "export", export):
        warnings.simplefilter("ignore")
        return crypten.nn.from_pytorch(model, torch.zeros(shape))


def unconvertible(model: nn.Module, shape: tuple[int, ...]) -> str | None:
    """Why CrypTen's ONNX path cannot take ``model``, or None if it can."""
    try:
        from_pytorch(import_crypten(), model, (1, *shape[1:]))
    except Exception as error:  # whatever the converter raises is the reason
        return f"{type(error).__name__}: {error}"
    return None


def crypten_model_owner(
    rendezvous: parties.Meeting,
    spec: ModelSpec,
    weights: bytes,
    shape: tuple[int, ...],
    progress: parties.Progress = parties.no_progress,
    *,
    plain: bool = True,
) -> parties.PartyStats:
    """Plain CrypTen's model owner: convert the BatchNorm copy, share it, run it (run_local
    passes ``plain=True`` to all three parties: CrypTen's own dealing too)."""
    model = batchnorm_copy(spec.build(), seed=0)
    model.load_state_dict(load_safetensors(weights))
    converted = from_pytorch(import_crypten(), model, shape)
    with parties.join(rendezvous, parties.MODEL_OWNER, progress, plain=plain) as session:
        crypten = session.crypten
        private = converted.encrypt(src=parties.MODEL_OWNER).eval()
        images = crypten.cryptensor(torch.zeros(shape), src=parties.DATA_OWNER)
        private(images).get_plain_text(dst=parties.DATA_OWNER)
        return session.stats()


def crypten_data_owner(
    rendezvous: parties.Meeting,
    spec: ModelSpec,
    images: np.ndarray,
    progress: parties.Progress = parties.no_progress,
    *,
    plain: bool = True,
) -> tuple[np.ndarray, parties.PartyStats]:
    """Plain CrypTen's data owner: the same graph (other values), the owner's weights."""
    shape = tuple(images.shape)
    model = batchnorm_copy(spec.build(), seed=1)  # the architecture only
    converted = from_pytorch(import_crypten(), model, shape)
    with parties.join(rendezvous, parties.DATA_OWNER, progress, plain=plain) as session:
        crypten = session.crypten
        private = converted.encrypt(src=parties.MODEL_OWNER).eval()
        shared = crypten.cryptensor(torch.from_numpy(images), src=parties.DATA_OWNER)
        logits: torch.Tensor = private(shared).get_plain_text(dst=parties.DATA_OWNER)
        return logits.numpy(), session.stats()


# ---- one configuration --------------------------------------------------------------------


def measure(runs: list[EncryptedRun], expected: torch.Tensor) -> Measured:
    first = runs[0].parties
    figures = [
        PartyFigures(
            role=party.role,
            rounds=party.rounds,
            bytes_communicated=party.bytes_communicated,
            peak_memory_bytes=max(run.parties[i].peak_memory_bytes for run in runs),
            seconds=statistics.median(run.parties[i].seconds for run in runs),
        )
        for i, party in enumerate(first)
    ]
    return Measured(
        wall_s=statistics.median(run.seconds for run in runs),
        session_s=statistics.median(run.parties[1].seconds for run in runs),
        max_error=max((run.logits - expected).abs().max().item() for run in runs),
        parties=figures,
        walls=[run.seconds for run in runs],
    )


def run(config: Config, args: argparse.Namespace) -> Result:
    watch = CpuWatch()
    spec = config.spec()
    torch.manual_seed(args.seed)
    model = spec.build().eval()
    images = radiographs(config.batch, config.size, seed=args.seed + 1)
    expected, plain_s = plaintext(model, images, args.threads)
    state = model.state_dict()

    measured: dict[str, Measured] = {}
    skipped: dict[str, str] = {}
    runs = [
        run_local(spec, state, images, timeout_s=args.timeout, threads=args.threads)
        for _ in range(args.repeats)
    ]
    measured["primia"] = measure(runs, expected)

    if args.plain_crypten:
        # the same convolution and linear weights; the norms' values are the copy's own
        bn_model = batchnorm_copy(copy.deepcopy(model), seed=0)
        reason = unconvertible(bn_model, tuple(images.shape))
        if reason is not None:
            skipped["crypten"] = reason
        else:
            with torch.no_grad():
                bn_expected = bn_model(images)
            bn_state = bn_model.state_dict()
            try:
                crypten_runs = [
                    run_local(
                        spec,
                        bn_state,
                        images,
                        timeout_s=args.timeout,
                        threads=args.threads,
                        model_owner=crypten_model_owner,
                        data_owner=crypten_data_owner,
                        plain=True,
                    )
                    for _ in range(args.repeats)
                ]
            except InferenceFailed as error:
                skipped["crypten"] = str(error)
            else:
                measured["crypten"] = measure(crypten_runs, bn_expected)
    return Result(config, plain_s, measured, skipped, watch.foreign_share())


# ---- the tables ---------------------------------------------------------------------------

LATENCY = (
    f"{'model':<9} {'px':>4} {'batch':>5} {'path':<8} {'wall s':>8} {'wall s/img':>10} "
    f"{'sess s/img':>10} {'plain ms/img':>12} {'x plain':>8} {'ref s/img':>9} {'x ref':>6} "
    f"{'max err':>9} {'others':>6}"
)
PARTIES = (
    f"{'model':<9} {'px':>4} {'batch':>5} {'path':<8} {'party':<16} {'rounds':>8} "
    f"{'GB comm':>8} {'peak GB':>8} {'s':>8}"
)


def _load(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.0%}"


def latency_rows(result: Result) -> list[str]:
    config = result.config
    plain = result.per_image(result.plain_s)
    reference = config.reference_seconds()
    rows = []
    for path, measured in result.measured.items():
        wall = result.per_image(measured.wall_s)
        ref = f"{reference:9.1f}" if reference is not None else f"{'-':>9}"
        ratio = f"{wall / reference:6.2f}" if reference is not None else f"{'-':>6}"
        mark = "!" if measured.max_error > TOLERANCE else " "
        rows.append(
            f"{config.architecture:<9} {config.size:>4} {config.batch:>5} {path:<8} "
            f"{measured.wall_s:8.1f} {wall:10.2f} {result.per_image(measured.session_s):10.2f} "
            f"{plain * 1e3:12.1f} {wall / plain:8.0f} {ref} {ratio} "
            f"{measured.max_error:8.1e}{mark} {_load(result.foreign_load):>6}"
        )
    return rows


def party_rows(result: Result) -> list[str]:
    config = result.config
    rows = []
    for path, measured in result.measured.items():
        for party in measured.parties:
            rows.append(
                f"{config.architecture:<9} {config.size:>4} {config.batch:>5} {path:<8} "
                f"{party.role:<16} {party.rounds:>8,} {party.bytes_communicated / GB:8.2f} "
                f"{party.peak_memory_bytes / GB:8.2f} {party.seconds:8.1f}"
            )
    return rows


def summary(results: list[Result]) -> list[str]:
    lines = []
    for result in results:
        config = result.config
        for path, reason in result.skipped.items():
            lines.append(f"{config.label}: {path} not measured: {reason}")
        goal, reference = result.goal(), config.reference_seconds()
        if goal is not None and reference is not None:
            ours = result.measured["primia"]
            wall = result.per_image(ours.wall_s)
            peak = max(party.peak_memory_bytes for party in ours.parties)
            latency_met, memory_met = goal
            verdict = "MET" if latency_met and memory_met else "NOT met"
            lines.append(
                f"Goal at {config.label} (< {GOAL_SECONDS:g} s/img wall and < "
                f"{GOAL_PEAK / GB:g} GB peak per party): {verdict}: {wall:.1f} s/img "
                f"({'met' if latency_met else 'not met'}), largest peak {peak / GB:.2f} GB "
                f"({'met' if memory_met else 'not met'}); vs plain CrypTen's quoted "
                f"{reference:g} s/img: {wall / reference:.2f}x "
                f"latency, peak {peak / REFERENCE_PEAK_224:.2f}x of 1.34 GB, party 0 "
                f"{ours.parties[0].bytes_communicated / REFERENCE_SENT_224:.2f}x of 5.1 GB"
            )
        if "crypten" in result.measured:
            ours, theirs = result.measured["primia"], result.measured["crypten"]
            peak_ours = max(p.peak_memory_bytes for p in ours.parties)
            peak_theirs = max(p.peak_memory_bytes for p in theirs.parties)
            sent_ours = ours.parties[0].bytes_communicated
            sent_theirs = theirs.parties[0].bytes_communicated
            lines.append(
                f"{config.label}: primia / plain CrypTen measured in this run: wall "
                f"{ours.wall_s / theirs.wall_s:.2f}x, session "
                f"{ours.session_s / theirs.session_s:.2f}x, largest peak "
                f"{peak_ours / peak_theirs:.2f}x, party 0 bytes {sent_ours / sent_theirs:.2f}x"
            )
    return lines


# ---- the command line ---------------------------------------------------------------------


def _model_size(text: str) -> tuple[str, int]:
    """MODEL:SIZE, e.g. resnet18:224."""
    name, _, size = text.partition(":")
    if name not in model_names():
        raise argparse.ArgumentTypeError(
            f"unknown model {name!r} in {text!r}; choose one of {', '.join(model_names())}"
        )
    if not size.isdigit() or not 32 <= int(size) <= 1024:
        raise argparse.ArgumentTypeError(
            f"{text!r}: write MODEL:SIZE with SIZE in pixels, 32 to 1024 (e.g. resnet18:224)"
        )
    return name, int(size)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models",
        type=_model_size,
        nargs="+",
        default=[_model_size(text) for text in DEFAULT_MODELS],
        metavar="MODEL:SIZE",
        help=f"models and image sizes in pixels (default {' '.join(DEFAULT_MODELS)}); "
        f"models: {', '.join(model_names())}",
    )
    parser.add_argument(
        "--batches",
        type=_positive,
        nargs="+",
        default=list(DEFAULT_BATCHES),
        metavar="N",
        help="images per inference; every model runs with each (default 1 8)",
    )
    parser.add_argument(
        "--width",
        type=_positive,
        default=None,
        help="channel width (default: the architecture's own, 64 for the ResNets, 16 for "
        "cnn); plain CrypTen's reference holds for ResNet-18 at width 64 only",
    )
    parser.add_argument(
        "--threads", type=_positive, default=1, help="torch threads per party (default 1)"
    )
    parser.add_argument(
        "--repeats",
        type=_positive,
        default=1,
        help="encrypted runs per configuration; times are their median (default 1)",
    )
    parser.add_argument(
        "--plain-crypten",
        action="store_true",
        help="also measure plain CrypTen (ONNX path, a BatchNorm copy of the model) in "
        "this run, in the same three-process TTP setting",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke test: {' '.join(QUICK_MODELS)} with batches "
        f"{' '.join(map(str, QUICK_BATCHES))} (seconds, not the issue's figures)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="seconds one encrypted run may take before its parties are killed (default 3600)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and images")
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.models = [_model_size(text) for text in QUICK_MODELS]
        args.batches = list(QUICK_BATCHES)
    configs = [
        Config(name, size, batch, args.width)
        for name, size in args.models
        for batch in args.batches
    ]

    cpus = os.cpu_count() or 1
    print(
        f"Encrypted inference, three processes on loopback (model owner, data owner, TTP "
        f"dealer), {args.threads} thread(s) each;\n{cpus} CPU cores, torch "
        f"{torch.__version__}, load average {load_average()}. {NUM_OUTPUTS} outputs, 1 "
        f"channel, seeded random weights, synthetic radiographs.\n"
        "wall: from spawning the 3 processes (imports of torch and CrypTen included) to the "
        "data owner's logits; sess: the data owner's time in the CrypTen session;\n"
        f"plain: plaintext torch, same model and images, {args.threads} thread(s), median of "
        f"{PLAIN_REPEATS}; x plain = wall s/img / plain; x ref = wall s/img / plain "
        f"CrypTen's quoted s/img.\n{REFERENCE}"
    )
    print(LATENCY)
    print("-" * len(LATENCY), flush=True)
    started = time.perf_counter()
    results: list[Result] = []
    for config in configs:
        result = run(config, args)
        results.append(result)
        for row in latency_rows(result):
            print(row, flush=True)
    total = time.perf_counter() - started

    print(f"\nPer party (CrypTen's communication statistics; GB = 10^9 bytes)\n{PARTIES}")
    print("-" * len(PARTIES))
    for result in results:
        for row in party_rows(result):
            print(row)
    print()
    for line in summary(results):
        print(line)
    if not any(result.config.has_goal for result in results):
        print(
            f"Goal (ResNet-18 at {GOAL_SIZE} px, width 64: < {GOAL_SECONDS:g} s/img and "
            f"< {GOAL_PEAK / GB:g} GB per party): not checked, no such configuration ran."
        )
    if any(r.measured[p].max_error > TOLERANCE for r in results for p in r.measured):
        print(f"! max |encrypted - plaintext| above {TOLERANCE}: check the accuracy.")
    print(f"Total {total:.0f} s; load average at end: {load_average()}")

    if args.json is not None:
        document = {
            "machine": {
                "cpus": cpus,
                "torch": torch.__version__,
                "threads_per_party": args.threads,
                "repeats": args.repeats,
                "load_average_end": load_average(),
            },
            "reference": {
                "note": REFERENCE,
                "resnet18_seconds_per_image": REFERENCE_SECONDS,
                "peak_bytes_224": REFERENCE_PEAK_224,
                "party0_bytes_224": REFERENCE_SENT_224,
            },
            "goal": {"size": GOAL_SIZE, "seconds_per_image": GOAL_SECONDS, "peak_bytes": GOAL_PEAK},
            "results": [_json(result) for result in results],
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"Results written to {args.json}")
    return 0


def _json(result: Result) -> dict[str, Any]:
    record = asdict(result)
    reference = result.config.reference_seconds()
    plain = result.per_image(result.plain_s)
    for path, measured in result.measured.items():
        wall = result.per_image(measured.wall_s)
        record["measured"][path].update(
            wall_s_per_image=wall,
            session_s_per_image=result.per_image(measured.session_s),
            ratio_to_plaintext=wall / plain,
            ratio_to_reference=None if reference is None else wall / reference,
        )
    goal = result.goal()
    record.update(
        plain_s_per_image=plain,
        reference_s_per_image=reference,
        goal_met=None if goal is None else all(goal),
    )
    return record


if __name__ == "__main__":
    sys.exit(main())
