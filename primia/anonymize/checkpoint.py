"""A trained generator on disk: safetensors weights with the spec that rebuilds it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from torch import nn

from primia.anonymize.generators import FlowFieldGenerator, GuidedGenerator, NoiseGenerator
from primia.models.checkpoint import load_module, save_module
from primia.segment.model import UNet

Guide = Literal["none", "masks", "segmenter"]

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
    guide: Guide = "none"
    """none: the whole image; masks: weighted by masks given with the images; segmenter:
    by the masks of the segmenter stored in the same file."""
    inside: tuple[float, ...] = (0.0, 0.0)
    """Guided: the strength a_r inside each region (lungs, heart), 0 = untouched."""
    segmenter_width: int = 8

    def build(self) -> nn.Module:
        base: FlowFieldGenerator | NoiseGenerator
        if self.kind == "flow":
            base = FlowFieldGenerator(self.mu, smoothing=self.smoothing, width=self.width)
        else:
            base = NoiseGenerator(self.noise_strength, width=self.width)
        if self.guide == "none":
            return base
        segmenter = (
            UNet(out_channels=len(self.inside), width=self.segmenter_width)
            if self.guide == "segmenter"
            else None
        )
        return GuidedGenerator(base, self.inside, segmenter=segmenter)

    @classmethod
    def of(cls, values: dict[str, Any]) -> GeneratorSpec:
        """The spec of a file's JSON header (lists back to tuples)."""
        if "inside" in values:
            values = {**values, "inside": tuple(values["inside"])}
        return cls(**values)


def save_generator(path: Path, generator: nn.Module, spec: GeneratorSpec) -> None:
    save_module(path, generator, key=SPEC_KEY, spec=asdict(spec))


def load_generator(path: Path) -> tuple[nn.Module, GeneratorSpec]:
    """The generator saved at ``path`` (a file or a folder holding generator.safetensors)."""
    if path.is_dir():
        path = path / "generator.safetensors"
    generator, values = load_module(
        path,
        key=SPEC_KEY,
        build=lambda values: GeneratorSpec.of(values).build(),
        what="a primia generator",
        made_by="primia anonymize train",
    )
    return generator, GeneratorSpec.of(values)
