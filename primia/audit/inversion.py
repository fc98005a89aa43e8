"""The gradient-inversion audit: simulate what an observer sees, attack it, score it.

For each defense asked for, the audit draws batches from the node's dataset, computes the
update the observer sees (:mod:`primia.audit.release`), recovers labels where the attack
uses them (:mod:`primia.audit.labels`), runs the attack (:mod:`primia.audit.attacks`),
matches reconstructions to originals optimally and scores them against the dataset's mean
image (:mod:`primia.audit.metrics`), and writes the report (:mod:`primia.audit.report`).

>>> config = InversionConfig(data=Path("data/synth"), defenses=("none", "dp"))
>>> config.batch_size, config.images, config.attack.name.value
(1, 8, 'ig')
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import Tensor, nn

from primia.audit.analytic import features_of
from primia.audit.attacks import Advance, AttackConfig, Reconstruction, invert
from primia.audit.consistency import consistency_refusal
from primia.audit.feature_attacks import Knowledge, feature_attack
from primia.audit.labels import recover_labels
from primia.audit.linking import link_with_verifier
from primia.audit.metrics import match, score_images
from primia.audit.prior import fit_decoder, public_images
from primia.audit.release import Defense, UpdateRule, epsilon_cost, observe
from primia.audit.report import ReportFiles, write_report
from primia.audit.results import AttackOutcome, InversionAudit, discount_chance, summarize
from primia.audit.threats import Threat, craft, observe_crafted, sent_to_nodes
from primia.audit.verifier import load_verifier
from primia.data import RadiographDataset, Task, open_dataset
from primia.errors import ConfigError, ModelError
from primia.models import build_model
from primia.models.checkpoint import ModelSpec, find_checkpoint, load_model, read_spec
from primia.models.registry import default_width
from primia.train.local import resolve_device
from primia.train.loops import to_float

DEFAULT_MODEL = "resnet9"
DEFAULT_IMAGE_SIZE = 64
GALLERY_CHUNK = 256
"""Images per forward pass when the gallery's features are computed."""


@dataclass(frozen=True)
class InversionConfig:
    """Everything an inversion audit needs. With a ``checkpoint``, its spec says what model
    it holds (``model`` and ``width`` may only repeat it) and ``image_size`` defaults to the
    one it was trained at; without, they default to resnet9, the model's width and 64 px."""

    data: Path
    out: Path | None = None
    model: str | None = None
    width: int | None = None
    image_size: int | None = None
    checkpoint: Path | None = None
    attack: AttackConfig = field(default_factory=AttackConfig)
    defenses: tuple[str, ...] = ("none",)
    batch_size: int = 1
    images: int = 8
    nodes: int = 4
    local_steps: int = 1
    local_lr: float = 0.1
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    verifier: Path | None = None
    """A verifier from ``primia audit reid``: also judge whether each reconstruction links
    back to its patient (:mod:`primia.audit.linking`)."""
    threat: str = "honest"
    """What the coordinator sends (:class:`primia.audit.threats.Threat`): the model as it
    is (``honest``), trap weights to every node (``trap``), or trap weights to the target
    and others to the rest (``inconsistent``)."""
    public: Path | None = None
    """The attacker's public images for the learned prior (another site's dataset); None:
    a synthetic set (:func:`primia.audit.prior.public_images`)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.images < 1:
            raise ConfigError(
                f"batch size and images must be at least 1, got {self.batch_size} and {self.images}"
            )
        if not self.defenses:
            raise ConfigError("name at least one defense: none, dp or secagg")
        for name in self.defenses:
            if name not in {d.value for d in Defense}:
                raise ConfigError(f"unknown defense {name!r}; choose none, dp or secagg")
        if not 0 < self.delta < 1:
            raise ConfigError(f"delta must be in (0, 1), got {self.delta}")
        if self.threat not in {t.value for t in Threat}:
            raise ConfigError(
                f"unknown threat {self.threat!r}; choose honest, trap or inconsistent"
            )

    def rule(self, defense: str) -> UpdateRule:
        return UpdateRule(
            defense=Defense(defense),
            local_steps=self.local_steps,
            local_lr=self.local_lr,
            max_grad_norm=self.max_grad_norm,
            noise_multiplier=self.noise_multiplier,
            nodes=self.nodes,
        )

    def settings(self, defense: str, spec: ModelSpec, image_size: int) -> dict[str, Any]:
        """The options that shaped one defense's audit, as plain values for the report."""
        rule = self.rule(defense)
        values: dict[str, Any] = {
            "data": str(self.data),
            "model": spec.architecture,
            # None means the architecture's default: report the number it stands for
            "width": spec.width or default_width(spec.architecture) or "fixed",
            "image_size": image_size,
            "checkpoint": str(self.checkpoint) if self.checkpoint else "none (untrained)",
            "attack": self.attack.name.value,
            "threat": self.threat,
            "iterations": self.attack.steps,
            "restarts": self.attack.restarts,
            "attack_learning_rate": self.attack.lr,
            "tv_weight": self.attack.tv_weight,
            "defense": defense,
            "batch_size": self.batch_size,
            "images": self.images,
            "local_steps": rule.local_steps,
            "local_lr": rule.local_lr,
            "seed": self.seed,
        }
        if rule.defense is Defense.DP:
            values |= {
                "noise_multiplier": rule.noise_multiplier,
                "max_grad_norm": rule.max_grad_norm,
                "delta": self.delta,
            }
        if rule.defense is Defense.SECAGG:
            values["nodes"] = rule.nodes
        return values


