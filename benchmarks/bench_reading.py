"""Reading speed: images per second decoded to 224 px, against one DP-SGD step on them.

Sources, one real radiograph each (pydicom-data's RG1, a 1955 x 1841 15-bit CR chest PA):

* ``dicom``: RG1 uncompressed (explicit VR little endian), 7.2 MB;
* ``dicom-j2k``: RG1 as JPEG 2000 lossless, the slowest codec a PACS exports;
* ``png``: RG1 as an 8-bit 1024 x 1024 PNG, the form NIH ChestX-ray14 ships.

Each is read with :func:`primia.data.read_radiograph` at 224 px (decode, VOI window,
resize, crop), in rounds that alternate the sources (A/B/C, so a change in load hits all
alike); images/s is the reads over the median round time. The DP-SGD step is
:class:`primia.train.fast_dp.FastDPSGD` on ResNet-9 at 224 px with a batch of ``--batch``
images (median of ``--steps`` after one warm-up). The verdict: how many worker processes
reading in parallel keep a step fed, ``ceil(batch / (images/s × step time))``; primia
decodes each image once and keeps it in memory, so this is the first epoch's cost only.

    python benchmarks/bench_reading.py
    python benchmarks/bench_reading.py --rounds 5 --batch 16
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import torch
from machine import CpuWatch, load_average
from PIL import Image

from primia.data.dicom import read_radiograph
from primia.models import build_model
from primia.train.fast_dp import FastDPSGD
from primia.train.losses import PerSampleBCEWithLogits

SIZE = 224


def _sources(folder: Path) -> dict[str, Path]:
    try:
        import data_store
    except ImportError:
        sys.exit("pydicom-data is not installed: pip install pydicom-data")
    data = Path(data_store.__file__).parent / "data"
    png = folder / "rg1.png"
    stored = pydicom.dcmread(data / "RG1_UNCR.dcm").pixel_array.astype(np.float64)
    grey = (stored - stored.min()) / (stored.max() - stored.min()) * 255.0
    Image.fromarray((255 - grey).astype(np.uint8)).resize((1024, 1024)).save(png)
    return {"dicom": data / "RG1_UNCR.dcm", "dicom-j2k": data / "RG1_J2KR.dcm", "png": png}


def _reading(sources: dict[str, Path], rounds: int, reads: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in sources}
    for _ in range(rounds):
        for name, path in sources.items():
            started = time.perf_counter()
            for _ in range(reads):
                read_radiograph(path, SIZE)
            times[name].append(time.perf_counter() - started)
    return {name: reads / statistics.median(spent) for name, spent in times.items()}


def _dp_step(batch: int, steps: int) -> float:
    torch.manual_seed(0)
    model = build_model("resnet9", num_classes=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    dp = FastDPSGD(
        model, optimizer, noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=batch
    )
    loss = PerSampleBCEWithLogits(reduction="none")
    images = torch.rand(batch, 1, SIZE, SIZE)
    targets = torch.randint(0, 2, (batch, 4)).float()
    spent = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        dp.zero_grad()
        dp.backward(loss(model(images), targets))
        dp.step()
        spent.append(time.perf_counter() - started)
    return statistics.median(spent[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reads", type=int, default=4, help="reads of each source per round")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    watch = CpuWatch()
    with tempfile.TemporaryDirectory() as folder:
        speeds = _reading(_sources(Path(folder)), args.rounds, args.reads)
    step = _dp_step(args.batch, args.steps)
    foreign = watch.foreign_share()
    print(f"load average {load_average()}; other programs used "
          f"{'n/a' if foreign is None else f'{foreign:.0%}'} of the CPUs")  # fmt: skip
    print(f"DP-SGD step (ResNet-9, {SIZE} px, batch {args.batch}, 1 thread): {step:.2f} s "
          f"= {args.batch / step:.1f} images/s")  # fmt: skip
    print(f"{'source':<10} {'images/s':>9} {'workers to keep a step fed':>27}")
    for name, speed in speeds.items():
        workers = max(1, math.ceil(args.batch / (speed * step)))
        print(f"{name:<10} {speed:>9.1f} {workers:>27}")


if __name__ == "__main__":
    main()
