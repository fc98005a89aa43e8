"""Malicious-coordinator threat models: crafted weights within the architecture a node accepts.

A coordinator that cheats chooses the weights it sends. It keeps the architecture and the
width (a node's policy, which checks structure, accepts them) and sets values:

* ``trap`` — every node gets the same crafted weights: the head's weights are zero and its
  bias −β (β = :data:`TRAP_BIAS`), so every image's output is ≈ 0 whatever it shows. Then
  e_ij = σ(−β) − y_ij ≈ −y_ij is known without the image, no gradient reaches the layers
  below the head (its weights are zero), and head row j is −(1/(B·L)) times the sum of the
  features of the images carrying label j: an image alone with a label comes back as its
  exact features (:mod:`primia.audit.analytic`). Where the architecture permits, one
  feature is made constant (1 for every image: GroupNorm scale 0, shift 1 — ResNet-9 and
  the small CNN), which counts the images behind a row without the bias; and where a
  Linear layer sees the whole image through invertible maps (LeNet at 32 px, width ≥ 16:
  its convolutions are set to route every pixel to its own feature through the sigmoids,
  in the spirit of the imprint layer of "Robbing the Fed", Fowl et al. 2022), the
  features decode to the image exactly. Global pooling (ResNet-9, ResNet-18, the CNN)
  leaves no such layer: an imprint is not possible there, and images come from features
  by the learned prior instead (:mod:`primia.audit.prior`).
* ``inconsistent`` — model inconsistency (Pasquini et al., CCS 2022): the target node gets
  the trap weights, every other node weights that make its update zero except the head's
  bias (every parameter 0; the last layer before the head saturated to 0). Secure
  aggregation then reveals the target's head rows divided by n: it does not hide them.

primia's defence against the second is the model-consistency check: nodes compare the
SHA-256 of the global weights each received (inside their signed key advertisements) and
abort the round on a mismatch. The audit runs the nodes' own check on the weights
:func:`sent_to_nodes` gives each node (:mod:`primia.audit.consistency`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn

from primia.audit.analytic import head_parameters
from primia.audit.release import Defense, Update, UpdateRule, node_update, secure_mean
from primia.data.dataset import Task
from primia.errors import ModelError

TRAP_BIAS = 30.0
"""β: σ(−30) ≈ 9·10⁻¹⁴, so the head's outputs are 0 to float precision."""
SIGMOID_RANGE = 2.0
"""The pass-through keeps every sigmoid's input in [−2, 2], where it inverts precisely."""
DEAD_BIAS = -100.0
"""A sigmoid layer's bias that makes its output 0 (σ(−100) ≈ 4·10⁻⁴⁴) for the dead model."""


class Threat(StrEnum):
    HONEST = "honest"
    TRAP = "trap"
    INCONSISTENT = "inconsistent"


Decoder = Callable[[Tensor], Tensor]
"""Features ``[n, F]`` to images ``[n, C, S, S]``."""


@dataclass(frozen=True)
class Crafted:
    """What a cheating coordinator sends: ``target`` to the attacked node, ``others`` to
    every other node; ``counting`` is the index of a feature equal to 1 for every image
    (None where the architecture has none); ``decode`` maps features back to images exactly
    (None where no Linear layer sees the whole image); ``notes`` say what was crafted."""

    target: nn.Module
    others: nn.Module
    counting: int | None
    decode: Decoder | None
    notes: list[str]


def craft(threat: Threat, model: nn.Module, *, task: Task, image_size: int) -> Crafted | None:
    """The crafted models for ``threat`` (None for an honest coordinator)."""
    if threat is Threat.HONEST:
        return None
    target = copy.deepcopy(model)
    notes = ["trap head: zero weights, bias −30 (every output ≈ 0 whatever the image)"]
    decode = _pass_through(target, image_size)
    if decode is not None:
        notes.append(
            "imprint: the convolutions route every pixel to its own feature of the head "
            "(features decode to the image exactly)"
        )
    else:
        notes.append(
            "imprint: not possible in this architecture (no Linear layer sees the whole "
            "image: global pooling); images are drawn from the features by the learned prior"
        )
    counting = _counting_feature(target, image_size)
    if counting is not None:
        notes.append(f"counting feature: feature {counting} set to 1 for every image")
    _trap_head(target, task)
    others = target
    if threat is Threat.INCONSISTENT:
        others = _dead(model, task)
        notes.append(
            "model inconsistency: the other nodes get weights whose update is zero but for "
            "the head's bias, so the secure sum reveals the target's head rows"
        )
    return Crafted(target.eval(), others.eval(), counting, decode, notes)


