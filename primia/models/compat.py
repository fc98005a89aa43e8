"""Checks that a model can be trained with DP-SGD and run under encrypted inference."""

from __future__ import annotations

from opacus.validators import ModuleValidator
from torch import nn

from primia.errors import ModelError
from primia.models.layers import BasicBlock, DenseLayer, Residual

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
