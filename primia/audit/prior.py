"""A learned image prior: from a model's features back to an image, fitted on public data.

The attacker holds images that are not the node's but resemble them: another site's, or a
synthetic set (:func:`public_images` draws one from :mod:`primia.data.synth` with a seed of
its own, so no node image is among them). Knowing the model's weights, it computes their
features φ(x) (the input of the last Linear layer) and fits a decoder:

* the images are projected on their first k principal components (PCA: x ≈ μ + Uᵀc);
* ridge regression maps standardised features to the coefficients,
  c = Aᵀ[(φ − m)/s; 1], A = (ΦᵀΦ + λI)⁻¹ΦᵀC, with λ chosen on a held-out fifth;
* decode(φ) = clip(μ + Uᵀ c, 0, 1).

Given the exact features of a node's image (:mod:`primia.audit.analytic`), the decoder
gives an image an attacker could draw from them; the attacks then refine it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from primia.audit.analytic import features_of
from primia.data import open_dataset
from primia.data.synth import SynthConfig, generate
from primia.errors import ConfigError
from primia.train.loops import to_float

PUBLIC_SEED = 1_000_003
"""The synthetic public set's seed: another draw of sites and patients than any node's."""
COMPONENTS = 64
RIDGE_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
"""Candidate λ, relative to the number of features."""


def public_images(source: Path | None, *, image_size: int, count: int = 480) -> Tensor:
    """``float32[N, 1, S, S]`` images the attacker holds: the dataset at ``source`` (another
    site's), or ``count`` synthetic radiographs (4 sites, 2 images per patient)."""
    if source is not None:
        dataset = open_dataset(source, image_size=image_size)
        return to_float(dataset.uint8_tensors()[0], torch.device("cpu"))
    patients = max(1, count // 8)
    batch = generate(
        SynthConfig(
            sites=4,
            patients_per_site=patients,
            images_per_patient=2,
            size=image_size,
            seed=PUBLIC_SEED,
        )
    )
    return torch.from_numpy(batch.images).unsqueeze(1).float().div(255.0)


@dataclass(frozen=True)
class FeatureDecoder:
    """features ``[n, F]`` → images ``[n, 1, S, S]``; see the module docstring."""

    feature_mean: Tensor
    feature_scale: Tensor
    weights: Tensor
    components: Tensor
    image_mean: Tensor
    shape: tuple[int, ...]

    def decode(self, features: Tensor) -> Tensor:
        standard = (features.double().cpu() - self.feature_mean) / self.feature_scale
        design = torch.cat([standard, torch.ones(len(standard), 1, dtype=torch.float64)], 1)
        flat = self.image_mean + design @ self.weights @ self.components
        return flat.clamp(0, 1).float().reshape(len(features), *self.shape)


@torch.no_grad()
def fit_decoder(
    model: nn.Module, images: Tensor, *, components: int = COMPONENTS, batch: int = 64
) -> FeatureDecoder:
    """Fit the decoder on the attacker's ``images`` for ``model`` (see the module docstring)."""
    if len(images) < 10:
        raise ConfigError(f"the learned prior needs at least 10 public images, got {len(images)}")
    device = next(model.parameters()).device
    features = torch.cat(
        [
            features_of(model, images[i : i + batch].to(device)).cpu()
            for i in range(0, len(images), batch)
        ]
    ).double()
    flat = images.reshape(len(images), -1).double()
    image_mean = flat.mean(0)
    _, _, vh = torch.linalg.svd(flat - image_mean, full_matrices=False)
    basis = vh[: min(components, len(images) - 1)]
    coefficients = (flat - image_mean) @ basis.T
    feature_mean = features.mean(0)
    feature_scale = features.std(0).clamp_min(1e-8)
    standard = (features - feature_mean) / feature_scale
    design = torch.cat([standard, torch.ones(len(standard), 1, dtype=torch.float64)], 1)
    order = np.random.default_rng(0).permutation(len(images))
    held = torch.from_numpy(order[: len(images) // 5])
    kept = torch.from_numpy(order[len(images) // 5 :])

    def solve(rows: Tensor, ridge: float) -> Tensor:
        x = design[rows]
        penalty = ridge * design.shape[1] * torch.eye(design.shape[1], dtype=torch.float64)
        return torch.linalg.solve(x.T @ x + penalty, x.T @ coefficients[rows])

    def held_error(ridge: float) -> float:
        predicted = design[held] @ solve(kept, ridge)
        return float(((predicted - coefficients[held]) ** 2).sum())

    ridge = min(RIDGE_GRID, key=held_error)
    return FeatureDecoder(
        feature_mean,
        feature_scale,
        solve(torch.arange(len(images)), ridge),
        basis,
        image_mean,
        tuple(images.shape[1:]),
    )
