"""Checks that a model can be trained with DP-SGD and run under encrypted inference."""

from __future__ import annotations

from opacus.validators import ModuleValidator
from torch import nn

from primia.errors import ModelError
from primia.models.densenet import DenseNet121
from primia.models.layers import BasicBlock, DenseLayer, Residual
from primia.models.resnet import ResNet9, ResNet18

# Layers that both Opacus (per-sample gradients) and CrypTen (MPC) can run, plus the
# containers and residual blocks that only compose them.
ALLOWED_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Conv2d,
    nn.GroupNorm,
    nn.ReLU,
    nn.Sigmoid,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Linear,
    nn.Flatten,
    nn.Sequential,
    BasicBlock,
    DenseLayer,
    Residual,
)


SEQUENTIAL_MODELS: tuple[type[nn.Module], ...] = (ResNet18, ResNet9, DenseNet121)
"""Built-in top-level models whose forward applies their children in registration order
(encrypted inference walks them as it walks an ``nn.Sequential``)."""


def encrypted_problems(model: nn.Module) -> list[str]:
    """Why encrypted inference cannot run ``model`` (empty when it can): it evaluates
    primia's layers in their order, so a model is an ``nn.Sequential`` (or a built-in
    model) of :data:`ALLOWED_LAYERS`, with no ``nn.Identity`` (CrypTen has none) and no
    in-place ReLU."""
    problems: list[str] = []
    if not isinstance(model, nn.Sequential) and type(model) not in SEQUENTIAL_MODELS:
        problems.append(
            f"{type(model).__name__}: encrypted inference applies a model's layers in "
            "order; give the model as an nn.Sequential of primia's layers"
        )
    for name, module in model.named_modules():
        if module is model:
            continue
        if not isinstance(module, ALLOWED_LAYERS):
            problems.append(f"{name}: {type(module).__name__} cannot run encrypted")
        elif isinstance(module, nn.ReLU) and module.inplace:
            problems.append(f"{name}: in-place ReLU; use nn.ReLU()")
    return problems


def incompatibilities(model: nn.Module) -> list[str]:
    """Why ``model`` cannot be used as is; empty when it can."""
    problems: list[str] = []
    for name, module in model.named_modules():
        where = name or type(model).__name__
        if module is model and not isinstance(module, ALLOWED_LAYERS):
            continue  # the top-level model class composes allowed layers in its forward
        if not isinstance(module, ALLOWED_LAYERS):
            problems.append(
                f"{where}: {type(module).__name__} is not supported by encrypted inference"
            )
        if isinstance(module, nn.ReLU) and module.inplace:
            problems.append(f"{where}: in-place ReLU breaks Opacus hooks and CrypTen")
    problems.extend(f"Opacus: {error}" for error in ModuleValidator.validate(model, strict=False))
    return problems


def check_model(model: nn.Module) -> None:
    """Raise :class:`ModelError` listing every incompatibility of ``model``."""
    problems = incompatibilities(model)
    if problems:
        raise ModelError("model is not DP/MPC compatible: " + "; ".join(problems))
