"""Training an anonymizer against a re-identification verifier (PriCheXy-Net's scheme).

Three networks, on the training patients of a patient-disjoint split:

* the **generator** G (:mod:`~primia.anonymize.generators`), which anonymizes;
* the **verifier** V (:class:`~primia.audit.verifier.SiameseVerifier`), the adversary:
  does G(x) show the same patient as another image x₂?
* an **auxiliary classifier** C (a :mod:`primia.models` backbone), which keeps the
  findings readable in G(x).

Phases, each resumable at its epochs:

1. ``pretrain``: G learns the identity, min ‖G(x) − x‖² (so training starts from images
   that are still radiographs);
2. ``warmup``: V learns identity on real pairs, C the findings on real images;
3. ``adversarial``: per batch of balanced pairs (x₁, x₂, same patient?, findings y₁),

   * G: min  w_p · BCE(V(G(x₁), x₂), 0 | same patient) + w_u · L_C(C(G(x₁)), y₁)
     — make the anonymized image not link to its patient, keep its findings;
   * V: min BCE(V(G(x₁), x₂), same) — the attacker adapts to anonymized images;
   * C: min L_C(C(G(x₁)), y₁).

After every adversarial epoch the generator's loss on validation pairs is computed and
the generator with the lowest one is kept as ``generator.safetensors``.

Segmentation guidance (``guide``, PriCheXySeg-style): G's perturbation is weighted per
pixel by w = min_r (1 − (1 − a_r) · smooth(m_r)) (:func:`~primia.anonymize.guidance_weight`,
a_r = ``inside``), so the lungs and the heart keep strength a_r (untouched at 0) and the
rest is deformed or perturbed at full strength. The masks m_r are the manifest's
(``guide="masks"``) or a trained segmenter's (``guide="segmenter"``; its weights are
stored, frozen, in the generator's file). ``last/`` holds
every network after each epoch (the optimisers restart when a run resumes), and
``history.jsonl`` and ``tb/`` the figures.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from primia.anonymize.checkpoint import GeneratorSpec, Guide, save_generator
from primia.anonymize.generators import GuidedGenerator
from primia.audit.pairs import PatientIndex
from primia.audit.verifier import SiameseVerifier
from primia.config import write_toml
from primia.data import load_splits
from primia.data.dataset import RadiographDataset
from primia.errors import ConfigError
from primia.files import atomic_write_bytes
from primia.models import build_model
from primia.segment.masks import REGIONS, dataset_masks, load_segmenter
from primia.train.local import resolve_device
from primia.train.loops import to_float
from primia.train.losses import criterion_for

log = logging.getLogger(__name__)

Phase = Literal["pretrain", "warmup", "adversarial"]
PHASES: tuple[Phase, ...] = ("pretrain", "warmup", "adversarial")
EpochCallback = Callable[[Phase, int, int, dict[str, float]], None]


@dataclass(frozen=True)
class AnonymizerConfig:
    data: Path
    out: Path
    generator: Literal["flow", "noise"] = "flow"
    mu: float = 0.01
    """Flow field: the largest displacement is μ/2 of the image side."""
    smoothing: float = 2.0
    """Flow field: σ in pixels of the Gaussian that smooths the offsets."""
    noise_strength: float = 0.1
    guide: Guide = "none"
    """none, masks (the manifest's mask columns) or segmenter (``segmenter``'s masks)."""
    inside: tuple[float, ...] = (0.0, 0.0)
    """Guided: strength a_r inside the lungs and the heart (0 = untouched, 1 = full)."""
    segmenter: Path | None = None
    """Guided by a segmenter: its checkpoint (``primia segment train``)."""
    generator_width: int = 16
    image_size: int = 64
    backbone: str = "resnet9"
    """The verifier's and the auxiliary classifier's architecture."""
    backbone_width: int = 16
    pretrain_epochs: int = 2
    warmup_epochs: int = 3
    epochs: int = 10
    pairs_per_epoch: int = 2000
    batch_size: int = 32
    generator_lr: float = 1e-4
    adversary_lr: float = 1e-3
    privacy_weight: float = 1.0
    utility_weight: float = 1.0
    val_fraction: float = 0.15
    test_fraction: float = 0.3
    site: str | None = None
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.generator not in ("flow", "noise"):
            raise ConfigError(f"generator must be flow or noise, not {self.generator!r}")
        for name in ("pretrain_epochs", "warmup_epochs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 or more")
        for name in ("epochs", "pairs_per_epoch", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.privacy_weight < 0 or self.utility_weight < 0:
            raise ConfigError("the loss weights must be 0 or positive")
        if self.guide not in ("none", "masks", "segmenter"):
            raise ConfigError(f"guide must be none, masks or segmenter, not {self.guide!r}")
        if len(self.inside) != len(REGIONS) or any(not 0 <= a <= 1 for a in self.inside):
            raise ConfigError(
                f"give one inside strength in [0, 1] per region ({', '.join(REGIONS)}), "
                f"not {list(self.inside)}"
            )
        if (self.guide == "segmenter") != (self.segmenter is not None):
            raise ConfigError(
                "guide segmenter needs a segmenter checkpoint (--segmenter, from 'primia "
                "segment train'), and a segmenter is used only with --guide segmenter"
            )

    def spec(self, segmenter_width: int = 8) -> GeneratorSpec:
        return GeneratorSpec(
            kind=self.generator,
            mu=self.mu,
            smoothing=self.smoothing,
            noise_strength=self.noise_strength,
            width=self.generator_width,
            image_size=self.image_size,
            guide=self.guide,
            inside=tuple(self.inside),
            segmenter_width=segmenter_width,
        )


@dataclass(frozen=True)
class TrainedAnonymizer:
    generator_path: Path
    best_epoch: int
    best_validation_loss: float
    history: list[dict[str, Any]]
    seconds_per_adversarial_epoch: float


def train_anonymizer(
    config: AnonymizerConfig, *, on_epoch: EpochCallback | None = None
) -> TrainedAnonymizer:
    """Train (or resume) the anonymizer of ``config`` (module docstring)."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = resolve_device(config.device)
    data = _Data.load(config)
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    write_toml(config, out / "config.toml")
    networks = _Networks.build(config, data, device)
    generator_spec = networks.spec
    progress = _Progress.load(out)
    spec = json.loads(json.dumps(dataclasses.asdict(generator_spec)))
    if progress.spec is not None and progress.spec != spec:
        raise ConfigError(
            f"{out} holds an anonymizer trained with {progress.spec}, not {spec}: choose "
            "another --out, or the same settings to resume"
        )
    progress.spec = spec
    if progress.completed:
        networks.load(out / "last")
        log.info("resuming after %s", progress.describe())
    history_path = out / "history.jsonl"
    writer = SummaryWriter(log_dir=str(out / "tb"))
    adversarial_seconds: list[float] = []
    try:
        for phase, epochs in zip(
            PHASES, (config.pretrain_epochs, config.warmup_epochs, config.epochs), strict=True
        ):
            for epoch in range(progress.completed.get(phase, 0) + 1, epochs + 1):
                started = time.perf_counter()
                record = _run_epoch(phase, networks, data, config, rng, device)
                seconds = time.perf_counter() - started
                record.update({"phase": phase, "epoch": epoch, "seconds": seconds})
                if phase == "adversarial":
                    adversarial_seconds.append(seconds)
                    if record["val_generator_loss"] < progress.best_validation_loss:
                        progress.best_validation_loss = record["val_generator_loss"]
                        progress.best_epoch = epoch
                        save_generator(
                            out / "generator.safetensors", networks.generator, generator_spec
                        )
                networks.save(out / "last")
                progress.completed[phase] = epoch
                progress.save(out)
                with open(history_path, "a") as lines:
                    lines.write(json.dumps(record) + "\n")
                for key, value in record.items():
                    if isinstance(value, float) and key != "seconds":
                        writer.add_scalar(f"{phase}/{key}", value, epoch)
                log.info("%s epoch %d/%d: %s", phase, epoch, epochs, _describe(record))
                if on_epoch is not None:
                    on_epoch(phase, epoch, epochs, record)
    finally:
        writer.close()
    history = [json.loads(line) for line in history_path.read_text().splitlines()]
    return TrainedAnonymizer(
        generator_path=out / "generator.safetensors",
        best_epoch=progress.best_epoch,
        best_validation_loss=progress.best_validation_loss,
        history=history,
        seconds_per_adversarial_epoch=float(np.mean(adversarial_seconds))
        if adversarial_seconds
        else float("nan"),
    )