@dataclass(frozen=True)
class InversionRun:
    audits: list[InversionAudit]
    files: ReportFiles | None


def run_inversion_audit(config: InversionConfig) -> InversionRun:
    """Audit every defense of ``config``; write the report when ``config.out`` is set."""
    image_size = config.image_size
    if image_size is None and config.checkpoint is not None:
        image_size = read_spec(find_checkpoint(config.checkpoint)).image_size
    dataset = open_dataset(config.data, image_size=image_size or DEFAULT_IMAGE_SIZE)
    model, spec = _load_model(config, dataset)
    device = resolve_device(config.device)
    model = model.to(device).eval()
    images = to_float(dataset.uint8_tensors()[0], torch.device("cpu"))
    prior = images.mean(dim=0)
    crafted = craft(Threat(config.threat), model, task=dataset.task, image_size=dataset.image_size)
    knowledge = Knowledge(model, None, prior.unsqueeze(0), crafted)
    if config.attack.from_features:
        public = public_images(config.public, image_size=dataset.image_size)
        sent = crafted.target if crafted is not None else model
        # An imprint decodes the features exactly: no learned prior to fit then.
        decoder = None
        if crafted is None or crafted.decode is None:
            with torch.random.fork_rng():
                decoder = fit_decoder(sent, public)
        knowledge = Knowledge(
            model, decoder, public.mean(0, keepdim=True), crafted, _gallery(sent, images, device)
        )
    audits = [
        _audit(config, defense, model, spec, dataset, images, prior, device, knowledge)
        for defense in config.defenses
    ]
    if config.verifier is not None:
        verifier, verifier_spec = load_verifier(config.verifier)
        if verifier_spec.image_size != dataset.image_size:
            raise ConfigError(
                f"the verifier was trained at {verifier_spec.image_size} px, the audit runs "
                f"at {dataset.image_size} px: train it at --image-size {dataset.image_size}"
            )
        audits = [
            link_with_verifier(
                audit, verifier, reference=images, patient_ids=dataset.patient_ids, device=device
            )
            for audit in audits
        ]
    files = write_report(audits, config.out) if config.out is not None else None
    return InversionRun(audits, files)


@torch.no_grad()
def _gallery(sent: nn.Module, images: Tensor, device: torch.device) -> Tensor:
    """The features of the node's dataset through the model the attacker sent: the
    attacker's gallery for re-identification by features (it holds these images, as the
    pixel re-identification assumes)."""
    return torch.cat(
        [
            features_of(sent, images[start : start + GALLERY_CHUNK].to(device)).cpu()
            for start in range(0, len(images), GALLERY_CHUNK)
        ]
    )


