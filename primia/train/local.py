"""Local training, private or not: the work a data-owner node does on its own images.

>>> from primia.train import TrainConfig, DPConfig, train_local  # doctest: +SKIP
>>> result = train_local(TrainConfig(data=Path("data/synth"), out=Path("runs/a"),
...                                  dp=DPConfig(enabled=True, epsilon=3.0)))  # doctest: +SKIP
>>> result.privacy.epsilon <= 3.0  # doctest: +SKIP
True

With ``dp.enabled`` the run is DP-SGD (Abadi et al., CCS 2016) through Opacus: batches
are Poisson-sampled with rate q = 1 / (batches per epoch); each example's gradient is
clipped to norm C (``max_grad_norm``); Gaussian noise N(0, σ²C²) is added to the sum;
σ is the smallest noise multiplier whose composition over the planned steps spends at
most the target ε at δ (see :mod:`primia.train.accounting`). The guarantee is
example-level (ε, δ)-DP for the released weights; it holds for patient-level privacy only
when each patient contributes one image (otherwise divide by the images per patient, or
group the images).

The configured ``seed`` fixes the splits, the initial weights and the order of
non-private training. It never fixes DP noise or Poisson sampling: both draw from
generators seeded by the operating system's CSPRNG, since noise that can be regenerated
from a published seed can be subtracted. (The generators themselves are PyTorch's, not
cryptographically secure; Opacus' ``secure_mode`` needs torchcsprng, which has no build
for current PyTorch.)

Before the first step the plan is reserved in the dataset's privacy ledger, which refuses
it if the dataset's budget would be exceeded; after training the steps actually run are
recorded (see :mod:`primia.train.ledger`).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from primia.config import write_toml
from primia.data import RadiographDataset, Splits, open_dataset, patient_split
from primia.errors import ConfigError
from primia.files import atomic_write_bytes
from primia.models import check_model
from primia.models.checkpoint import ModelSpec, load_initial_weights, save_model
from primia.threads import set_torch_threads
from primia.train.accounting import Mechanism, epsilon_of, noise_for_target
from primia.train.ema import WeightEMA
from primia.train.ledger import Budget, PrivacyLedger
from primia.train.loops import EpochLoop, FastDPLoop, OpacusLoop, PlainLoop, to_float
from primia.train.losses import criterion_for
from primia.train.metrics import Metrics, classification_metrics
from primia.train.progress import TrainingProgress
from primia.train.proximal import add_proximal_term
from primia.train.randomness import os_seeded_generator
from primia.train.runlog import RunLog
from primia.train.tracking import open_run
from primia.train.train_config import TrainConfig
from primia.train.units import PrivacyUnit, unit_members, unnamed_patients_problem

FAILED_FILENAME = "failed.json"
"""Marks a run folder whose run failed after an epoch had finished (see _leave_failed_run)."""


@dataclass(frozen=True)
class PrivacyReport:
    """What a DP run spent, and what the dataset has spent in total."""

    epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float
    accountant: str
    unit: PrivacyUnit
    """What ε protects: a ``patient`` or one ``example`` (:mod:`primia.train.units`)."""
    ledger: Path
    release_id: str
    dataset_spent_epsilon: float
    dataset_budget_epsilon: float


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    model_path: Path
    spec: ModelSpec
    validation: Metrics
    test: Metrics | None
    privacy: PrivacyReport | None
    epochs: list[dict[str, Any]]
    seconds: float


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when a GPU is visible, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train_local(config: TrainConfig) -> TrainResult:
    """Train one model on one dataset as ``config`` says; see the module docstring."""
    with warnings.catch_warnings():
        # Opacus warns that its secure RNG is off (we seed noise from the OS instead, see
        # above) and PyTorch that backward hooks fire on inputs without gradients (images
        # never need them); both would only bury the progress output.
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        return _train(config)


def _train(config: TrainConfig) -> TrainResult:
    started = time.perf_counter()
    _seed_everything(config.seed)
    set_torch_threads(config.threads)
    device = resolve_device(config.device)

    dataset = open_dataset(
        config.data,
        image_size=config.image_size,
        label_columns=config.label_columns,
        format=config.format,
        options=config.read_options(),
    )
    splits = patient_split(
        dataset,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        seed=config.seed,
    )
    spec = ModelSpec(
        architecture=config.model,
        num_outputs=dataset.num_outputs,
        width=config.width,
        image_size=config.image_size,
        task=str(dataset.task),
        label_names=dataset.label_names,
        ws=config.ws,
    )
    model = spec.build()
    if config.init is not None:
        model.load_state_dict(load_initial_weights(config.init, spec))
    fresh = not config.out.exists()
    model_path = config.out / "model.safetensors"
    try:
        return _train_into(config, splits, spec, model, device, started)
    except BaseException as error:
        _leave_failed_run(config.out, fresh=fresh, trained=model_path.exists(), error=error)
        raise


def _leave_failed_run(out: Path, *, fresh: bool, trained: bool, error: BaseException) -> None:
    """A run that failed (or was refused) leaves no half-made folder: the folder this run
    created is removed when no epoch finished; otherwise ``failed.json`` marks it."""
    if fresh and not trained:
        shutil.rmtree(out, ignore_errors=True)
    elif out.exists():
        reason = {"failed": True, "error": f"{type(error).__name__}: {error}"}
        atomic_write_bytes(out / FAILED_FILENAME, (json.dumps(reason) + "\n").encode())


def _train_into(
    config: TrainConfig,
    splits: Splits,
    spec: ModelSpec,
    model: nn.Module,
    device: torch.device,
    started: float,
) -> TrainResult:
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / FAILED_FILENAME).unlink(missing_ok=True)
    write_toml(config, config.out / "config.toml")

    model_path = config.out / "model.safetensors"
    mlflow = open_run(
        config.tracking,
        run_name=config.out.name,
        params={"model": config.model, "epochs": config.epochs, "dp": config.dp.enabled},
    )
    with RunLog(config.out, mlflow) as log:

        def after_epoch(epoch: int, record: dict[str, Any], trained: nn.Module) -> None:
            log.record(epoch, record)
            save_model(model_path, trained, spec)

        fitted = fit(
            model,
            splits.train,
            config=config,
            device=device,
            description=f"train-local {config.model} -> {config.out}",
            validation=splits.val,
            after_epoch=after_epoch,
        )

    assert fitted.validation is not None  # a validation split is always given above
    test = evaluate(fitted.model, splits.test, device=device) if splits.test else None
    result = TrainResult(
        run_dir=config.out,
        model_path=model_path,
        spec=spec,
        validation=fitted.validation,
        test=test,
        privacy=fitted.privacy,
        epochs=fitted.epochs,
        seconds=time.perf_counter() - started,
    )
    _write_result(result)
    return result


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` did to the model."""

    model: nn.Module
    epochs: list[dict[str, Any]]
    train_loss: float
    steps: int
    validation: Metrics | None
    privacy: PrivacyReport | None


