"""Gradient-inversion attacks: find images whose update matches the observed one.

Each attack optimises dummy images x (and, for DLG, dummy labels) so that the update
:func:`primia.audit.release.simulate` computes from them matches the observed update o:

* **DLG** (Zhu et al., NeurIPS 2019): L-BFGS on the squared distance Σ‖u(x, ŷ) − o‖²,
  with the labels ŷ = σ(λ) (softmax for multiclass) optimised jointly from random λ.
* **iDLG** (Zhao et al., 2020): DLG with the labels recovered analytically first
  (:func:`primia.audit.labels.recover_labels`), so only the images are optimised.
* **analytic** and **feature-ig** start from the features and labels the last Linear
  layer gives away, with a prior learned from public images
  (:mod:`primia.audit.feature_attacks`).
* **Inverting Gradients** (Geiping et al., NeurIPS 2020): minimise
  1 − ⟨u(x, y), o⟩ / (‖u(x, y)‖‖o‖) + α·TV(x) with Adam on the *signed* gradient, the
  step size divided by 10 at 3/8, 5/8 and 7/8 of the iterations, x kept in the box
  [0, 1]; several restarts from uniform noise, the best by the cosine term. Cosine
  similarity ignores the update's scale, which clipping and the learning rate change.

With several local steps (the update rule's ``local_steps``) the same attacks invert the
weight delta, differentiating through the unrolled steps: the FedAvg variant of Geiping et
al. The attacks never see the originals; the caller scores what they return.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import torch
from torch import Tensor, nn

from primia.audit.release import Update, UpdateRule, inner, simulate
from primia.data.dataset import Task
from primia.errors import ConfigError

Advance = Callable[[int], None]
"""Called with the number of iterations just done, for progress bars."""


class AttackName(StrEnum):
    DLG = "dlg"
    IDLG = "idlg"
    IG = "ig"
    ANALYTIC = "analytic"
    FEATURE_IG = "feature-ig"


FEATURE_ATTACKS = frozenset({AttackName.ANALYTIC, AttackName.FEATURE_IG})
"""Attacks that start from the last Linear layer (:mod:`primia.audit.feature_attacks`)."""

DEFAULT_ITERATIONS = {
    AttackName.DLG: 300,
    AttackName.IDLG: 300,
    AttackName.IG: 2000,
    AttackName.ANALYTIC: 1,
    AttackName.FEATURE_IG: 300,
}
DEFAULT_LEARNING_RATE = {
    AttackName.DLG: 1.0,
    AttackName.IDLG: 1.0,
    AttackName.IG: 0.1,
    AttackName.ANALYTIC: 1.0,
    AttackName.FEATURE_IG: 0.003,
}
LBFGS_CHUNK = 10
"""L-BFGS iterations per optimizer call, so progress is reported as it goes."""


@dataclass(frozen=True)
class AttackConfig:
    """An attack and its options; None picks the attack's default (the tables above)."""

    name: AttackName = AttackName.IG
    iterations: int | None = None
    restarts: int = 1
    learning_rate: float | None = None
    tv_weight: float = 1e-6
    seed: int = 0

    def __post_init__(self) -> None:
        if self.iterations is not None and self.iterations < 1:
            raise ConfigError(f"iterations must be at least 1, got {self.iterations}")
        if self.restarts < 1:
            raise ConfigError(f"restarts must be at least 1, got {self.restarts}")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise ConfigError(
                f"the attack's learning rate must be positive, got {self.learning_rate}"
            )
        if self.tv_weight < 0:
            raise ConfigError(f"the TV weight must be non-negative, got {self.tv_weight}")

    @property
    def steps(self) -> int:
        return self.iterations or DEFAULT_ITERATIONS[self.name]

    @property
    def lr(self) -> float:
        return self.learning_rate or DEFAULT_LEARNING_RATE[self.name]

    @property
    def recovers_labels_first(self) -> bool:
        return self.name in {AttackName.IDLG, AttackName.IG}

    @property
    def from_features(self) -> bool:
        return self.name in FEATURE_ATTACKS


@dataclass(frozen=True)
class Reconstruction:
    """Dummy images ``[n, C, S, S]`` in [0, 1] and their labels (as the loss takes them),
    on the CPU; ``loss`` is the matching term (cosine distance or squared distance).
    ``features``: ``[n, F]``, the last Linear layer's input the attack recovered for each
    image (a row of NaN where it recovered none); None for attacks that recover none."""

    images: Tensor
    labels: Tensor
    loss: float
    features: Tensor | None = None


def cosine_distance(update: Update, observed: Update) -> Tensor:
    """1 − cos(u, o) over all parameters as one vector."""
    norms = torch.sqrt(inner(update, update) * inner(observed, observed))
    return 1 - inner(update, observed) / norms.clamp_min(1e-30)