def sent_to_nodes(crafted: Crafted | None, model: nn.Module, nodes: int) -> list[nn.Module]:
    """The weights each of ``nodes`` nodes received (node 0 is the target)."""
    if crafted is None:
        return [model] * nodes
    return [crafted.target] + [crafted.others] * (nodes - 1)


def observe_crafted(
    crafted: Crafted,
    batches: Sequence[tuple[Tensor, Tensor]],
    task: Task,
    rule: UpdateRule,
    *,
    generator: torch.Generator,
) -> Update:
    """:func:`primia.audit.release.observe` when the coordinator sent crafted weights: the
    first batch is the target's, trained on ``crafted.target``; the others on
    ``crafted.others``."""
    if len(batches) != rule.groups:
        raise ValueError(f"{rule.defense} observes {rule.groups} batches, got {len(batches)}")
    updates = [
        node_update(
            crafted.target if node == 0 else crafted.others,
            images,
            targets,
            task,
            rule,
            noise=generator,
        )
        for node, (images, targets) in enumerate(batches)
    ]
    if rule.defense is Defense.SECAGG:
        seed = int(torch.randint(2**62, (1,), generator=generator))
        return secure_mean(updates, np.random.default_rng(seed))
    return [update.detach() for update in updates[0]]


def _trap_head(model: nn.Module, task: Task) -> None:
    _, _, head = head_parameters(model)
    assert head.bias is not None  # head_parameters refuses a head without bias
    with torch.no_grad():
        head.weight.zero_()
        if task is Task.MULTICLASS:
            # Softmax outputs sum to 1: class 0 takes it all, the others are ≈ 0.
            head.bias.zero_()
            head.bias[0] = TRAP_BIAS
        else:
            head.bias.fill_(-TRAP_BIAS)


def _dead(model: nn.Module, task: Task) -> nn.Module:
    """Every parameter 0 (ReLU and GroupNorm layers then output 0) and sigmoid layers'
    biases at :data:`DEAD_BIAS`: the features are 0, so only the head's bias moves."""
    dead = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in dead.parameters():
            parameter.zero_()
        if isinstance(dead, nn.Sequential):
            for module in dead:
                if isinstance(module, nn.Conv2d) and module.bias is not None:
                    module.bias.fill_(DEAD_BIAS)
    _trap_head(dead, task)
    return dead


def _counting_feature(model: nn.Module, image_size: int) -> int | None:
    """Make feature 0 of the head's input equal 1 for every image where the architecture
    allows it with GroupNorm scale and shift; return its index (None where it does not)."""
    from primia.models.resnet import ResNet9

    with torch.no_grad():
        if isinstance(model, ResNet9):
            entry = _norm(model, "features.6.1")  # the GroupNorm before the last residual
            body = _norm(model, "features.8.body.1.1")  # the residual body's last GroupNorm
            entry.weight[0], entry.bias[0] = 0.0, 1.0
            body.weight[0], body.bias[0] = 0.0, 0.0
            return 0
        if _is_cnn(model):
            norm = _norm(model, "2.1")
            norm.weight[0], norm.bias[0] = 0.0, 1.0
            return 0
        if _is_lenet(model) and image_size == 32 and _conv(model, 4).out_channels >= 17:
            return 16 * 64  # channel 16 of the pass-through, position (0, 0)
    return None


def _norm(model: nn.Module, path: str) -> nn.GroupNorm:
    return cast(nn.GroupNorm, model.get_submodule(path))


