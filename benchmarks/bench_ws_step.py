"""Figure: the cost of weight standardisation in a training step, private and not.

ResNet-9 with plain and with weight-standardised convolutions (``ws``), each trained by
non-private SGD and by FastDPSGD (``conv_strategy="auto"``); the four step kinds
alternate, round after round, so load from other programs hits them alike. Prints the
median step time of each, the ratios WS/plain and DP/non-private, and the load.

    python benchmarks/bench_ws_step.py [--size 64] [--width 8] [--batch-size 64] [--rounds 8]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from machine import CpuWatch, load_average
from torch.nn import functional

from primia.models import build_model
from primia.train.fast_dp import FastDPSGD


def make_step(
    ws: bool, dp: bool, width: int, images: torch.Tensor, targets: torch.Tensor
) -> Callable[[], None]:
    torch.manual_seed(0)
    model = build_model("resnet9", num_classes=targets.shape[1], width=width, ws=ws)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    if not dp:

        def plain() -> None:
            optimizer.zero_grad(set_to_none=True)
            functional.binary_cross_entropy_with_logits(model(images), targets).backward()
            optimizer.step()

        return plain
    private = FastDPSGD(
        model, optimizer, noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=len(images)
    )

    def step() -> None:
        private.zero_grad()
        losses = functional.binary_cross_entropy_with_logits(
            model(images), targets, reduction="none"
        ).mean(1)
        private.backward(losses)
        private.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = torch.rand(args.batch_size, 1, args.size, args.size)
    targets = (torch.rand(args.batch_size, 4) > 0.5).float()
    kinds = {
        (ws, dp): make_step(ws, dp, args.width, images, targets)
        for ws in (False, True)
        for dp in (False, True)
    }
    for step in kinds.values():  # warm-up
        step()
    times: dict[tuple[bool, bool], list[float]] = {kind: [] for kind in kinds}
    watch = CpuWatch()
    print(f"load average at start: {load_average()}")
    for _ in range(args.rounds):
        for kind, step in kinds.items():
            started = time.perf_counter()
            step()
            times[kind].append(time.perf_counter() - started)
    median = {kind: statistics.median(values) for kind, values in times.items()}
    share = watch.foreign_share()
    print(
        f"ResNet-9 width {args.width}, {args.size} px, batch {args.batch_size}, "
        f"{args.threads} threads, {args.rounds} alternating rounds; load {load_average()}, "
        f"other programs {'n/a' if share is None else f'{share:.0%}'} of the CPUs"
    )
    for (ws, dp), seconds in median.items():
        name = f"{'WS' if ws else 'plain'} {'FastDPSGD' if dp else 'non-private'}"
        print(f"{name:>24}: {seconds * 1000:7.1f} ms/step, {args.batch_size / seconds:6.1f} img/s")
    for dp in (False, True):
        ratio = median[True, dp] / median[False, dp]
        print(f"WS / plain time ({'DP' if dp else 'non-private'}): {ratio:.2f}×")
    for ws in (False, True):
        ratio = median[ws, False] / median[ws, True]
        print(f"DP speed / non-private ({'WS' if ws else 'plain'}): {ratio:.2f}×")


if __name__ == "__main__":
    main()
