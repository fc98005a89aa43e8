"""Attacks that start from the head: analytic features, a learned prior, gradient matching.

* ``analytic``: the features and labels the last Linear layer's update gives away
  (:mod:`primia.audit.analytic`) are turned into images, exactly where the coordinator's
  crafted weights make the features invertible (:mod:`primia.audit.threats`), otherwise by
  the decoder learned on public images (:mod:`primia.audit.prior`). An image whose
  features were not isolated is drawn as the prior (the public images' mean).
* ``feature-ig``: the analytic images as the start, refined by Adam on the signed gradient
  (Inverting Gradients' schedule) of

      1 − cos(u(x, ŷ), o) + α·TV(x) + ‖φ(x_i) − h_i‖² / ‖h_i‖² (over the isolated images),

  the full-gradient match of Geiping et al. with the recovered features as an extra
  anchor; ``restarts`` starts (the first from the analytic images, the others from them
  plus Gaussian noise of standard deviation 0.1·r), the best by the gradient term (the
  analytic images themselves included, so refining never ends worse by that term). Under
  a crafted head the gradient is the head's rows, which the feature term already matches,
  so only the feature and TV terms are optimised there.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from primia.audit.analytic import HeadRecovery, features_of, recover_from_head
from primia.audit.attacks import (
    Advance,
    AttackConfig,
    AttackName,
    Reconstruction,
    cosine_distance,
    total_variation,
)
from primia.audit.labels import last_linear, recover_labels
from primia.audit.prior import FeatureDecoder
from primia.audit.release import Update, UpdateRule, simulate
from primia.audit.threats import Crafted
from primia.data.dataset import Task

RESTART_NOISE = 0.1


@dataclass(frozen=True)
class Knowledge:
    """What the attacker holds besides the update: the model it sent, the public images'
    decoder and mean image, the coordinator's crafted weights (None when honest), and the
    features of its gallery (the images it would re-identify against) through the model
    it sent, ``[N, F]`` (None when it compares no features)."""

    model: nn.Module
    decoder: FeatureDecoder | None
    prior: Tensor
    crafted: Crafted | None
    gallery: Tensor | None = None


def feature_attack(
    config: AttackConfig,
    knowledge: Knowledge,
    *,
    observed: Update,
    task: Task,
    rule: UpdateRule,
    shape: tuple[int, ...],
    advance: Advance = lambda _: None,
) -> Reconstruction:
    """Run ``analytic`` or ``feature-ig`` on one observed update of ``shape[0]`` images."""
    count = shape[0]
    per_node = count // rule.groups
    crafted = knowledge.crafted
    model = crafted.target if crafted is not None else knowledge.model
    device = observed[0].device
    prior = knowledge.prior.to(device)
    scale = rule.local_lr * rule.local_steps if rule.local_steps > 1 else 1.0
    if crafted is None and rule.groups > 1:
        # An honest secure sum: every node fills the head's rows; the mean is over n·B.
        batch = count
    else:
        batch = per_node
        scale /= rule.groups
    recovery = recover_from_head(
        model,
        observed,
        task=task,
        batch_size=batch,
        prior=prior,
        counting=crafted.counting if crafted is not None else None,
        scale=scale,
    )
    slots = list(recovery.features)[:count]
    labels = _labels(model, observed, recovery, slots, task, count, prior, scale)
    start = prior.expand(count, *prior.shape[1:]).clone()
    targets = torch.stack([recovery.features[j] for j in slots]).to(device) if slots else None
    if targets is not None:
        decode = crafted.decode if crafted is not None and crafted.decode is not None else None
        if decode is not None:
            start[: len(slots)] = decode(targets).to(device)
        elif knowledge.decoder is not None:
            start[: len(slots)] = knowledge.decoder.decode(targets).to(device)
    # The recovered features themselves, exact where isolated: the re-identification by
    # features compares these, not the features of the images drawn from them.
    recovered = torch.full((count, _feature_count(model)), math.nan)
    if targets is not None:
        recovered[: len(slots)] = targets.cpu()
    exact = crafted is not None and crafted.decode is not None
    if config.name is AttackName.ANALYTIC or exact:
        advance(config.restarts * config.steps)
        return Reconstruction(start.cpu(), labels.cpu(), math.nan, recovered)
    best: Reconstruction | None = None
    if crafted is None:
        with torch.enable_grad():
            start_loss = cosine_distance(simulate(model, start, labels, task, rule), observed)
        best = Reconstruction(start.cpu(), labels.cpu(), float(start_loss.detach()), recovered)
    for restart in range(config.restarts):
        generator = torch.Generator().manual_seed(config.seed + restart)
        noise = torch.randn(start.shape, generator=generator).to(device)
        initial = (start + RESTART_NOISE * restart * noise).clamp(0, 1)
        found = _refine(
            config, model, observed, task, rule, initial, labels, targets, crafted, advance
        )
        if best is None or not math.isfinite(best.loss) or found.loss < best.loss:
            best = dataclasses.replace(found, features=recovered)
    assert best is not None
    return best


def _feature_count(model: nn.Module) -> int:
    """F, the number of input features of the model's last Linear layer."""
    return last_linear(model)[1].in_features


def _labels(
    model: nn.Module,
    observed: Update,
    recovery: HeadRecovery,
    slots: list[int],
    task: Task,
    count: int,
    prior: Tensor,
    scale: float,
) -> Tensor:
    """Batch 1: the exact labels; larger: LLG's counting, with each isolated image (the
    first slots) given the label that isolates it and no other image that label."""
    if recovery.labels is not None and count == 1:
        return recovery.labels.to(prior.device)
    labels = recover_labels(
        model, observed, task=task, count=count, prior=prior, update_scale=scale
    ).to(prior.device)
    for slot, j in enumerate(slots):
        if task is Task.MULTICLASS:
            labels[slot] = j
        else:
            labels[:, j] = 0
            labels[slot, j] = 1
    return labels


def _refine(
    config: AttackConfig,
    model: nn.Module,
    observed: Update,
    task: Task,
    rule: UpdateRule,
    start: Tensor,
    labels: Tensor,
    targets: Tensor | None,
    crafted: Crafted | None,
    advance: Advance,
) -> Reconstruction:
    images = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([images], lr=config.lr)
    steps = config.steps
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[steps * 3 // 8, steps * 5 // 8, steps * 7 // 8], gamma=0.1
    )

    def gradient_term() -> Tensor:
        if crafted is not None:
            return torch.zeros((), device=start.device)
        return cosine_distance(simulate(model, images, labels, task, rule), observed)

    def feature_term() -> Tensor:
        if targets is None:
            return torch.zeros((), device=start.device)
        found = features_of(model, images[: len(targets)])
        return (((found - targets) ** 2).sum(1) / (targets**2).sum(1).clamp_min(1e-12)).mean()

    for _ in range(steps):
        optimizer.zero_grad()
        objective = gradient_term() + feature_term() + config.tv_weight * total_variation(images)
        (gradient,) = torch.autograd.grad(objective, images)
        images.grad = gradient.sign()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            images.clamp_(0, 1)
        advance(1)
    with torch.no_grad() if crafted is not None else torch.enable_grad():
        loss = gradient_term() if crafted is None else feature_term()
    return Reconstruction(images.detach().cpu(), labels.cpu(), float(loss.detach()))
