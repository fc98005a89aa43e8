"""What leaves a node, and what an observer of it sees: the audit's threat models.

A node turns its batch of B images into an update by the *update rule*, which the
attacker knows (it is the federation's published plan):

* one local step: the gradient g = ∇_θ (1/B) Σ_i ℓ(f_θ(x_i), y_i);
* K local steps of SGD at learning rate η on the same batch (FedAvg): the weight delta
  θ_0 − θ_K, with θ_{t+1} = θ_t − η g(θ_t);
* DP-SGD (:mod:`primia.train.fast_dp`): every per-sample gradient clipped to norm C, and
  Gaussian noise N(0, σ²C²I) added to their sum before dividing by B, at every step.

The observer is one of (:class:`Defense`):

* ``none``: the coordinator without secure aggregation sees one node's update;
* ``dp``: it sees one node's DP-SGD update, which costs the node ε (:func:`epsilon_cost`);
* ``secagg``: with secure aggregation it sees only the mean of n nodes' updates (equal
  batch sizes, so the FedAvg weights are equal), exactly as the federation's protocol
  reveals it (:func:`secure_mean`); the attack then faces n·B images.

:func:`observe` computes what the observer sees; :func:`simulate` is the same computation
on the attacker's dummy images, differentiable and without noise (the attacker cannot know
the noise), which the attacks of :mod:`primia.audit.attacks` fit to the observation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from primia.crypto.ring import FixedPoint
from primia.data.dataset import Task
from primia.errors import ConfigError
from primia.federated.coordinator_config import SecureAggregationConfig
from primia.train.accounting import Mechanism, epsilon_of
from primia.train.losses import criterion_for

Update = list[Tensor]
"""One tensor per trainable parameter, in ``model.named_parameters()`` order."""


class Defense(StrEnum):
    NONE = "none"
    DP = "dp"
    SECAGG = "secagg"


@dataclass(frozen=True)
class UpdateRule:
    """How a node turns a batch into its update. ``max_grad_norm`` (C) and
    ``noise_multiplier`` (σ) apply to DP only; ``nodes`` (n) to secure aggregation only."""

    defense: Defense = Defense.NONE
    local_steps: int = 1
    local_lr: float = 0.1
    max_grad_norm: float = 1.0
    noise_multiplier: float = 1.0
    nodes: int = 4

    def __post_init__(self) -> None:
        if self.local_steps < 1:
            raise ConfigError(f"local steps must be at least 1, got {self.local_steps}")
        if self.local_lr <= 0:
            raise ConfigError(f"the local learning rate must be positive, got {self.local_lr}")
        if self.defense is Defense.DP and (self.max_grad_norm <= 0 or self.noise_multiplier < 0):
            raise ConfigError(
                "DP needs a positive clipping norm and a non-negative noise multiplier, got "
                f"C={self.max_grad_norm}, σ={self.noise_multiplier}"
            )
        if self.defense is Defense.SECAGG and self.nodes < 2:
            raise ConfigError(
                f"secure aggregation needs at least 2 nodes, got {self.nodes}; "
                "with one node the aggregate is that node's update (use --defense none)"
            )

    @property
    def groups(self) -> int:
        """How many nodes' batches are behind one observed update."""
        return self.nodes if self.defense is Defense.SECAGG else 1

    @property
    def clips(self) -> bool:
        return self.defense is Defense.DP


