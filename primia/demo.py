"""The demo: private training on synthetic radiographs, end to end, on a laptop.

It synthesizes a small multi-site chest radiograph dataset, trains a ResNet-9 on it with
DP-SGD at the target ε, and returns the training result (AUROC per finding, ε spent, the
dataset's ledger). ``primia demo`` prints it; ``make demo`` runs ``primia demo``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from primia.data.synth import SynthConfig, write_dataset
from primia.errors import ConfigError
from primia.train import DPConfig, TrainConfig, TrainResult, train_local

MARKER = ".primia-demo"


@dataclass(frozen=True)
class DemoSettings:
    out: Path = Path("runs/demo")
    sites: int = 3
    patients_per_site: int = 150
    images_per_patient: int = 4
    image_size: int = 48
    model: str = "resnet9"
    width: int = 16
    epochs: int = 15
    batch_size: int = 128
    lr: float = 3e-3
    epsilon: float = 3.0
    delta: float = 1e-5
    seed: int = 0
    progress: bool = True


def run_demo(settings: DemoSettings) -> TrainResult:
    """Synthesize data into ``settings.out/data`` and train privately into ``.../run``.

    ``settings.out`` is emptied first, but only if an earlier demo made it (it holds the
    marker file); any other non-empty folder is refused rather than deleted.
    """
    out = settings.out
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise ConfigError(
                f"{out} is not empty and was not made by primia demo; choose another --out"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).touch()
    data_dir = out / "data"
    write_dataset(
        data_dir,
        SynthConfig(
            sites=settings.sites,
            patients_per_site=settings.patients_per_site,
            images_per_patient=settings.images_per_patient,
            size=settings.image_size,
            seed=settings.seed,
        ),
        progress=settings.progress,
    )
    return train_local(
        TrainConfig(
            data=data_dir,
            out=out / "run",
            model=settings.model,
            width=settings.width,
            image_size=settings.image_size,
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            max_physical_batch_size=64,
            lr=settings.lr,
            seed=settings.seed,
            progress=settings.progress,
            dp=DPConfig(enabled=True, epsilon=settings.epsilon, delta=settings.delta),
        )
    )