def _conv(model: nn.Module, index: int) -> nn.Conv2d:
    return cast(nn.Conv2d, model.get_submodule(str(index)))


def _bias(conv: nn.Conv2d) -> Tensor:
    if conv.bias is None:
        raise ModelError("the LeNet pass-through needs convolutions with a bias")
    return conv.bias


def _is_cnn(model: nn.Module) -> bool:
    return (
        isinstance(model, nn.Sequential)
        and len(model) == 7
        and isinstance(model.get_submodule("2"), nn.Sequential)
        and isinstance(model.get_submodule("2.1"), nn.GroupNorm)
    )


def _is_lenet(model: nn.Module) -> bool:
    return (
        isinstance(model, nn.Sequential)
        and len(model) == 9
        and all(isinstance(model.get_submodule(str(i)), nn.Conv2d) for i in (0, 2, 4))
        and all(isinstance(model.get_submodule(str(i)), nn.Sigmoid) for i in (1, 3, 5))
    )


def _pass_through(model: nn.Module, image_size: int) -> Decoder | None:
    """Set LeNet's convolutions so that feature (c, a, b) of the head's input is pixel
    (4a + 2·e_i + d_i, 4b + 2·e_j + d_j) for c = 4(2e_i + e_j) + (2d_i + d_j), through
    three sigmoids kept in [−2, 2]; return the exact inverse. Needs 32 px (the 8×8 pooling
    is then the identity) and at least 16 channels (1,024 features for 1,024 pixels)."""
    if not _is_lenet(model) or image_size != 32 or _conv(model, 0).in_channels != 1:
        return None
    conv1, conv2, conv3 = _conv(model, 0), _conv(model, 2), _conv(model, 4)
    if conv1.out_channels < 16:
        return None
    high = 1 / (1 + math.exp(-SIGMOID_RANGE))
    low = 1 - high
    # x in [0, 1] → 4x − 2; a sigmoid's output in [low, high] → back to [−2, 2].
    scale0, shift0 = 2 * SIGMOID_RANGE, -SIGMOID_RANGE
    scale = 2 * SIGMOID_RANGE / (high - low)
    shift = -SIGMOID_RANGE - low * scale
    bias1, bias2, bias3 = (_bias(conv) for conv in (conv1, conv2, conv3))
    with torch.no_grad():
        for conv in (conv1, conv2, conv3):
            conv.weight.zero_()
            _bias(conv).zero_()
        for di in (0, 1):
            for dj in (0, 1):
                c = 2 * di + dj
                conv1.weight[c, 0, 2 + di, 2 + dj] = scale0
                bias1[c] = shift0
                for ei in (0, 1):
                    for ej in (0, 1):
                        out = 4 * (2 * ei + ej) + c
                        conv2.weight[out, c, 2 + ei, 2 + ej] = scale
                        bias2[out] = shift
        for c in range(16):
            conv3.weight[c, c, 2, 2] = scale
            bias3[c] = shift
        if conv1.out_channels >= 17:
            # The counting channel: constant σ(2) through every layer.
            bias1[4] = SIGMOID_RANGE
            conv2.weight[16, 4, 2, 2] = scale
            bias2[16] = shift
            bias3[16] = 50.0  # σ(50) = 1 in float32: the constant feature is 1

    def decode(features: Tensor) -> Tensor:
        maps = features.double()[:, : 16 * 64].reshape(-1, 16, 8, 8)
        for _ in range(2):  # undo conv3's, then conv2's sigmoid and affine map
            maps = (torch.logit(maps.clamp(low, high)) - shift) / scale
        maps = maps.clamp(low, high)
        pixels = (torch.logit(maps) - shift0) / scale0
        images = torch.zeros(len(features), 1, 32, 32, dtype=torch.float64)
        for ei in (0, 1):
            for ej in (0, 1):
                for di in (0, 1):
                    for dj in (0, 1):
                        c = 4 * (2 * ei + ej) + 2 * di + dj
                        images[:, 0, 2 * ei + di :: 4, 2 * ej + dj :: 4] = pixels[:, c]
        return images.clamp(0, 1).float()

    return decode
