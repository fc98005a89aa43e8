"""A Siamese verification network: are two radiographs of the same patient?

After Packhäuser et al. (Sci. Rep. 2022): both images go through one backbone (a model of
:mod:`primia.models` whose last layer gives a 128-d embedding); the absolute difference of
the two embeddings goes through a linear layer to one logit, trained with binary
cross-entropy on same-patient (1) and different-patient (0) pairs.

    logit(a, b) = wᵀ |f(a) − f(b)| + c

The score is symmetric in a and b by construction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from primia.models import build_model
from primia.models.checkpoint import load_module, save_module

EMBEDDING = 128
SPEC_KEY = "primia.verifier_spec"


class SiameseVerifier(nn.Module):
    def __init__(self, backbone: str = "resnet9", *, width: int | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.width = width
        self.embedder = build_model(backbone, num_classes=EMBEDDING, width=width)
        self.head = nn.Linear(EMBEDDING, 1)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 128]`` embeddings of ``[B, 1, S, S]`` images in [0, 1]."""
        return self.embedder(images)

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """``[B]`` logits that each pair shows one patient."""
        return self.compare(self.embed(first), self.embed(second))

    def compare(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Logits of paired embeddings (``[B, 128]`` each)."""
        return self.head((first - second).abs()).squeeze(-1)

    @torch.no_grad()
    def score_matrix(
        self, queries: torch.Tensor, gallery: torch.Tensor | None = None, chunk: int = 64
    ) -> torch.Tensor:
        """``[N, M]`` logits of every (query, gallery) pair of embeddings (for retrieval);
        without ``gallery``, the queries against themselves."""
        gallery = queries if gallery is None else gallery
        rows = [
            self.compare(queries[start : start + chunk, None, :], gallery[None, :, :])
            for start in range(0, len(queries), chunk)
        ]
        return torch.cat(rows)


@dataclass(frozen=True)
class VerifierSpec:
    """What rebuilds a saved verifier, and the image size it was trained at."""

    backbone: str
    width: int | None
    image_size: int


def save_verifier(path: Path, verifier: SiameseVerifier, image_size: int) -> None:
    spec = VerifierSpec(verifier.backbone, verifier.width, image_size)
    save_module(path, verifier, key=SPEC_KEY, spec=asdict(spec))


def load_verifier(path: Path) -> tuple[SiameseVerifier, VerifierSpec]:
    """The verifier at ``path`` (a file, or a reid report folder holding it)."""
    if path.is_dir():
        path = path / "verifier.safetensors"

    def build(values: dict[str, Any]) -> SiameseVerifier:
        spec = VerifierSpec(**values)
        return SiameseVerifier(spec.backbone, width=spec.width)

    verifier, values = load_module(
        path,
        key=SPEC_KEY,
        build=build,
        what="a primia verifier",
        made_by="primia audit reid --out DIR",
    )
    assert isinstance(verifier, SiameseVerifier)
    return verifier, VerifierSpec(**values)
