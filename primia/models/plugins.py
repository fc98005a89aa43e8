"""Model plug-ins: a consortium's own architecture, loaded by name on every party.

A plug-in is named in the configuration (``[model] plugins`` in ``coordinator.toml``,
``plugins`` in ``node.toml``, in ``model-owner.toml`` and in ``data-owner.toml``) by a
reference:

* ``"NAME=package.module:factory"`` — import ``package.module`` (it must be importable
  on that machine) and register ``factory`` under ``NAME``;
* ``"NAME"`` — the Python entry point ``NAME`` of the group ``primia.models`` that an
  installed package declares (``[project.entry-points."primia.models"]``).

``factory(*, num_classes, in_channels, width)`` builds the model, as the built-in ones do;
``[model] architecture = "NAME"`` then selects it. Loading a plug-in imports a module:
it runs that module's code with the party's rights, which is why a party loads plug-ins
only when its operator allows it (:func:`load_allowed_plugins`: ``policy.allow_plugins``
on a node, ``allow_plugins`` on the model owner and the data owner; default false). The
inference parties' CrypTen processes are separate processes: they receive the references
and load them again (:mod:`primia.inference.processes`). The crypto provider never builds
the model (it deals randomness only), so it loads none. Check a model before any round with
:func:`primia.train.model_check.check_model_targets`.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from importlib.metadata import entry_points

from primia.errors import ConfigError
from primia.models.registry import ModelFactory, model_names, register_model, registered

ENTRY_POINT_GROUP = "primia.models"


def load_plugin(reference: str) -> str:
    """Register the plug-in ``reference`` names (see the module docstring); return its
    name. Loading the same factory under the same name again does nothing."""
    name, separator, target = reference.partition("=")
    name = name.strip()
    if not name.isidentifier():
        raise ConfigError(
            f"model plug-in {reference!r}: the name must be an identifier, as in "
            "'mynet=my_package.models:build_mynet'"
        )
    factory = _import(target.strip(), reference) if separator else _entry_point(name)
    if registered(name) is factory:
        return name
    if name in model_names():
        raise ConfigError(
            f"model plug-in {reference!r}: {name!r} is already a model; choose another name"
        )
    register_model(name)(factory)
    return name


def load_plugins(references: Sequence[str]) -> list[str]:
    return [load_plugin(reference) for reference in references]


def load_allowed_plugins(references: Sequence[str], *, allowed: bool, switch: str) -> list[str]:
    """Load ``references`` if the operator's ``switch`` (the config key, e.g.
    ``policy.allow_plugins``) is on; refuse them, naming the switch, if it is off."""
    if references and not allowed:
        raise ConfigError(
            f"plugins lists {', '.join(references)} but {switch} is false: loading a plug-in "
            f"runs its module's code on this machine; set {switch} = true to accept it, or "
            "remove plugins"
        )
    return load_plugins(references)


def plugin_needed(architecture: str, *, switch: str) -> str:
    """Why a party cannot build ``architecture``, a name no model is registered under."""
    return (
        f"the model {architecture!r} is not a built-in model: it is a plug-in this party has "
        f"not loaded; add its reference to plugins (NAME=package.module:factory) and set "
        f"{switch} = true"
    )


def _import(target: str, reference: str) -> ModelFactory:
    module_name, colon, attribute = target.partition(":")
    if not colon or not module_name or not attribute:
        raise ConfigError(
            f"model plug-in {reference!r}: write NAME=package.module:factory, e.g. "
            "'mynet=my_package.models:build_mynet'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(
            f"model plug-in {reference!r}: cannot import {module_name!r} ({error}); install "
            "the package on this machine or fix the module path"
        ) from error
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ConfigError(
            f"model plug-in {reference!r}: {module_name} has no callable {attribute!r}"
        )
    return factory


def _entry_point(name: str) -> ModelFactory:
    found = [point for point in entry_points(group=ENTRY_POINT_GROUP) if point.name == name]
    if not found:
        raise ConfigError(
            f"model plug-in {name!r}: no installed package declares the entry point {name!r} "
            f"in group {ENTRY_POINT_GROUP!r}; install it or write NAME=package.module:factory"
        )
    factory = found[0].load()
    if not callable(factory):
        raise ConfigError(f"model plug-in {name!r}: its entry point is not callable")
    return factory
