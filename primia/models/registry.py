"""A name registry of model factories, so configs and CLIs name models by string."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from primia.errors import ModelError

ModelFactory = Callable[..., nn.Module]
_FACTORIES: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: make ``factory(*, num_classes, in_channels, width)`` buildable by name."""

    def add(factory: ModelFactory) -> ModelFactory:
        if name in _FACTORIES:
            raise ValueError(f"model name {name!r} is registered twice")
        _FACTORIES[name] = factory
        return factory

    return add


def registered(name: str) -> ModelFactory | None:
    """The factory registered under ``name`` (None: none)."""
    return _FACTORIES.get(name)


def model_names() -> list[str]:
    return sorted(_FACTORIES)


def default_width(name: str) -> int | None:
    """The width ``name`` is built with when none is given (None: unknown, or no width)."""
    factory = _FACTORIES.get(name)
    if factory is None:
        return None
    parameter = inspect.signature(factory).parameters.get("width")
    if parameter is None or not isinstance(parameter.default, int):
        return None
    return parameter.default


def supports_ws(name: str) -> bool:
    """Whether ``name``'s factory takes ``ws`` (weight-standardised convolutions)."""
    factory = _FACTORIES.get(name)
    return factory is not None and "ws" in inspect.signature(factory).parameters


def build_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int = 1,
    width: int | None = None,
    ws: bool = False,
) -> nn.Module:
    """Build a registered model; ``width`` scales the channel counts (None: the default),
    ``ws`` standardises the convolutions' weights (:class:`~primia.models.layers.WSConv2d`)."""
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ModelError(f"unknown model {name!r}; choose one of: {', '.join(model_names())}")
    if num_classes < 1:
        raise ModelError(f"num_classes must be at least 1, got {num_classes}")
    if width is not None and width < 4:
        raise ModelError(f"width must be at least 4 channels, got {width}")
    if ws and not supports_ws(name):
        raise ModelError(
            f"model {name!r} has no weight-standardised variant; drop ws (--ws) or choose one "
            f"of: {', '.join(n for n in model_names() if supports_ws(n))}"
        )
    kwargs: dict[str, int | bool] = {"num_classes": num_classes, "in_channels": in_channels}
    if width is not None:
        kwargs["width"] = width
    if ws:
        kwargs["ws"] = True
    return factory(**kwargs)
