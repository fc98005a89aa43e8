"""Model checkpoints as safetensors: weights plus a spec that rebuilds the model.

A checkpoint is one ``.safetensors`` file. Its header metadata holds a :class:`ModelSpec`
as JSON (architecture name, width, outputs, image size, task and label names), so any
party can rebuild the exact module and load the weights without unpickling anything.
Files are written atomically: a reader sees the old checkpoint or the new one, never half.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from primia.errors import ModelError
from primia.files import atomic_write_bytes
from primia.models.registry import build_model, default_width

SPEC_KEY = "primia.model_spec"


@dataclass(frozen=True)
class ModelSpec:
    """What is public about a model: enough to rebuild it and read its outputs."""

    architecture: str
    num_outputs: int
    width: int | None = None
    in_channels: int = 1
    image_size: int = 64
    task: str = "multilabel"
    label_names: tuple[str, ...] = ()
    ws: bool = False
    """Weight-standardised convolutions (:class:`~primia.models.layers.WSConv2d`)."""

    def build(self) -> nn.Module:
        return build_model(
            self.architecture,
            num_classes=self.num_outputs,
            in_channels=self.in_channels,
            width=self.width,
            ws=self.ws,
        )

    def shapes(self) -> dict[str, torch.Tensor]:
        """The model's state as meta tensors: names, shapes and dtypes, no storage (the
        model is built once per spec: a node checks every weights blob against it)."""
        return dict(_meta_state(self))

    def build_with(self, state: Mapping[str, torch.Tensor]) -> nn.Module:
        """The model holding ``state``'s tensors themselves: built on the meta device and
        the tensors assigned, so neither a random initialisation nor a copy is paid for
        (tens of milliseconds for a ResNet-18, per task at a node). The model's training
        changes ``state`` in place: pass copies to keep the originals."""
        with torch.device("meta"):
            model = self.build()
        model.load_state_dict(state, strict=True, assign=True)
        unset = [
            name
            for name, tensor in (*model.named_parameters(), *model.named_buffers())
            if tensor.is_meta
        ]
        if unset:
            raise ModelError(
                f"{self.architecture} has tensors outside its state dict ({', '.join(unset)}); "
                "build it with build() and load_state_dict instead"
            )
        return model

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        try:
            values = json.loads(text)
            values["label_names"] = tuple(values.get("label_names", ()))
            return cls(**values)
        except (json.JSONDecodeError, TypeError) as error:
            raise ModelError(f"the checkpoint's model spec is not valid: {error}") from error


def save_model(path: Path, model: nn.Module, spec: ModelSpec) -> None:
    """Write ``model``'s weights and ``spec`` to ``path`` atomically."""
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    atomic_write_bytes(path, save_safetensors(tensors, metadata={SPEC_KEY: spec.to_json()}))


def load_model(path: Path) -> tuple[nn.Module, ModelSpec]:
    """Rebuild the model stored at ``path`` and load its weights (on the CPU)."""
    try:
        payload = path.read_bytes()
    except FileNotFoundError as error:
        raise ModelError(f"checkpoint {path} does not exist; check the path") from error
    spec = read_spec(path, payload)
    try:
        weights = load_safetensors(payload)
    except SafetensorError as error:
        raise ModelError(f"checkpoint {path} is not a valid safetensors file: {error}") from error
    model = spec.build()
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise ModelError(f"checkpoint {path} does not match its model spec: {error}") from error
    return model, spec


INIT_FIELDS = ("architecture", "width", "num_outputs", "in_channels", "ws")
"""What a starting checkpoint must share with the run it initialises (the weights' shapes
and meaning); image size, task and label names may differ."""


