"""Configuration of local training: what ``primia train-local`` and ``train_local`` take."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from primia.data import ReadOptions, check_format
from primia.errors import ConfigError
from primia.train.accounting import AccountantName
from primia.train.tracking import TrackingConfig
from primia.train.units import PrivacyUnit, check_unit, clipping_problem

GradSampleMode = Literal["fast", "hooks", "functorch", "ew", "ghost"]
LEDGER_FILENAME = "privacy-ledger.jsonl"


@dataclass
class DPConfig:
    """Differentially private SGD: per-sample clipping to ``max_grad_norm``, Gaussian noise
    calibrated so the whole run spends ``epsilon`` at ``delta``, Poisson sampling."""

    enabled: bool = False
    epsilon: float = 3.0
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    accountant: AccountantName = "prv"
    grad_sample_mode: GradSampleMode = "fast"
    epsilon_budget: float = 10.0
    """The dataset's total budget, enforced by its privacy ledger across all runs."""
    ledger: Path | None = None
    """The ledger file; default: ``privacy-ledger.jsonl`` beside the data."""
    privacy_unit: PrivacyUnit = "patient"
    """What ε protects: a ``patient`` (all their images sampled and clipped together) or
    one ``example`` (image); see :mod:`primia.train.units`."""
    max_images_per_patient: int = 16
    """The most images of one patient a step uses (memory, not privacy: the guarantee
    holds for any number)."""
    augmentation_multiplicity: int = 1
    """K: each sampled image's gradient is the mean over K random shifts (free in ε)."""

    def __post_init__(self) -> None:
        check_unit(self.privacy_unit)
        if self.max_images_per_patient < 1:
            raise ConfigError(
                f"dp.max_images_per_patient must be at least 1, got {self.max_images_per_patient}"
            )
        if self.augmentation_multiplicity < 1:
            raise ConfigError(
                "dp.augmentation_multiplicity must be at least 1 (1: no augmentation), got "
                f"{self.augmentation_multiplicity}"
            )
        problem = clipping_problem(
            self.privacy_unit, self.grad_sample_mode, self.augmentation_multiplicity
        )
        if problem is not None:
            raise ConfigError(f"dp.{problem}")
        if self.epsilon <= 0:
            raise ConfigError(f"dp.epsilon must be positive, got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise ConfigError(f"dp.delta must be in (0, 1), got {self.delta}; try 1e-5")
        if self.max_grad_norm <= 0:
            raise ConfigError(f"dp.max_grad_norm must be positive, got {self.max_grad_norm}")
        if self.epsilon_budget <= 0:
            raise ConfigError(f"dp.epsilon_budget must be positive, got {self.epsilon_budget}")


@dataclass
class TrainConfig:
    """One local training run: data, model, optimisation and (optionally) DP."""

    data: Path
    out: Path
    model: str = "resnet9"
    width: int | None = None
    ws: bool = False
    """Weight-standardised convolutions (:class:`~primia.models.layers.WSConv2d`)."""
    init: Path | None = None
    """Start from this checkpoint's weights (e.g. pre-trained on public or synthetic data);
    its model spec must match this run's (architecture, width, outputs, channels, ws)."""
    ema_decay: float = 0.0
    """Evaluate, save and release the EMA of the weights with this decay (0: off; the
    average is free in ε, :mod:`primia.train.ema`)."""
    image_size: int = 64
    label_columns: list[str] | None = None
    format: str | None = None
    """The dataset's layout (:data:`primia.data.FORMATS`); detected when unset."""
    uncertain: str = "ones"
    """CheXpert/MIMIC-CXR uncertain (-1) labels: ones, zeros or ignore (docs/data.md)."""
    vote: str = "majority"
    """VinDr-CXR readers' votes: majority or any."""
    views: str = "frontal"
    """frontal (PA, AP) or all views of a public collection."""
    skip_missing: bool = False
    """Leave out a public collection's rows whose image is missing instead of failing."""
    epochs: int = 3
    batch_size: int = 32
    """The logical (expected) batch size; with DP, batches are Poisson-sampled around it."""
    max_physical_batch_size: int = 32
    """The most images in one forward pass; larger logical batches are accumulated."""
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    proximal_mu: float = 0.0
    """FedProx's μ: the loss gains μ/2 ‖w − w₀‖² toward the starting weights w₀, its
    gradient added after DP's clipping and noise (:mod:`primia.train.proximal`)."""
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    """PyTorch's CPU threads; ``None``: the shared-machine default of :mod:`primia.threads`,
    ``0``: PyTorch's own default (all cores)."""
    progress: bool = True
    dp: DPConfig = field(default_factory=DPConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """MLflow logging beside TensorBoard (off by default; :mod:`primia.train.tracking`)."""

    def read_options(self) -> ReadOptions:
        """The public-collection reading options this run names."""
        return ReadOptions.of(self)

    def __post_init__(self) -> None:
        check_format(self.format)
        self.read_options()
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "max_physical_batch_size": self.max_physical_batch_size,
            "image_size": self.image_size,
        }
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in [0, 1) (0: no EMA), got {self.ema_decay}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if not self.proximal_mu >= 0:
            raise ConfigError(f"proximal_mu must be 0 or more, got {self.proximal_mu}")
        for name, fraction in (
            ("val_fraction", self.val_fraction),
            ("test_fraction", self.test_fraction),
        ):
            if not 0 <= fraction < 0.9:
                raise ConfigError(f"{name} must be in [0, 0.9), got {fraction}")
        if self.val_fraction == 0:
            raise ConfigError("val_fraction must be above 0: validation metrics need images")
        if self.threads is not None and self.threads < 0:
            raise ConfigError(
                f"threads must be at least 0 (0: PyTorch's default), got {self.threads}"
            )
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")

    @property
    def ledger_path(self) -> Path:
        if self.dp.ledger is not None:
            return self.dp.ledger
        folder = self.data if self.data.is_dir() else self.data.parent
        return folder / LEDGER_FILENAME
