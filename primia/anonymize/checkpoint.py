"""A trained generator on disk: safetensors weights with the spec that rebuilds it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from primia.anonymize.generators import FlowFieldGenerator, NoiseGenerator
from primia.config import atomic_write_bytes
from primia.errors import ModelError

SPEC_KEY = "primia.generator_spec"


@dataclass(frozen=True)
class GeneratorSpec:
    kind: Literal["flow", "noise"]
    mu: float = 0.01
    smoothing: float = 2.0
    noise_strength: float = 0.1
    width: int = 16
    image_size: int = 64
    """The size the generator was trained at; images are anonymized at this size."""

    def build(self) -> nn.Module:
        if self.kind == "flow":
            return FlowFieldGenerator(self.mu, smoothing=self.smoothing, width=self.width)
        return NoiseGenerator(self.noise_strength, width=self.width)


def save_generator(path: Path, generator: nn.Module, spec: GeneratorSpec) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    metadata = {SPEC_KEY: json.dumps(asdict(spec))}
    atomic_write_bytes(path, save_safetensors(tensors, metadata=metadata))


def load_generator(path: Path) -> tuple[nn.Module, GeneratorSpec]:
    """The generator saved at ``path`` (a file or a folder holding generator.safetensors)."""
    if path.is_dir():
        path = path / "generator.safetensors"
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        spec = GeneratorSpec(**json.loads(metadata[SPEC_KEY]))
        generator = spec.build()
        generator.load_state_dict(load_safetensors(path.read_bytes()))
    except FileNotFoundError as error:
        raise ModelError(f"{path} does not exist; train one with primia anonymize train") from error
    except (SafetensorError, KeyError, TypeError, ValueError, RuntimeError) as error:
        raise ModelError(f"{path} is not a primia generator checkpoint: {error}") from error
    return generator.eval(), spec
