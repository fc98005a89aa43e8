"""Figure: what the attacks of issue 23 recover, by attack × threat × defense × batch × model.

On synthetic radiographs (3 sites × 20 patients × 4 images; the attacker's learned prior is
fitted on a separate synthetic set of other sites and patients), primia's ResNet-9
(width 16 by default, ``--resnet-width 64`` for the default width), the small GroupNorm
CNN (width 16) and the DLG LeNet at width 17 (the width its imprint needs at 32 px, plus
the counting channel), untrained and trained (2 local DP-SGD epochs at ε = 3 — a stand-in
for a few federated rounds, which are too slow on this machine), at 32 and 64 px. Threats:
an honest coordinator, trap weights to every node, model inconsistency (secure
aggregation only). Defenses: none, DP-SGD (σ = 1, C = 1), the secure mean of 4 nodes.
Every cell attacks 16 images with seed 0 (``--images``): batch 1 in 16 updates, batch 8 in
2 (secure aggregation: 4 nodes × 8 images per update, all scored).

Per cell: images leaked of N (reconstructed: PSNR ≥ prior + 1 dB and leakage ≥ 0.1; or
re-identified: by pixels, the dataset image nearest the reconstruction is the original
or the patient's; or by features, the dataset image whose features through the sent
model are nearest the recovered ones is the original, or, the original left out, the
patient's; a method's hits count only beyond chance, as
``primia.audit.results.discount_chance`` tests them, while the rates printed are the raw
hits), images reconstructed, mean PSNR and the prior's, SSIM, the re-identification
rates, images whose findings came back exactly, seconds per attack, and whether primia's
model-consistency check refuses the threat. Cells come analytic first (every model), then
feature-ig, so a run cut short still has the analytic table.

    python benchmarks/bench_audit_attacks.py                 # analytic
    python benchmarks/bench_audit_attacks.py --full          # + feature-ig, ResNet-9 width 64
    python benchmarks/bench_audit_attacks.py --sizes 64 --models resnet9 --states untrained \
        --batches 1 --threats honest                          # one slice of the table
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
from primia.models import build_model
from primia.models.checkpoint import find_checkpoint, load_model
from primia.train import DPConfig, TrainConfig, train_local

THREATS = {"honest": ("none", "dp", "secagg"), "trap": ("none", "dp", "secagg")}
THREATS["inconsistent"] = ("secagg",)


def _train(data: Path, out: Path, model: str, width: int, size: int) -> Path:
    train_local(
        TrainConfig(
            data=data,
            out=out,
            model=model,
            width=width,
            image_size=size,
            epochs=2,
            batch_size=32,
            progress=False,
            dp=DPConfig(enabled=True, epsilon=3.0),
        )
    )
    return out / "model.safetensors"


def _moved(checkpoint: Path, model: str, width: int) -> str:
    """How far training moved the weights from the untrained model the audit attacks
    (training starts from the same seed-0 initialisation): ‖θ − θ₀‖ / ‖θ₀‖."""
    trained, spec = load_model(find_checkpoint(checkpoint))
    torch.manual_seed(0)
    initial = build_model(model, num_classes=spec.num_outputs, width=width)
    before = torch.cat([p.flatten() for p in initial.state_dict().values()])
    after = torch.cat([p.flatten() for p in trained.state_dict().values()])
    return f"{(after - before).norm() / before.norm():.1%}"


def _row(label: str, audit: InversionAudit) -> str:
    s = audit.summary
    refused = "refused" if audit.refusal else "passes"
    return (
        f"| {label} | {audit.settings['threat']} | {audit.settings['defense']} "
        f"| {s.leaked_images} of {s.images} | {s.reconstructed_images} "
        f"| {s.psnr:.1f} ({s.prior_psnr:.1f}) | {s.ssim:.2f} ({s.prior_ssim:.2f}) "
        f"| {s.reidentified_images:.0%} / {s.reidentified_patients:.0%} "
        f"| {_share(s.reidentified_by_features)} / {_share(s.linked_by_features)} "
        f"| {s.labels_exact_images} of {s.images} | {s.seconds_per_attack:.2f} | {refused} |"
    )


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="add feature-ig; ResNet-9 width 64")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--resnet-width", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=200, help="feature-ig iterations")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["resnet9", "cnn", "lenet"])
    parser.add_argument("--images", type=int, default=16, help="attacked images per cell")
    parser.add_argument("--attacks", nargs="+", default=None, help="default: analytic (+ --full)")
    parser.add_argument(
        "--states", nargs="+", choices=["untrained", "trained"], default=["untrained", "trained"]
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threats", nargs="+", choices=list(THREATS), default=list(THREATS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    attacks = [AttackName.ANALYTIC] + ([AttackName.FEATURE_IG] if args.full else [])
    if args.attacks:
        attacks = [AttackName(name) for name in args.attacks]
    resnet_width = args.resnet_width or (64 if args.full else 16)
    widths = {"resnet9": resnet_width, "cnn": 16, "lenet": 17}
    models = [(name, widths[name]) for name in args.models]
    watch = CpuWatch()
    started = time.perf_counter()
    print(f"load average before: {load_average()}")
    print(
        "| size · model · state · attack · batch | threat | defense | leaked | reconstructed "
        "| PSNR dB (prior) | SSIM (prior) | re-id pixels image / patient "
        "| re-id features image / patient (original left out) | findings exact | s / attack "
        "| consistency check |"
    )
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    moved: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for size in args.sizes:
            data = Path(scratch) / f"data{size}"
            synth = SynthConfig(sites=3, patients_per_site=20, images_per_patient=4, size=size)
            write_dataset(data, synth, progress=False)
            checkpoints: dict[str, Path] = {}
            for attack in attacks:
                for model, width in models:
                    if model not in checkpoints and "trained" in args.states:
                        checkpoints[model] = _train(
                            data, Path(scratch) / f"{model}{size}", model, width, size
                        )
                        moved[f"{size} px {model}"] = _moved(checkpoints[model], model, width)
                    states = {"untrained": None, "trained": checkpoints.get(model)}
                    for state in args.states:
                        checkpoint = states[state]
                        for batch in args.batches:
                            for threat in args.threats:
                                defenses = THREATS[threat]
                                config = InversionConfig(
                                    data=data,
                                    model=None if checkpoint else model,
                                    width=None if checkpoint else width,
                                    checkpoint=checkpoint,
                                    image_size=size,
                                    attack=AttackConfig(name=attack, iterations=args.iterations),
                                    threat=threat,
                                    defenses=defenses,
                                    batch_size=batch,
                                    images=args.images,
                                    nodes=4,
                                    progress=False,
                                )
                                label = f"{size} · {model} · {state} · {attack.value} · {batch}"
                                for audit in run_inversion_audit(config).audits:
                                    print(_row(label, audit), flush=True)
    print("training moved the weights by ‖θ − θ₀‖/‖θ₀‖ =", moved)
    foreign = watch.foreign_share()
    share = "n/a" if foreign is None else f"{foreign:.0%}"
    print(f"load average after: {load_average()}")
    print(f"total {time.perf_counter() - started:.0f} s; other programs used {share} of the CPUs")


if __name__ == "__main__":
    main()