@dataclass(frozen=True)
class _Data:
    train_images: torch.Tensor
    train_targets: torch.Tensor
    train_index: PatientIndex
    val_images: torch.Tensor
    val_targets: torch.Tensor
    val_index: PatientIndex
    train: RadiographDataset
    """The training split (its task and outputs size the classifier)."""
    train_masks: torch.Tensor | None = None
    val_masks: torch.Tensor | None = None
    """``uint8[N, R, S, S]`` 0/1 masks, with ``guide="masks"`` only."""

    @classmethod
    def load(cls, config: AnonymizerConfig) -> _Data:
        splits = load_splits(
            config.data,
            image_size=config.image_size,
            site=config.site,
            val_fraction=config.val_fraction,
            test_fraction=config.test_fraction,
            seed=config.seed,
        )
        train_images, train_targets = splits.train.uint8_tensors()
        val_images, val_targets = splits.val.uint8_tensors()
        given = config.guide == "masks"
        return cls(
            train_images,
            train_targets,
            PatientIndex.of(splits.train, what="training"),
            val_images,
            val_targets,
            PatientIndex.of(splits.val, what="validation"),
            splits.train,
            dataset_masks(splits.train, config.data) if given else None,
            dataset_masks(splits.val, config.data) if given else None,
        )


@dataclass
class _Networks:
    generator: nn.Module
    verifier: SiameseVerifier
    classifier: nn.Module
    criterion: nn.Module
    generator_optimizer: torch.optim.Optimizer
    verifier_optimizer: torch.optim.Optimizer
    classifier_optimizer: torch.optim.Optimizer
    spec: GeneratorSpec

    @classmethod
    def build(cls, config: AnonymizerConfig, data: _Data, device: torch.device) -> _Networks:
        spec = config.spec()
        segmenter = None
        if config.segmenter is not None:
            segmenter, segmenter_spec = load_segmenter(config.segmenter)
            if segmenter_spec.image_size != config.image_size:
                raise ConfigError(
                    f"the segmenter {config.segmenter} was trained at "
                    f"{segmenter_spec.image_size} px, the anonymizer runs at "
                    f"{config.image_size} px; train one at --image-size {config.image_size}"
                )
            spec = config.spec(segmenter_width=segmenter_spec.width)
        generator = spec.build()
        if segmenter is not None:
            assert isinstance(generator, GuidedGenerator) and generator.segmenter is not None
            generator.segmenter.load_state_dict(segmenter.state_dict())
        generator = generator.to(device)
        trainable = [p for p in generator.parameters() if p.requires_grad]
        verifier = SiameseVerifier(config.backbone, width=config.backbone_width).to(device)
        classifier = build_model(
            config.backbone, num_classes=data.train.num_outputs, width=config.backbone_width
        ).to(device)
        return cls(
            generator=generator,
            verifier=verifier,
            classifier=classifier,
            criterion=criterion_for(data.train.task),
            generator_optimizer=torch.optim.Adam(trainable, lr=config.generator_lr),
            verifier_optimizer=torch.optim.Adam(verifier.parameters(), lr=config.adversary_lr),
            classifier_optimizer=torch.optim.Adam(classifier.parameters(), lr=config.adversary_lr),
            spec=spec,
        )

    def modules(self) -> dict[str, nn.Module]:
        return {
            "generator": self.generator,
            "verifier": self.verifier,
            "classifier": self.classifier,
        }

    def save(self, folder: Path) -> None:
        for name, module in self.modules().items():
            tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
            atomic_write_bytes(folder / f"{name}.safetensors", save_safetensors(tensors))

    def load(self, folder: Path) -> None:
        for name, module in self.modules().items():
            payload = (folder / f"{name}.safetensors").read_bytes()
            module.load_state_dict(load_safetensors(payload))