def _load_model(config: InversionConfig, dataset: RadiographDataset) -> tuple[nn.Module, ModelSpec]:
    """The attacked model: the checkpoint's, or a freshly initialised one (seeded)."""
    if config.checkpoint is None:
        spec = ModelSpec(
            config.model or DEFAULT_MODEL,
            num_outputs=dataset.num_outputs,
            width=config.width,
            image_size=dataset.image_size,
            task=dataset.task.value,
            label_names=dataset.label_names,
        )
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            return build_model(
                spec.architecture, num_classes=spec.num_outputs, width=spec.width
            ), spec
    model, spec = load_model(find_checkpoint(config.checkpoint))
    if config.model is not None and config.model != spec.architecture:
        raise ModelError(
            f"{config.checkpoint} holds a {spec.architecture}, not a {config.model}: leave out "
            "--model (the checkpoint says what it holds) or pass a checkpoint of that model"
        )
    if config.width is not None and config.width != spec.width:
        raise ModelError(
            f"{config.checkpoint} holds a model of width {spec.width}, not {config.width}: "
            "leave out --width or pass a checkpoint of that width"
        )
    if spec.num_outputs != dataset.num_outputs:
        raise ModelError(
            f"{config.checkpoint} predicts {spec.num_outputs} outputs but {config.data} has "
            f"{dataset.num_outputs} ({', '.join(dataset.label_names)}): audit the model on the "
            "kind of data it was trained for"
        )
    return model, spec


def _audit(
    config: InversionConfig,
    defense: str,
    model: nn.Module,
    spec: ModelSpec,
    dataset: RadiographDataset,
    images: Tensor,
    prior: Tensor,
    device: torch.device,
    knowledge: Knowledge,
) -> InversionAudit:
    rule = config.rule(defense)
    attacks = math.ceil(config.images / config.batch_size)
    per_attack = rule.groups * config.batch_size
    needed = attacks * per_attack
    if needed > len(dataset):
        raise ConfigError(
            f"{defense}: {attacks} attack(s) on {rule.groups} node(s) × batch "
            f"{config.batch_size} need {needed} distinct images, but {config.data} holds "
            f"{len(dataset)}: lower --images, --batch-size or --nodes"
        )
    order = np.random.default_rng(config.seed).permutation(len(dataset))[:needed]
    noise = torch.Generator().manual_seed(config.seed)
    reference = images[:, 0].numpy()
    outcomes: list[AttackOutcome] = []
    total = attacks * config.attack.restarts * config.attack.steps
    with _progress(config.progress, f"{config.attack.name.value} vs {defense}", total) as advance:
        for chosen in np.split(order, attacks):
            outcomes.append(
                _attack_once(
                    config,
                    rule,
                    model,
                    dataset,
                    images,
                    prior,
                    reference,
                    chosen,
                    noise,
                    device,
                    advance,
                    knowledge,
                )
            )
    epsilon = None
    if rule.defense is Defense.DP:
        epsilon = epsilon_cost(
            rule, batch_size=config.batch_size, dataset_size=len(dataset), delta=config.delta
        )
    # Each image's re-identification is judged against chance over the whole audit.
    outcomes = discount_chance(outcomes)
    crafted = knowledge.crafted
    refusal = None
    if rule.defense is Defense.SECAGG:
        # The check belongs to secure rounds: plaintext updates need no inconsistency.
        refusal = consistency_refusal(sent_to_nodes(crafted, model, rule.nodes), spec)
    notes = _notes(config, rule, epsilon, len(dataset))
    if crafted is not None:
        notes += [f"Crafted by the coordinator: {note}." for note in crafted.notes]
        notes.append(
            "primia's node policy (accepted architectures and widths) accepts these weights: "
            "they keep the architecture and width; only their values are crafted."
        )
    return InversionAudit(
        settings=config.settings(defense, spec, dataset.image_size),
        prior=prior[0].numpy(),
        outcomes=outcomes,
        summary=summarize(outcomes),
        epsilon=epsilon,
        notes=notes,
        refusal=refusal,
    )


