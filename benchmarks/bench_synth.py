"""How fast the synthetic radiograph generator is on one CPU core.

Goal: 1,000 images of 128 x 128 pixels generated and written as PNGs in under 10 s.
Generation alone (``generate``) and the full ``write_dataset`` (rendering plus PNG and
manifest writing, into a temporary folder) are timed separately.

    python benchmarks/bench_synth.py --images 1000 --size 128
"""

from __future__ import annotations

import os

# Pin every numerical library to one thread before numpy is imported: the goal is per core.
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from primia.data.synth import SynthConfig, generate, write_dataset  # noqa: E402

GOAL_SECONDS = 10.0
SITES = 5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="images to make (default 1000)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    args = parser.parse_args()

    # Five sites of four images per patient (each site has its own blur, so the blur cost is
    # that of a multi-site dataset); 1000 images are 5 sites x 50 patients x 4 images.
    patients = max(1, round(args.images / (SITES * 4)))
    config = SynthConfig(sites=SITES, patients_per_site=patients, size=args.size)

    started = time.perf_counter()
    generate(config)
    generate_s = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        write_dataset(Path(tmp) / "synth", config, progress=False)
        total_s = time.perf_counter() - started

    print(f"synthetic radiographs: {config.n_images} images of {args.size}x{args.size}, 1 thread")
    print(
        f"generate (in memory):  {generate_s:.2f} s  ({config.n_images / generate_s:,.0f} images/s)"
    )
    print(f"generate + write PNGs: {total_s:.2f} s  ({config.n_images / total_s:,.0f} images/s)")
    verdict = "met" if total_s < GOAL_SECONDS else "MISSED"
    print(f"goal < {GOAL_SECONDS:.0f} s for generate + write: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