def load_initial_weights(path: Path, spec: ModelSpec) -> dict[str, torch.Tensor]:
    """The weights of the checkpoint at ``path`` (a file or run folder) to start a model of
    ``spec`` from, after checking that the two specs agree on :data:`INIT_FIELDS`; a
    mismatch is a :class:`ModelError` naming both. Safetensors only: nothing is unpickled."""
    model, stored = load_model(find_checkpoint(path))
    differ = [name for name in INIT_FIELDS if _effective(stored, name) != _effective(spec, name)]
    if differ:

        def describe(s: ModelSpec) -> str:
            return ", ".join(f"{name}={_effective(s, name)}" for name in INIT_FIELDS)

        raise ModelError(
            f"checkpoint {path} does not fit this model ({', '.join(differ)} differ): it has "
            f"{describe(stored)}; this run builds {describe(spec)}; start from a checkpoint "
            "of the same model or change the run's model options to match it"
        )
    return model.state_dict()


def _effective(spec: ModelSpec, name: str) -> object:
    """A spec field as built: no width means the architecture's default width."""
    value = getattr(spec, name)
    if name == "width" and value is None:
        return default_width(spec.architecture)
    return value


def find_checkpoint(path: Path) -> Path:
    """The checkpoint in ``path``: a model file, a run directory or a `primia demo` folder."""
    for candidate in (path, path / "model.safetensors", path / "run" / "model.safetensors"):
        if candidate.is_file():
            return candidate
    raise ModelError(
        f"no model at {path}: give a .safetensors checkpoint, a run directory with "
        "model.safetensors (a finished federation or train-local run), or a `primia demo` folder"
    )


def read_spec(path: Path, payload: bytes | None = None) -> ModelSpec:
    """The :class:`ModelSpec` in a checkpoint's header."""
    data = path.read_bytes() if payload is None else payload
    header_length = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    if header_length <= 0 or header_length > len(data) - 8:
        raise ModelError(f"checkpoint {path} is not a safetensors file")
    try:
        header = json.loads(data[8 : 8 + header_length])
    except json.JSONDecodeError as error:
        raise ModelError(f"checkpoint {path} has a corrupt safetensors header") from error
    spec_text = header.get("__metadata__", {}).get(SPEC_KEY)
    if spec_text is None:
        raise ModelError(
            f"checkpoint {path} has no primia model spec; it was not written by primia"
        )
    return ModelSpec.from_json(spec_text)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside an Opacus ``GradSampleModule`` (or the module itself)."""
    inner = getattr(model, "_module", None)
    return inner if isinstance(inner, nn.Module) else model


def save_module(path: Path, module: nn.Module, *, key: str, spec: dict[str, Any]) -> None:
    """``module``'s weights with ``spec`` (JSON) under ``key`` in the header, atomically: how
    the audit's verifier and the anonymizer's generator are stored."""
    tensors = {name: t.detach().cpu().contiguous() for name, t in module.state_dict().items()}
    atomic_write_bytes(path, save_safetensors(tensors, metadata={key: json.dumps(spec)}))


def load_module(
    path: Path,
    *,
    key: str,
    build: Callable[[dict[str, Any]], nn.Module],
    what: str,
    made_by: str,
) -> tuple[nn.Module, dict[str, Any]]:
    """The module saved by :func:`save_module` (``build(spec)`` with the weights loaded,
    in eval mode) and its spec. A missing or foreign file is a :class:`ModelError` saying
    ``what`` it should be and the command ``made_by`` that writes one."""
    try:
        payload = path.read_bytes()
    except FileNotFoundError as error:
        raise ModelError(f"{path} does not exist; {made_by} writes {what}") from error
    try:
        header_length = int.from_bytes(payload[:8], "little")
        header = json.loads(payload[8 : 8 + header_length])
        spec = json.loads(header["__metadata__"][key])
        module = build(spec)
        module.load_state_dict(load_safetensors(payload))
    except (SafetensorError, KeyError, TypeError, ValueError, RuntimeError) as error:
        raise ModelError(f"{path} is not {what}: {error}") from error
    return module.eval(), spec


@functools.lru_cache(maxsize=32)
def _meta_state(spec: ModelSpec) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return spec.build().state_dict()
