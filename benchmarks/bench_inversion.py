"""Figure: what gradient inversion recovers, by attack × defense × batch size × model state.

On 64×64 synthetic radiographs (3 sites × 20 patients × 4 images), the LeNet of the DLG
paper, untrained and trained (3 epochs, non-private, on the same data, standing in for a
few federated rounds), attacked by DLG, iDLG and Inverting Gradients behind no defense, a
DP-SGD update (σ = 1, C = 1) and the secure aggregate of 4 nodes, at batch sizes 1, 4 and 8.
Then ResNet-9 (width 16, primia's default architecture) and the small GroupNorm CNN,
undefended at batch 1, for contrast. Per cell: mean PSNR (and the prior's), SSIM, the
leakage value, the image and patient re-identification rates, seconds per attack, and
the verdict. Batch 1 attacks 4 images (4 attacks), batch 4 and 8 one batch each.

    python benchmarks/bench_inversion.py            # the full table, ~15 min on 2 cores
    python benchmarks/bench_inversion.py --quick    # batch 1 and 8, IG and iDLG only
    python benchmarks/bench_inversion.py --quick --size 32   # the reference's size, ~6 min

Reference (Geiping et al., NeurIPS 2020): Inverting Gradients takes about 100 s for 4,000
iterations on a 32×32 image on a desktop GPU, and reached about 16 dB on an untrained
ConvNet on CIFAR-10 at batch 1.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from machine import CpuWatch, load_average

from primia.audit import (
    AttackConfig,
    AttackName,
    InversionAudit,
    InversionConfig,
    run_inversion_audit,
)
from primia.data.synth import SynthConfig, write_dataset
from primia.train import TrainConfig, train_local

DEFENSES = ("none", "dp", "secagg")


def _train(data: Path, out: Path, model: str, width: int | None, size: int) -> Path:
    train_local(
        TrainConfig(
            data=data,
            out=out,
            model=model,
            width=width,
            image_size=size,
            epochs=3,
            batch_size=16,
            progress=False,
        )
    )
    return out / "model.safetensors"


def _row(label: str, audit: InversionAudit) -> str:
    s = audit.summary
    eps = "" if audit.epsilon is None else f"{audit.epsilon:.2f}"
    return (
        f"| {label} | {audit.settings['defense']} | {eps} | {s.psnr:.1f} ({s.prior_psnr:.1f}) "
        f"| {s.ssim:.2f} ({s.prior_ssim:.2f}) | {s.leakage:+.2f} | {s.label_accuracy:.0%} "
        f"| {s.reidentified_images:.0%} / {s.reidentified_patients:.0%} "
        f"| {s.seconds_per_attack:.1f} | {s.verdict} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 1 and 8, IG and iDLG only")
    parser.add_argument("--ig-iterations", type=int, default=1000)
    parser.add_argument("--lbfgs-iterations", type=int, default=200)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    attacks = [AttackName.IDLG, AttackName.IG] if args.quick else list(AttackName)
    batches = (1, 8) if args.quick else (1, 4, 8)
    watch = CpuWatch()
    started = time.perf_counter()
    print(f"load average before: {load_average()}")
    print(
        "| model · state · attack · batch | defense | ε | PSNR dB (prior) | SSIM (prior) "
        "| leakage | labels | re-id image / patient | s / attack | verdict |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "data"
        synth = SynthConfig(sites=3, patients_per_site=20, images_per_patient=4, size=args.size)
        write_dataset(data, synth, progress=False)
        states: dict[str, Path | None] = {
            "untrained": None,
            "trained": _train(data, Path(scratch) / "lenet", "lenet", None, args.size),
        }
        for state, checkpoint in states.items():
            for attack in attacks:
                iterations = (
                    args.ig_iterations if attack is AttackName.IG else args.lbfgs_iterations
                )
                for batch in batches:
                    config = InversionConfig(
                        data=data,
                        model=None if checkpoint else "lenet",
                        checkpoint=checkpoint,
                        image_size=args.size,
                        attack=AttackConfig(name=attack, iterations=iterations),
                        defenses=DEFENSES,
                        batch_size=batch,
                        images=4 if batch == 1 else batch,
                        nodes=4,
                        progress=False,
                    )
                    for audit in run_inversion_audit(config).audits:
                        label = f"lenet · {state} · {attack.value} · {batch}"
                        print(_row(label, audit), flush=True)
        for model, width in (("resnet9", 16), ("cnn", 16)):
            trained = _train(data, Path(scratch) / model, model, width, args.size)
            for state, checkpoint in (("untrained", None), ("trained", trained)):
                config = InversionConfig(
                    data=data,
                    model=None if checkpoint else model,
                    width=None if checkpoint else width,
                    checkpoint=checkpoint,
                    image_size=args.size,
                    attack=AttackConfig(name=AttackName.IG, iterations=args.ig_iterations),
                    images=2,
                    progress=False,
                )
                (audit,) = run_inversion_audit(config).audits
                print(_row(f"{model} · {state} · ig · 1", audit), flush=True)
    foreign = watch.foreign_share()
    share = "n/a" if foreign is None else f"{foreign:.0%}"
    print(f"total {time.perf_counter() - started:.0f} s; other programs used {share} of the CPUs")


if __name__ == "__main__":
    main()
