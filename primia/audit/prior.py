"""A learned image prior: from a model's features back to an image, fitted on public data.

The attacker holds images that are not the node's but resemble them: another site's, or a
synthetic set (:func:`public_images` draws one from :mod:`primia.data.synth` with a seed of
its own, so no node image is among them). Knowing the model's weights, it computes their
features φ(x) (the input of the last Linear layer) and trains a small decoder on the pairs:

    g(φ) = μ + W₃ · gelu(W₂ · gelu(W₁ · (φ − m)/s + b₁) + b₂) + b₃,

two hidden layers of :data:`HIDDEN` units, μ the public images' mean, m and s the
features' mean and standard deviation; Adam (weight decay :data:`WEIGHT_DECAY`) on the
mean squared pixel error over minibatches, the step size cosine-annealed over
:data:`STEPS` steps, from a fixed seed; decode(φ) = clip(g(φ), 0, 1). A linear map (ridge
regression onto principal components) gained ~2.5 dB over the mean image on primia's
untrained ResNet-9 at 32 px; this decoder ~3.7 dB (``benchmarks/bench_audit_attacks.py``).

Given the exact features of a node's image (:mod:`primia.audit.analytic`), the decoder
gives an image an attacker could draw from them; the attacks then refine it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from primia.audit.analytic import features_of
from primia.data import open_dataset
from primia.data.synth import SynthConfig, generate
from primia.errors import ConfigError
from primia.train.loops import to_float

PUBLIC_SEED = 1_000_003
"""The synthetic public set's seed: another draw of sites and patients than any node's."""
PUBLIC_IMAGES = 4000
"""Synthetic public images: the decoder's error fell with more (480 → 4,000: −1 dB)."""
HIDDEN = 256
STEPS = 1500
MINIBATCH = 128
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 1e-5
DECODER_SEED = 0
CACHED_DECODERS = 4
"""Decoders kept per process: one audit per threat or batch size fits the same model."""
_decoders: dict[str, FeatureDecoder] = {}


def public_images(source: Path | None, *, image_size: int, count: int = PUBLIC_IMAGES) -> Tensor:
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
    network: nn.Module
    image_mean: Tensor
    shape: tuple[int, ...]

    @torch.no_grad()
    def decode(self, features: Tensor) -> Tensor:
        standard = (features.float().cpu() - self.feature_mean) / self.feature_scale
        flat = self.image_mean + self.network(standard)
        return flat.clamp(0, 1).reshape(len(features), *self.shape)


def fit_decoder(
    model: nn.Module, images: Tensor, *, steps: int = STEPS, batch: int = 64
) -> FeatureDecoder:
    """Train the decoder on the attacker's ``images`` for ``model`` (see the module
    docstring). Deterministic for given inputs, so a fit is reused for the same weights,
    images and steps."""
    if len(images) < 10:
        raise ConfigError(f"the learned prior needs at least 10 public images, got {len(images)}")
    key = _fingerprint(model, images, steps)
    if key not in _decoders:
        if len(_decoders) >= CACHED_DECODERS:
            del _decoders[next(iter(_decoders))]
        _decoders[key] = _fit(model, images, steps=steps, batch=batch)
    return _decoders[key]


def _fingerprint(model: nn.Module, images: Tensor, steps: int) -> str:
    digest = hashlib.sha256(f"{type(model).__name__}|{steps}|".encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(images.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _fit(model: nn.Module, images: Tensor, *, steps: int, batch: int) -> FeatureDecoder:
    device = next(model.parameters()).device
    with torch.no_grad():
        features = torch.cat(
            [
                features_of(model, images[i : i + batch].to(device)).float().cpu()
                for i in range(0, len(images), batch)
            ]
        )
    return decoder_from_features(features, images, steps=steps)


def decoder_from_features(
    features: Tensor, images: Tensor, *, steps: int = STEPS, hidden: int = HIDDEN
) -> FeatureDecoder:
    """Fit the decoder from ``features`` [n, F] of ``images`` [n, 1, S, S] (the module
    docstring's g, with ``hidden`` units per layer); deterministic for given inputs."""
    flat = images.reshape(len(images), -1).float()
    image_mean = flat.mean(0)
    feature_mean = features.mean(0)
    feature_scale = features.std(0).clamp_min(1e-8)
    standard = (features - feature_mean) / feature_scale
    residual = flat - image_mean
    generator = torch.Generator().manual_seed(DECODER_SEED)
    with torch.random.fork_rng():
        torch.manual_seed(DECODER_SEED)
        network = nn.Sequential(
            nn.Linear(standard.shape[1], hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, flat.shape[1]),
        )
    optimizer = torch.optim.Adam(network.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    with torch.enable_grad():
        for _ in range(steps):
            rows = torch.randint(len(images), (MINIBATCH,), generator=generator)
            loss = ((network(standard[rows]) - residual[rows]) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return FeatureDecoder(
        feature_mean, feature_scale, network.eval(), image_mean, tuple(images.shape[1:])
    )