def fit(
    model: nn.Module,
    train: RadiographDataset,
    *,
    config: TrainConfig,
    device: torch.device,
    description: str,
    validation: RadiographDataset | None = None,
    after_epoch: Callable[[int, dict[str, Any], nn.Module], None] | None = None,
    ledger: PrivacyLedger | None = None,
    run: str = "",
) -> FitResult:
    """Train ``model`` (in place, from its current weights) on ``train`` as ``config`` says.

    With ``config.dp.enabled`` the run is reserved in the ledger before the first step and
    completed after the last (also when training fails), and the result's ``privacy``
    reports what it spent. ``after_epoch(epoch, record, model)`` is called after every
    epoch with the epoch's loss, ε and (given ``validation``) validation metrics. A caller
    that holds the dataset's ledger open passes it as ``ledger``; otherwise the one at
    ``config.ledger_path`` is opened (created with ``config.dp``'s budget). ``run`` names
    the coordinator run a federated round's release belongs to, in the ledger.
    """
    check_model(model)
    model.to(device)
    optimizer = _make_optimizer(model, config)
    if config.proximal_mu > 0:
        # on the plain optimiser, before any DP wrapper: it then sees the privatised gradient
        add_proximal_term(optimizer, model, config.proximal_mu)
    # The average is copied before a DP wrapper hooks the model, and updated after each of
    # the plain optimizer's steps; it is what is evaluated, saved and released (free in ε:
    # post-processing of the DP iterates, primia.train.ema).
    ema = WeightEMA(model, config.ema_decay) if config.ema_decay > 0 else None
    if ema is not None:
        ema.attach(optimizer)
    train_set = TensorDataset(*train.uint8_tensors())
    batches_per_epoch = math.ceil(len(train_set) / config.batch_size)

    release_id = ""
    mechanism: Mechanism | None = None
    loop: EpochLoop
    if config.dp.enabled and (
        problem := unnamed_patients_problem(
            config.dp.privacy_unit, unnamed=train.unnamed_patients, images=len(train)
        )
    ):
        raise ConfigError(problem)  # before the ledger is opened: nothing is recorded
    if not config.dp.enabled:
        ledger = None
    elif ledger is None:
        ledger = PrivacyLedger.open(
            config.ledger_path,
            budget=Budget(epsilon=config.dp.epsilon_budget, delta=config.dp.delta),
            accountant=config.dp.accountant,
        )
    if ledger is not None:
        dp = config.dp
        mechanism = dp_mechanism(config, examples=len(train_set))
        members = unit_members(
            train.patient_ids, dp.privacy_unit, max_images_per_patient=dp.max_images_per_patient
        )
        release_id = ledger.reserve(
            mechanism,
            epsilon=dp.epsilon,
            delta=dp.delta,
            description=description,
            run=run,
            unit=dp.privacy_unit,
        )
        common: dict[str, Any] = {
            "task": train.task,
            "config": config,
            "device": device,
            "noise_multiplier": mechanism.noise_multiplier,
            "sample_rate": mechanism.sample_rate,
            "generator": os_seeded_generator(),
        }
        if dp.grad_sample_mode == "fast":
            loop = FastDPLoop(model, optimizer, train_set, members=members, **common)
        else:
            loop = OpacusLoop(model, optimizer, train_set, **common)
    else:
        loop = PlainLoop(model, optimizer, train_set, task=train.task, config=config, device=device)

    epochs: list[dict[str, Any]] = []
    metrics: Metrics | None = None
    train_loss = math.nan
    try:
        with TrainingProgress(
            enabled=config.progress, epochs=config.epochs, steps_per_epoch=batches_per_epoch
        ) as progress:
            for epoch in range(1, config.epochs + 1):
                epoch_started = time.perf_counter()
                train_loss = loop.run_epoch(progress)
                epsilon = _spent(loop, config)
                record: dict[str, Any] = {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "epsilon": epsilon,
                    "delta": config.dp.delta if config.dp.enabled else None,
                    "seconds": time.perf_counter() - epoch_started,
                }
                released = loop.model if ema is None else ema.average
                if validation is not None:
                    metrics = evaluate(released, validation, device=device)
                    record.update(metrics.as_dict("val_"))
                epochs.append(record)
                if after_epoch is not None:
                    after_epoch(epoch, record, released)
                progress.epoch_done(epoch, metrics.mean_auroc if metrics else None, epsilon)
    finally:
        if ledger is not None:
            # Record what actually ran, also after an error: those steps were released.
            ledger.complete(release_id, steps=_steps(loop), epsilon=_spent(loop, config))
        if isinstance(loop, FastDPLoop):
            loop.close()

    privacy = None
    if ledger is not None and mechanism is not None:
        privacy = PrivacyReport(
            epsilon=_spent(loop, config),
            delta=config.dp.delta,
            noise_multiplier=mechanism.noise_multiplier,
            sample_rate=mechanism.sample_rate,
            steps=_steps(loop),
            max_grad_norm=config.dp.max_grad_norm,
            accountant=config.dp.accountant,
            unit=config.dp.privacy_unit,
            ledger=ledger.path,
            release_id=release_id,
            dataset_spent_epsilon=ledger.spent_epsilon(),
            dataset_budget_epsilon=ledger.budget.epsilon,
        )
    return FitResult(
        model=loop.model if ema is None else ema.average,
        epochs=epochs,
        train_loss=train_loss,
        steps=_steps(loop),
        validation=metrics,
        privacy=privacy,
    )


