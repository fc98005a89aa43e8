"""A trained generator on disk: safetensors weights with the spec that rebuilds it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from torch import nn

from primia.anonymize.generators import FlowFieldGenerator, NoiseGenerator
from primia.models.checkpoint import load_module, save_module

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
    save_module(path, generator, key=SPEC_KEY, spec=asdict(spec))


def load_generator(path: Path) -> tuple[nn.Module, GeneratorSpec]:
    """The generator saved at ``path`` (a file or a folder holding generator.safetensors)."""
    if path.is_dir():
        path = path / "generator.safetensors"
    generator, values = load_module(
        path,
        key=SPEC_KEY,
        build=lambda values: GeneratorSpec(**values).build(),
        what="a primia generator",
        made_by="primia anonymize train",
    )
    return generator, GeneratorSpec(**values)