def inner(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """⟨a, b⟩ with every parameter's tensor flattened into one vector."""
    return torch.stack([(x * y).sum() for x, y in zip(a, b, strict=True)]).sum()


def trainable(model: nn.Module) -> dict[str, Tensor]:
    """The model's trainable parameters as fresh leaves, so an update can be taken with
    respect to them without touching the model."""
    return {
        name: p.detach().requires_grad_(True)
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def _gradient(
    model: nn.Module,
    params: dict[str, Tensor],
    images: Tensor,
    targets: Tensor,
    task: Task,
    *,
    clip: float | None,
    create_graph: bool,
) -> Update:
    """∇ of the batch's mean loss; with ``clip``, Σ_i clip_C(∇ℓ_i) / B instead."""
    losses = criterion_for(task, reduction="none")(
        functional_call(model, params, (images,)), targets
    )
    values = list(params.values())
    if clip is None:
        return list(torch.autograd.grad(losses.mean(), values, create_graph=create_graph))
    total: Update = [torch.zeros_like(v) for v in values]
    for loss in losses:
        per_sample = torch.autograd.grad(loss, values, create_graph=create_graph, retain_graph=True)
        norm = torch.sqrt(inner(per_sample, per_sample))
        # Opacus' clipping factor, 1e-6 included (as in primia.train.fast_dp)
        factor = torch.clamp(clip / (norm + 1e-6), max=1.0)
        total = [t + factor * g for t, g in zip(total, per_sample, strict=True)]
    return [t / len(losses) for t in total]


def node_update(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    task: Task,
    rule: UpdateRule,
    *,
    noise: torch.Generator | None = None,
    create_graph: bool = False,
) -> Update:
    """One node's update from its batch: the gradient (one step) or θ_0 − θ_K (K steps).

    ``noise``: draw DP's Gaussian noise from this generator (the node's real update);
    None leaves it out (the attacker's simulation).
    """
    start = trainable(model)
    params = dict(start)
    clip = rule.max_grad_norm if rule.clips else None
    for _ in range(rule.local_steps):
        grads = _gradient(
            model, params, images, targets, task, clip=clip, create_graph=create_graph
        )
        if noise is not None and rule.clips:
            std = rule.noise_multiplier * rule.max_grad_norm / len(images)
            grads = [
                g + std * torch.randn(g.shape, generator=noise).to(g.device, g.dtype) for g in grads
            ]
        if rule.local_steps == 1:
            return grads
        params = {
            name: value - rule.local_lr * g
            for (name, value), g in zip(params.items(), grads, strict=True)
        }
    return [start[name] - params[name] for name in start]


def observe(
    model: nn.Module,
    batches: Sequence[tuple[Tensor, Tensor]],
    task: Task,
    rule: UpdateRule,
    *,
    generator: torch.Generator,
) -> Update:
    """What the observer sees: the mean of the nodes' updates, one batch per node
    (``len(batches) == rule.groups``)."""
    if len(batches) != rule.groups:
        raise ValueError(f"{rule.defense} observes {rule.groups} batches, got {len(batches)}")
    updates = [
        node_update(model, images, targets, task, rule, noise=generator)
        for images, targets in batches
    ]
    if rule.defense is Defense.SECAGG:
        seed = int(torch.randint(2**62, (1,), generator=generator))
        return secure_mean(updates, np.random.default_rng(seed))
    return [update.detach() for update in updates[0]]


def secure_mean(updates: Sequence[Update], rng: np.random.Generator) -> Update:
    """The mean of the updates as secure aggregation reveals it to the coordinator.

    Each node encodes its flattened update in fixed point (the federation's default
    encoding: :class:`~primia.federated.coordinator_config.SecureAggregationConfig`, a 32-bit ring,
    values clipped to ±8, stochastic rounding) and the protocol of
    :mod:`primia.crypto.secagg` reveals the ring sum of the encodings (the pairwise masks
    cancel exactly; ``tests/unit/test_secagg.py``), which the coordinator decodes and
    divides by n. So the observer's view differs from the exact mean only by the
    encoding's clipping and rounding (resolution 8n/2^31).
    """
    defaults = SecureAggregationConfig()
    encoding = FixedPoint.for_sum(
        summands=len(updates), clip=defaults.clip, bits=defaults.ring_bits
    )
    total = np.zeros(sum(t.numel() for t in updates[0]), dtype=encoding.dtype)
    for update in updates:
        flat = torch.cat([t.detach().flatten() for t in update]).double().cpu().numpy()
        total += encoding.encode(flat, rng).values  # wraps mod 2^k, as the ring does
    mean = torch.from_numpy(encoding.decode(total) / len(updates))
    template = updates[0]
    parts = mean.split([t.numel() for t in template])
    return [part.view_as(t).to(t.device, t.dtype) for part, t in zip(parts, template, strict=True)]


def simulate(
    model: nn.Module, images: Tensor, targets: Tensor, task: Task, rule: UpdateRule
) -> Update:
    """:func:`observe` on the attacker's dummy batch of ``groups × B`` images, noise left
    out, differentiable with respect to ``images`` and ``targets``."""
    updates = [
        node_update(model, part_images, part_targets, task, rule, create_graph=True)
        for part_images, part_targets in zip(
            images.chunk(rule.groups), targets.chunk(rule.groups), strict=True
        )
    ]
    if len(updates) == 1:
        return updates[0]
    return [torch.stack(parts).mean(dim=0) for parts in zip(*updates, strict=True)]


def epsilon_cost(rule: UpdateRule, *, batch_size: int, dataset_size: int, delta: float) -> float:
    """ε of one DP update: K steps of the subsampled Gaussian mechanism with sampling rate
    q = B/N (the node's dataset of N images), at ``delta``."""
    sample_rate = min(1.0, batch_size / dataset_size)
    mechanism = Mechanism(rule.noise_multiplier, sample_rate, rule.local_steps)
    return epsilon_of([mechanism], delta=delta)