@torch.no_grad()
def logits_of(
    model: nn.Module, images: torch.Tensor, *, device: torch.device, batch_size: int = 256
) -> torch.Tensor:
    """``model``'s float32 logits (on the CPU) for ``uint8[N, 1, S, S]`` images, in eval
    mode, a batch at a time (no images: one empty batch, for the output width)."""
    model = model.to(device).eval()
    starts = range(0, len(images), batch_size) if len(images) else [0]
    return torch.cat(
        [
            model(to_float(images[start : start + batch_size], device)).float().cpu()
            for start in starts
        ]
    )


def metrics_of(logits: torch.Tensor, dataset: RadiographDataset) -> Metrics:
    """Loss, accuracy and AUROC of ``logits`` (from :func:`logits_of`) on ``dataset``."""
    targets = torch.from_numpy(dataset.targets())
    loss = float(criterion_for(dataset.task)(logits, targets))
    return classification_metrics(
        logits.numpy(),
        targets.numpy(),
        task=dataset.task,
        label_names=dataset.label_names,
        loss=loss,
    )


def evaluate(
    model: nn.Module, dataset: RadiographDataset, *, device: torch.device, batch_size: int = 256
) -> Metrics:
    """Loss, accuracy and AUROC of ``model`` on ``dataset``."""
    images, _ = dataset.uint8_tensors()
    return metrics_of(logits_of(model, images, device=device, batch_size=batch_size), dataset)


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def dp_mechanism(config: TrainConfig, *, examples: int) -> Mechanism:
    """The DP mechanism of the whole run on ``examples`` training examples: Poisson
    sampling at the rate that makes an epoch ⌈examples / batch size⌉ steps, σ calibrated to
    the target ε over all steps (what a node checks against its noise floor before it
    trains, and then trains with)."""
    batches_per_epoch = math.ceil(examples / config.batch_size)
    sample_rate = 1.0 / batches_per_epoch
    steps = config.epochs * batches_per_epoch
    sigma = noise_for_target(
        epsilon=config.dp.epsilon,
        delta=config.dp.delta,
        sample_rate=sample_rate,
        steps=steps,
        accountant=config.dp.accountant,
    )
    return Mechanism(sigma, sample_rate, steps)


def _steps(loop: EpochLoop) -> int:
    return sum(mechanism.steps for mechanism in loop.history())


def _spent(loop: EpochLoop, config: TrainConfig) -> float:
    """ε spent so far by ``loop``; infinite for non-private training."""
    if not config.dp.enabled:
        return math.inf
    return epsilon_of(loop.history(), delta=config.dp.delta, accountant=config.dp.accountant)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _write_result(result: TrainResult) -> None:
    summary = {
        "model_path": str(result.model_path),
        "spec": json.loads(result.spec.to_json()),
        "validation": result.validation.as_dict(),
        "test": result.test.as_dict() if result.test else None,
        "privacy": _privacy_dict(result.privacy),
        "seconds": result.seconds,
    }
    payload = json.dumps(summary, indent=2, default=str) + "\n"
    atomic_write_bytes(result.run_dir / "result.json", payload.encode())


def _privacy_dict(privacy: PrivacyReport | None) -> dict[str, Any] | None:
    if privacy is None:
        return None
    values = asdict(privacy)
    values["ledger"] = str(privacy.ledger)
    return values


__all__ = [
    "FitResult",
    "PrivacyReport",
    "TrainResult",
    "evaluate",
    "fit",
    "resolve_device",
    "train_local",
]