def squared_distance(update: Update, observed: Update) -> Tensor:
    differences = [u - o for u, o in zip(update, observed, strict=True)]
    return inner(differences, differences)


def total_variation(images: Tensor) -> Tensor:
    """Mean absolute difference of vertically and horizontally adjacent pixels."""
    vertical = (images[..., 1:, :] - images[..., :-1, :]).abs().mean()
    horizontal = (images[..., :, 1:] - images[..., :, :-1]).abs().mean()
    return vertical + horizontal


def invert(
    config: AttackConfig,
    *,
    model: nn.Module,
    observed: Update,
    task: Task,
    rule: UpdateRule,
    shape: tuple[int, ...],
    labels: Tensor | None,
    num_outputs: int,
    advance: Advance = lambda _: None,
) -> Reconstruction:
    """Run the configured attack; ``labels`` are the recovered ones (iDLG and IG need
    them; DLG ignores them). ``shape`` is the dummy batch's, ``[groups·B, C, S, S]``."""
    if config.from_features:
        raise ValueError(f"{config.name} runs in primia.audit.feature_attacks, not here")
    device = observed[0].device
    best: Reconstruction | None = None
    for restart in range(config.restarts):
        generator = torch.Generator().manual_seed(config.seed + restart)
        start = torch.rand(shape, generator=generator).to(device)
        if config.name is AttackName.IG:
            if labels is None:
                raise ValueError("Inverting Gradients needs recovered labels")
            found = _inverting_gradients(
                config, model, observed, task, rule, start, labels, advance
            )
        else:
            label_logits = torch.randn((shape[0], num_outputs), generator=generator).to(device)
            fixed = labels if config.recovers_labels_first else None
            found = _dlg(config, model, observed, task, rule, start, label_logits, fixed, advance)
        if best is None or not math.isfinite(best.loss) or found.loss < best.loss:
            best = found
    assert best is not None
    return best


def _inverting_gradients(
    config: AttackConfig,
    model: nn.Module,
    observed: Update,
    task: Task,
    rule: UpdateRule,
    start: Tensor,
    labels: Tensor,
    advance: Advance,
) -> Reconstruction:
    images = start.clone().requires_grad_(True)
    targets = labels.to(start.device)
    optimizer = torch.optim.Adam([images], lr=config.lr)
    steps = config.steps
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[steps * 3 // 8, steps * 5 // 8, steps * 7 // 8], gamma=0.1
    )
    for _ in range(steps):
        optimizer.zero_grad()
        distance = cosine_distance(simulate(model, images, targets, task, rule), observed)
        objective = distance + config.tv_weight * total_variation(images)
        (gradient,) = torch.autograd.grad(objective, images)
        images.grad = gradient.sign()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            images.clamp_(0, 1)
        advance(1)
    final = cosine_distance(simulate(model, images, targets, task, rule), observed)
    return Reconstruction(images.detach().cpu(), labels.cpu(), float(final.detach()))


def _soft_labels(logits: Tensor, task: Task) -> Tensor:
    return logits.softmax(dim=1) if task is Task.MULTICLASS else logits.sigmoid()


def _hard_labels(logits: Tensor, task: Task) -> Tensor:
    if task is Task.MULTICLASS:
        return logits.argmax(dim=1)
    return (logits > 0).to(torch.float32)


def _dlg(
    config: AttackConfig,
    model: nn.Module,
    observed: Update,
    task: Task,
    rule: UpdateRule,
    start: Tensor,
    label_logits: Tensor,
    fixed_labels: Tensor | None,
    advance: Advance,
) -> Reconstruction:
    images = start.clone().requires_grad_(True)
    variables = [images]
    if fixed_labels is None:
        label_logits.requires_grad_(True)
        variables.append(label_logits)
    optimizer = torch.optim.LBFGS(
        variables,
        lr=config.lr,
        max_iter=LBFGS_CHUNK,
        history_size=100,
        tolerance_grad=0.0,
        tolerance_change=0.0,
        line_search_fn="strong_wolfe",
    )

    def targets() -> Tensor:
        if fixed_labels is not None:
            return fixed_labels.to(start.device)
        return _soft_labels(label_logits, task)

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = squared_distance(simulate(model, images, targets(), task, rule), observed)
        loss.backward()
        return loss.detach()

    best_images, best_loss = images.detach().clone(), math.inf
    done = 0
    while done < config.steps:
        loss = float(optimizer.step(closure))
        chunk = min(LBFGS_CHUNK, config.steps - done)
        done += chunk
        advance(chunk)
        if not math.isfinite(loss):
            break  # L-BFGS diverged on a non-smooth model: keep the last finite point
        if loss <= best_loss:
            best_images, best_loss = images.detach().clone(), loss
    labels = fixed_labels if fixed_labels is not None else _hard_labels(label_logits.detach(), task)
    return Reconstruction(best_images.clamp(0, 1).cpu(), labels.cpu(), best_loss)