@dataclass
class _Progress:
    completed: dict[str, int]
    best_validation_loss: float = float("inf")
    best_epoch: int = 0
    spec: dict[str, Any] | None = None
    """The generator's settings, so a resumed run cannot change them."""

    @classmethod
    def load(cls, out: Path) -> _Progress:
        path = out / "progress.json"
        if not path.exists():
            return cls(completed={})
        values = json.loads(path.read_text())
        return cls(
            completed=dict(values["completed"]),
            best_validation_loss=float(values["best_validation_loss"]),
            best_epoch=int(values["best_epoch"]),
            spec=values.get("spec"),
        )

    def save(self, out: Path) -> None:
        payload = {
            "completed": self.completed,
            "best_validation_loss": self.best_validation_loss,
            "best_epoch": self.best_epoch,
            "spec": self.spec,
        }
        atomic_write_bytes(out / "progress.json", (json.dumps(payload) + "\n").encode())

    def describe(self) -> str:
        return ", ".join(f"{phase} epoch {epoch}" for phase, epoch in self.completed.items())


def _run_epoch(
    phase: Phase,
    networks: _Networks,
    data: _Data,
    config: AnonymizerConfig,
    rng: np.random.Generator,
    device: torch.device,
) -> dict[str, Any]:
    if phase == "pretrain":
        return {"identity_loss": _pretrain_epoch(networks, data, config, rng, device)}
    if phase == "warmup":
        return _warmup_epoch(networks, data, config, rng, device)
    record = _adversarial_epoch(networks, data, config, rng, device, train=True)
    validation = _adversarial_epoch(networks, data, config, rng, device, train=False)
    record.update({f"val_{key}": value for key, value in validation.items()})
    return record


