"""DP-SGD throughput against non-private training of the same model and data, in images/s.

For each model (ResNet-9 at 64 px and ResNet-18 at 128 px by default) and each way of
computing the clipped, noised gradient, the script times steady-state training steps on
one fixed random batch (same data and same initial weights for every mode) and prints
images/s and the ratio to non-private training. The loss is multi-label BCE over 4
findings averaged per sample (``PerSampleBCEWithLogits``: shape [B] with reduction "none",
as ghost clipping needs). Modes:

* ``nonprivate``: ``loss.backward()`` and ``optimizer.step()``, the reference;
* ``hooks``, ``functorch``, ``ew``: Opacus ``PrivacyEngine.make_private`` with that
  ``grad_sample_mode`` (per-sample gradients by module hooks, by ``torch.func`` per layer,
  by PyTorch's expanded weights), then Opacus' ``DPOptimizer``;
* ``ghost``: Opacus' fast gradient / ghost clipping (per-sample norms, second backward);
* ``vmap``: our whole-model ``torch.func`` path, ``vmap(grad(loss))`` over the batch, then
  clipping, sum, Gaussian noise and a plain optimizer step
  (:func:`primia.train.fast_dp.vmap_clipped_grad_sum`, chunks of 8 samples);
* ``fast``: :class:`primia.train.fast_dp.FastDPSGD` (ghost norms where the spatial map is
  small, per-sample weight gradients from one grouped weight-gradient call where it is
  large, no second backward);
* ``patient``: ``fast`` clipping per patient (groups of 4 consecutive images), the
  federation's default unit (ghost norms over each patient's images side by side, or each
  patient's summed weight gradient from the same grouped call);
* ``k2``: ``fast`` with augmentation multiplicity K = 2 (each image and its mirror image,
  losses averaged, clipped per image): a step runs 2B samples, images/s counts the B
  images once.

Every DP mode clips at C = 1 and adds noise with σ = 1. A step's time is wall-clock from
zero_grad to the end of the optimizer step; images/s is the batch size over the *median*
step time after warm-up. Each mode runs alone in a fresh process (on the 2-core VM this
was measured on, a step that allocates gigabytes is up to 2x slower when another process
merely holds a few GB, so modes sharing a process or running side by side skew each
other). Every timed step counts, whatever the load; the share of the CPUs other programs
used during a mode's steps is printed beside it.

Nodes share machines, so each model is measured in two conditions (``--conditions``):
``quiet`` (nothing added) and ``contended``, with ``--burners`` processes (default: one per
core) spinning on the CPU for the whole measurement. Within a condition the modes run in
turn, non-private first, and the round repeats ``--repeats`` times (A, B, A, B, …); a
mode's figure is the median over all its steps, its ratio the one to the non-private
median in the same condition.

    python benchmarks/bench_dp_throughput.py
    python benchmarks/bench_dp_throughput.py --models resnet9:64 --modes nonprivate hooks fast
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import torch
from machine import CpuWatch, load_average
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from primia.memory import reuse_freed_memory
from primia.models import build_model
from primia.train.fast_dp import FastDPSGD, vmap_clipped_grad_sum
from primia.train.losses import PerSampleBCEWithLogits as PerSampleBCE

MODES = ("nonprivate", "hooks", "functorch", "ew", "ghost", "vmap", "fast", "patient", "k2")
OPACUS_MODES = ("hooks", "functorch", "ew", "ghost")
DEFAULT_MODELS = ("resnet9:64", "resnet18:128")
DEFAULT_STEPS = {"resnet9": 4, "resnet18": 6}  # ≤ ~20 s per mode for the slowest DP modes
IMAGES_PER_PATIENT = 4  # the synthetic sites' patients, in mode "patient"
AUGMENTATIONS = 2  # K in mode "k2"
NUM_LABELS = 4
NOISE_MULTIPLIER = 1.0
MAX_GRAD_NORM = 1.0
VMAP_CHUNK = 8

# Workers fork from a server that has imported torch once (fast, and single-threaded so
# safe to fork); "spawn" where there is no fork.
_FORKSERVER = "forkserver" in multiprocessing.get_all_start_methods()
_CONTEXT: Any = multiprocessing.get_context("forkserver" if _FORKSERVER else "spawn")
if _FORKSERVER:
    multiprocessing.set_forkserver_preload(["torch", "opacus", "primia.train.fast_dp"])

Step = Callable[[], None]


@dataclass
class Result:
    mode: str
    times: list[float] = field(default_factory=list)  # seconds per timed step
    foreign: list[float] = field(default_factory=list)  # other programs' CPU share, per run
    error: str = ""

    def add(self, other: Result) -> None:
        self.times += other.times
        self.foreign += other.foreign
        self.error = self.error or other.error

    def images_per_s(self, batch: int) -> float | None:
        return batch / statistics.median(self.times) if self.times and not self.error else None


def _fresh_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, num_classes=NUM_LABELS)


def _sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def make_step(mode: str, name: str, images: torch.Tensor, targets: torch.Tensor) -> Step:
    """One training step of ``mode`` on the fixed batch, as a closure."""
    model = _fresh_model(name)
    optimizer = _sgd(model)
    batch = images.shape[0]

    if mode == "nonprivate":
        criterion = PerSampleBCE()

        def nonprivate() -> None:
            optimizer.zero_grad(set_to_none=True)
            criterion(model(images), targets).backward()
            optimizer.step()

        return nonprivate

    if mode in OPACUS_MODES:
        from opacus import PrivacyEngine

        loader = DataLoader(TensorDataset(images, targets), batch_size=batch)
        private = PrivacyEngine().make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=NOISE_MULTIPLIER,
            max_grad_norm=MAX_GRAD_NORM,
            poisson_sampling=False,  # a fixed batch, to time exactly `batch` images a step
            grad_sample_mode=mode,
            criterion=PerSampleBCE(),
        )
        if mode == "ghost":
            dp_model, dp_optimizer, dp_criterion, _ = private
        else:
            dp_model, dp_optimizer, _ = private
            dp_criterion = PerSampleBCE()

        def opacus() -> None:
            dp_optimizer.zero_grad(set_to_none=True)
            dp_criterion(dp_model(images), targets).backward()
            dp_optimizer.step()

        return opacus

    if mode == "vmap":
        per_sample = PerSampleBCE(reduction="none")
        named = dict(model.named_parameters())

        def vmap() -> None:
            optimizer.zero_grad(set_to_none=True)
            sums = vmap_clipped_grad_sum(
                model,
                per_sample,
                images,
                targets,
                max_grad_norm=MAX_GRAD_NORM,
                chunk_size=VMAP_CHUNK,
            )
            for key, total in sums.items():
                noise = torch.normal(0.0, NOISE_MULTIPLIER * MAX_GRAD_NORM, total.shape)
                named[key].grad = (total + noise) / batch
            optimizer.step()

        return vmap

    if mode in ("fast", "patient", "k2"):
        dp = FastDPSGD(
            model,
            optimizer,
            noise_multiplier=NOISE_MULTIPLIER,
            max_grad_norm=MAX_GRAD_NORM,
            expected_batch_size=batch,
        )
        per_sample = PerSampleBCE(reduction="none")
        groups: torch.Tensor | None = None
        inputs, labels, weight = images, targets, 1.0
        if mode == "patient":  # each run of IMAGES_PER_PATIENT images is one patient
            groups = torch.arange(batch) // IMAGES_PER_PATIENT
        elif mode == "k2":  # each image and its mirror image, their losses averaged
            inputs = torch.stack([images, images.flip(-1)], dim=1).flatten(0, 1)
            labels = targets.repeat_interleave(AUGMENTATIONS, dim=0)
            groups = torch.arange(batch).repeat_interleave(AUGMENTATIONS)
            weight = 1.0 / AUGMENTATIONS

        def fast() -> None:
            dp.zero_grad()
            dp.backward(per_sample(model(inputs), labels) * weight, groups=groups)
            dp.step()

        return fast

    raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")


def _failure(error: Exception) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0][:90]


def _worker(
    conn: Connection,
    mode: str,
    name: str,
    size: int,
    batch: int,
    threads: int,
    warmup: int,
    steps: int,
) -> None:
    """One mode in a fresh process: warm up, time ``steps`` steps, send back the times and
    the share of the CPUs other programs used meanwhile. The allocator reuses freed blocks,
    as in the ``primia`` command (:mod:`primia.memory`)."""
    reuse_freed_memory()
    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")  # Opacus' secure-RNG and hook warnings
    try:
        gen = torch.Generator().manual_seed(1)  # the same batch in every process
        images = torch.randn(batch, 1, size, size, generator=gen)
        targets = (torch.rand(batch, NUM_LABELS, generator=gen) > 0.5).float()
        step = make_step(mode, name, images, targets)
        for _ in range(warmup):
            step()
        times: list[float] = []
        watch = CpuWatch()
        for _ in range(steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    except Exception as error:  # a mode that cannot run this model is reported, not fatal
        conn.send(("error", _failure(error)))
        return
    conn.send(("times", (times, watch.foreign_share())))


def measure(
    mode: str, name: str, size: int, batch: int, steps: int, warmup: int, threads: int
) -> Result:
    """Time one mode in a fresh process, alone.

    A fresh process per mode keeps one mode's memory (Opacus' per-sample gradients, the
    allocator's state) from slowing the next: on this VM a step that allocates gigabytes
    slows down by up to 2x when another process merely holds a few GB.
    """
    parent, child = _CONTEXT.Pipe()
    process = _CONTEXT.Process(
        target=_worker, args=(child, mode, name, size, batch, threads, warmup, steps)
    )
    process.start()
    try:
        kind, value = parent.recv()
    except EOFError:  # the process died (e.g. out of memory)
        kind, value = "error", f"worker exited with code {process.exitcode}"
    process.join()
    if kind == "error":
        return Result(mode, error=str(value))
    times, foreign = value
    return Result(mode, times=list(times), foreign=[] if foreign is None else [foreign])


def _burn(stop: Any) -> None:
    """Spin on one core until ``stop`` is set: another program sharing the machine."""
    value = 0
    while not stop.is_set():
        for _ in range(100_000):
            value = (value * 31 + 7) % 1_000_003


class Burners:
    """``count`` processes spinning on the CPU while the block runs."""

    def __init__(self, count: int) -> None:
        self._stop = _CONTEXT.Event()
        self._processes = [_CONTEXT.Process(target=_burn, args=(self._stop,)) for _ in range(count)]

    def __enter__(self) -> Burners:
        for process in self._processes:
            process.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for process in self._processes:
            process.join()


def _parse_model(spec: str) -> tuple[str, int]:
    name, _, size = spec.partition(":")
    return name, int(size) if size else {"resnet9": 64, "resnet18": 128}.get(name, 64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", nargs="+", default=list(DEFAULT_MODELS), help="name[:image size in px]"
    )
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first, per mode")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="rounds of all modes, in turn")
    parser.add_argument(
        "--conditions", nargs="+", default=["quiet", "contended"], choices=["quiet", "contended"]
    )
    parser.add_argument(
        "--burners",
        type=int,
        default=os.cpu_count() or 2,
        help="spinning processes added in the contended condition (default: one per core)",
    )
    args = parser.parse_args(argv)

    modes = list(dict.fromkeys(["nonprivate", *args.modes]))  # the ratio needs the baseline
    print(
        f"DP-SGD throughput: {args.threads} threads, batch {args.batch_size}, torch "
        f"{torch.__version__}, CPU only ({os.cpu_count()} cores), load average {load_average()}.\n"
        "images/s = batch / median step time, each mode alone in a fresh process, modes in\n"
        f"turn, {args.repeats} rounds; every step counts; 'others': the share of the CPUs other\n"
        f"programs used meanwhile (contended: {args.burners} spinning processes added)."
    )
    header = (
        f"{'model':<9} {'size':>4} {'condition':<9} {'mode':<11} {'images/s':>8} {'ratio':>6} "
        f"{'others':>6} {'min ms':>7} {'max ms':>7}"
    )
    print(header)
    print("-" * len(header))
    best: list[str] = []
    for spec in args.models:
        name, size = _parse_model(spec)
        steps = args.steps or DEFAULT_STEPS.get(name, 5)
        for condition in args.conditions:
            results = {mode: Result(mode) for mode in modes}
            with Burners(args.burners if condition == "contended" else 0):
                for _ in range(args.repeats):
                    for mode in modes:
                        results[mode].add(
                            measure(
                                mode, name, size, args.batch_size, steps, args.warmup, args.threads
                            )
                        )
            baseline = results["nonprivate"].images_per_s(args.batch_size)
            for mode, result in results.items():
                speed = result.images_per_s(args.batch_size)
                if speed is None:
                    print(
                        f"{name:<9} {size:>4} {condition:<9} {mode:<11} {'failed':>8}  "
                        + result.error
                    )
                    continue
                ratio = f"{speed / baseline:5.2f}x" if baseline else "     -"
                others = f"{statistics.mean(result.foreign):.0%}" if result.foreign else "n/a"
                print(
                    f"{name:<9} {size:>4} {condition:<9} {mode:<11} {speed:8.1f} {ratio:>6} "
                    f"{others:>6} {1000 * min(result.times):7.0f} {1000 * max(result.times):7.0f}",
                    flush=True,
                )
            private = [
                (speed, mode)
                for mode, r in results.items()
                if mode != "nonprivate" and (speed := r.images_per_s(args.batch_size)) is not None
            ]
            if private and baseline:
                speed, mode = max(private)
                best.append(
                    f"{name} {size}px {condition}: {mode} ({speed / baseline:.2f}x non-private)"
                )
    print(f"Load average at end: {load_average()}")
    print("best DP mode per model: " + "; ".join(best))
    return 0


if __name__ == "__main__":
    sys.exit(main())
