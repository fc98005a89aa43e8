"""Figure: how close the learned prior gets to +3 dB at 64 px (issue 23), by decoder variant.

The `analytic` attack recovers an image's features exactly at batch 1; the learned prior
(:mod:`primia.audit.prior`) turns them into an image. Its PSNR against the original, over
the prior's (the dataset's mean image), is the figure the issue's goal names. This bench
fits decoder variants on the same synthetic public set (4 sites, seed
``PUBLIC_SEED``) for primia's ResNet-9 (width 16, untrained, seed 0) and scores them on a
node's dataset (3 sites × 20 patients × 4 images, the audit bench's), on the 16 images the
audit bench attacks (seed 0) and on all 240:

    g(φ) = μ + MLP((φ − m)/s),   PSNR = 10·log10(1 / mean((g(φ(x)) − x)²)),

the MLP as in :mod:`primia.audit.prior` (two GELU layers of ``hidden`` units, Adam, cosine
schedule, minibatch 128). Variants, as ``key=value,...``: ``hidden``, ``steps``,
``public`` (images), ``labels=1`` (the image's findings — recovered exactly at batch 1
from the head's bias — appended to the features). ``base`` is the audit's decoder.

    python benchmarks/bench_audit_prior.py --size 64 base labels=1 hidden=512,labels=1
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from machine import load_average
from torch import Tensor

from primia.audit.analytic import features_of
from primia.audit.prior import HIDDEN, PUBLIC_SEED, STEPS, decoder_from_features
from primia.data.synth import SynthConfig, generate
from primia.models import build_model


def _psnr(a: Tensor, b: Tensor) -> float:
    """Mean over images of 10·log10(1 / MSE)."""
    error = ((a - b) ** 2).flatten(1).mean(1).double()
    return float((10 * torch.log10(1 / error)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("variants", nargs="+", help="base, or key=value,... (see above)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average before: {load_average()}", flush=True)
    node = generate(
        SynthConfig(sites=3, patients_per_site=20, images_per_patient=4, size=args.size)
    )
    x = torch.from_numpy(node.images).unsqueeze(1).float().div(255)
    labels = torch.from_numpy(node.labels).float()
    torch.manual_seed(0)
    model = build_model("resnet9", num_classes=labels.shape[1], width=16).eval()
    chosen = np.random.default_rng(0).permutation(len(x))[:16]

    def features(images: Tensor) -> Tensor:
        with torch.no_grad():
            return torch.cat(
                [features_of(model, images[i : i + 64]) for i in range(0, len(images), 64)]
            )

    node_features = features(x)
    prior = x.mean(0).expand_as(x)
    print(
        f"prior (mean image): {_psnr(prior[chosen], x[chosen]):.2f} dB on the 16 attacked, "
        f"{_psnr(prior, x):.2f} on all {len(x)}",
        flush=True,
    )
    public: dict[int, tuple[Tensor, Tensor, Tensor]] = {}
    for variant in args.variants:
        options = dict(kv.split("=") for kv in variant.split(",")) if variant != "base" else {}
        count = int(options.get("public", 4000))
        if count not in public:
            batch = generate(
                SynthConfig(
                    sites=4,
                    patients_per_site=count // 8,
                    images_per_patient=2,
                    size=args.size,
                    seed=PUBLIC_SEED,
                )
            )
            images = torch.from_numpy(batch.images).unsqueeze(1).float().div(255)
            public[count] = (images, features(images), torch.from_numpy(batch.labels).float())
        images, public_features, public_labels = public[count]
        train, query = public_features, node_features
        if options.get("labels") == "1":
            train, query = torch.cat([train, public_labels], 1), torch.cat([query, labels], 1)
        started = time.perf_counter()
        decoder = decoder_from_features(
            train,
            images,
            hidden=int(options.get("hidden", HIDDEN)),
            steps=int(options.get("steps", STEPS)),
        )
        rebuilt = decoder.decode(query)
        print(
            f"{variant}: {_psnr(rebuilt[chosen], x[chosen]):.2f} dB on the 16, "
            f"{_psnr(rebuilt, x):.2f} on all; fit {time.perf_counter() - started:.0f} s",
            flush=True,
        )
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