def _batches(count: int, size: int) -> list[slice]:
    return [slice(start, start + size) for start in range(0, count, size)]


def _anonymize(
    networks: _Networks, images: torch.Tensor, masks: torch.Tensor | None, device: torch.device
) -> torch.Tensor:
    """G(x), given the batch's masks where the generator is guided by given masks."""
    if masks is None:
        return networks.generator(images)
    return networks.generator(images, masks.to(device, torch.float32))


def _pretrain_epoch(
    networks: _Networks,
    data: _Data,
    config: AnonymizerConfig,
    rng: np.random.Generator,
    device: torch.device,
) -> float:
    networks.generator.train()
    order = rng.permutation(len(data.train_images))
    losses = []
    for batch in _batches(len(order), config.batch_size):
        images = to_float(data.train_images[order[batch]], device)
        masks = None if data.train_masks is None else data.train_masks[order[batch]]
        loss = nn.functional.mse_loss(_anonymize(networks, images, masks, device), images)
        networks.generator_optimizer.zero_grad()
        loss.backward()
        networks.generator_optimizer.step()
        losses.append(loss.item())
    return float(np.mean(losses))


def _warmup_epoch(
    networks: _Networks,
    data: _Data,
    config: AnonymizerConfig,
    rng: np.random.Generator,
    device: torch.device,
) -> dict[str, Any]:
    networks.verifier.train()
    networks.classifier.train()
    first, second, same = data.train_index.sample(config.pairs_per_epoch, rng)
    bce = nn.BCEWithLogitsLoss()
    verifier_losses, classifier_losses = [], []
    for batch in _batches(len(first), config.batch_size):
        x1 = to_float(data.train_images[first[batch]], device)
        x2 = to_float(data.train_images[second[batch]], device)
        labels = torch.from_numpy(same[batch]).float().to(device)
        verifier_loss = bce(networks.verifier(x1, x2), labels)
        networks.verifier_optimizer.zero_grad()
        verifier_loss.backward()
        networks.verifier_optimizer.step()
        classifier_loss = networks.criterion(
            networks.classifier(x1), data.train_targets[first[batch]].to(device)
        )
        networks.classifier_optimizer.zero_grad()
        classifier_loss.backward()
        networks.classifier_optimizer.step()
        verifier_losses.append(verifier_loss.item())
        classifier_losses.append(classifier_loss.item())
    return {
        "verifier_loss": float(np.mean(verifier_losses)),
        "classifier_loss": float(np.mean(classifier_losses)),
    }