def _attack_once(
    config: InversionConfig,
    rule: UpdateRule,
    model: nn.Module,
    dataset: RadiographDataset,
    images: Tensor,
    prior: Tensor,
    reference: np.ndarray,
    chosen: np.ndarray,
    noise: torch.Generator,
    device: torch.device,
    advance: Advance,
    knowledge: Knowledge,
) -> AttackOutcome:
    task = dataset.task
    targets = torch.stack([dataset.target(int(i)) for i in chosen])
    batch_images = images[chosen]
    batches = [
        (part.to(device), part_targets.to(device))
        for part, part_targets in zip(
            batch_images.chunk(rule.groups), targets.chunk(rule.groups), strict=True
        )
    ]
    started = time.perf_counter()
    if knowledge.crafted is not None:
        observed = observe_crafted(knowledge.crafted, batches, task, rule, generator=noise)
    else:
        observed = observe(model, batches, task, rule, generator=noise)
    found = _reconstruct(
        config,
        rule,
        model,
        task,
        observed,
        batch_images.shape,
        prior,
        device,
        dataset.num_outputs,
        advance,
        knowledge,
    )
    seconds = time.perf_counter() - started
    originals = batch_images[:, 0].numpy()
    reconstructions = found.images[:, 0].numpy()
    matched = match(reconstructions, originals)
    features = None
    if found.features is not None and knowledge.gallery is not None:
        features = found.features.numpy()[matched]
    scores = score_images(
        originals,
        reconstructions[matched],
        prior=prior[0].numpy(),
        dataset_indices=chosen,
        reference=reference,
        reference_patient_ids=dataset.patient_ids,
        label_accuracies=_label_accuracies(found.labels[matched], targets, task),
        features=features,
        reference_features=None if knowledge.gallery is None else knowledge.gallery.numpy(),
    )
    return AttackOutcome(originals, reconstructions[matched], scores, seconds, found.loss)


def _reconstruct(
    config: InversionConfig,
    rule: UpdateRule,
    model: nn.Module,
    task: Task,
    observed: list[Tensor],
    shape: torch.Size,
    prior: Tensor,
    device: torch.device,
    num_outputs: int,
    advance: Advance,
    knowledge: Knowledge,
) -> Reconstruction:
    if config.attack.from_features:
        return feature_attack(
            config.attack,
            knowledge,
            observed=observed,
            task=task,
            rule=rule,
            shape=tuple(shape),
            advance=advance,
        )
    if knowledge.crafted is not None:
        model = knowledge.crafted.target
    labels = None
    if config.attack.recovers_labels_first:
        scale = rule.local_lr * rule.local_steps if rule.local_steps > 1 else 1.0
        labels = recover_labels(
            model,
            observed,
            task=task,
            count=shape[0],
            prior=prior.unsqueeze(0).to(device),
            update_scale=scale,
        )
    return invert(
        config.attack,
        model=model,
        observed=observed,
        task=task,
        rule=rule,
        shape=tuple(shape),
        labels=labels,
        num_outputs=num_outputs,
        advance=advance,
    )


def _label_accuracies(recovered: Tensor, true: Tensor, task: Task) -> list[float]:
    """Per image: 1/0 for the class (multiclass), the fraction of labels right otherwise."""
    if task is Task.MULTICLASS:
        return (recovered == true).to(torch.float32).tolist()
    return (recovered.round() == true).to(torch.float32).mean(dim=1).tolist()


def _notes(
    config: InversionConfig, rule: UpdateRule, epsilon: float | None, dataset_size: int
) -> list[str]:
    notes: list[str] = []
    what = "gradient"
    if rule.local_steps > 1:
        what = f"weight delta after {rule.local_steps} SGD steps at learning rate {rule.local_lr}"
    if rule.defense is Defense.SECAGG:
        notes.append(
            f"The observer sees only the mean {what} of {rule.nodes} nodes with "
            f"{config.batch_size} images each, so each attack faces "
            f"{rule.nodes * config.batch_size} images; all of them are scored."
        )
    else:
        notes.append(f"The observer sees one node's {what} on a batch of {config.batch_size}.")
    if epsilon is not None:
        notes.append(
            f"This DP update (σ = {rule.noise_multiplier}, clipping norm "
            f"{rule.max_grad_norm}, sampling rate {config.batch_size}/{dataset_size}, "
            f"{rule.local_steps} step(s)) alone costs ε = {epsilon:.3g} at δ = {config.delta:g}."
        )
    if config.attack.recovers_labels_first and config.batch_size * rule.groups > 1:
        notes.append(
            "Labels: with more than one image the update reveals how many images carry each "
            "label, not which; the attack assigns them."
        )
    return notes


@contextmanager
def _progress(enabled: bool, title: str, total: int) -> Iterator[Advance]:
    progress = Progress(
        TextColumn(f"[bold]{title}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )
    task = progress.add_task(title, total=total)
    with progress:
        yield lambda done: progress.advance(task, done)