def _adversarial_epoch(
    networks: _Networks,
    data: _Data,
    config: AnonymizerConfig,
    rng: np.random.Generator,
    device: torch.device,
    *,
    train: bool,
) -> dict[str, float]:
    """One pass of the three steps (``train``) or the generator's loss on validation."""
    images, targets, index, masks = (
        (data.train_images, data.train_targets, data.train_index, data.train_masks)
        if train
        else (data.val_images, data.val_targets, data.val_index, data.val_masks)
    )
    pairs = config.pairs_per_epoch if train else max(2, config.pairs_per_epoch // 4)
    first, second, same = index.sample(pairs, rng if train else np.random.default_rng(0))
    for module in networks.modules().values():
        module.train(train)
    bce = nn.BCEWithLogitsLoss()
    totals: dict[str, list[float]] = {
        "generator_loss": [],
        "privacy_loss": [],
        "utility_loss": [],
        "verifier_loss": [],
    }
    for batch in _batches(len(first), config.batch_size):
        x1 = to_float(images[first[batch]], device)
        x2 = to_float(images[second[batch]], device)
        linked = torch.from_numpy(same[batch]).to(device)
        y1 = targets[first[batch]].to(device)
        with torch.set_grad_enabled(train):
            m1 = None if masks is None else masks[first[batch]]
            anonymized = _anonymize(networks, x1, m1, device)
            logits = networks.verifier(anonymized, x2)
            privacy = (
                bce(logits[linked], torch.zeros_like(logits[linked]))
                if linked.any()
                else logits.sum() * 0
            )
            utility = networks.criterion(networks.classifier(anonymized), y1)
            generator_loss = config.privacy_weight * privacy + config.utility_weight * utility
        if train:
            networks.generator_optimizer.zero_grad()
            generator_loss.backward()
            networks.generator_optimizer.step()
            detached = anonymized.detach()
            verifier_loss = bce(networks.verifier(detached, x2), linked.float())
            networks.verifier_optimizer.zero_grad()
            verifier_loss.backward()
            networks.verifier_optimizer.step()
            classifier_loss = networks.criterion(networks.classifier(detached), y1)
            networks.classifier_optimizer.zero_grad()
            classifier_loss.backward()
            networks.classifier_optimizer.step()
        else:
            verifier_loss = bce(logits, linked.float())
        totals["generator_loss"].append(generator_loss.item())
        totals["privacy_loss"].append(privacy.item())
        totals["utility_loss"].append(utility.item())
        totals["verifier_loss"].append(verifier_loss.item())
    return {key: float(np.mean(values)) for key, values in totals.items()}


def _describe(record: dict[str, Any]) -> str:
    return ", ".join(
        f"{key} {value:.4f}"
        for key, value in record.items()
        if isinstance(value, float) and key != "seconds"
    )
