"""Encrypted inference with three real processes on loopback: model owner, data owner and
CrypTen's TTP crypto provider, over gloo.

Tolerance. CrypTen encodes values with 16 fractional bits, so each multiplication's
truncation errs by about 2^-16 ≈ 1.5·10⁻⁵. Errors add up over the layers (about 20
convolutions and GroupNorms in ResNet-18) and GroupNorm divides them by each group's
standard deviation, which on the last stages of a 32-pixel ResNet-18 (1×1 maps, groups of
two channels) is small enough to amplify them about a hundredfold:
1.5·10⁻⁵ × 20 × 100 ≈ 0.03. Logits must agree within 0.05; measured: 1·10⁻⁴ (CNN),
6·10⁻⁴ (ResNet-9), 7·10⁻³ (ResNet-18).
"""

from __future__ import annotations

import pytest
import torch

from primia.data.synth import SynthConfig, generate
from primia.inference.local import run_local
from primia.models.checkpoint import ModelSpec

TOLERANCE = 0.05

pytestmark = pytest.mark.slow


def _radiographs(count: int, size: int) -> torch.Tensor:
    """``count`` synthetic radiographs scaled to [0, 1], shape (count, 1, size, size)."""
    batch = generate(
        SynthConfig(sites=1, patients_per_site=count, images_per_patient=1, size=size, seed=3)
    )
    return torch.from_numpy(batch.images).float().div(255).unsqueeze(1)


@pytest.mark.parametrize("architecture", ["cnn", "resnet9", "resnet18"])
def test_encrypted_logits_match_plaintext(architecture: str) -> None:
    spec = ModelSpec(architecture, num_outputs=4, width=8, image_size=32)
    torch.manual_seed(0)
    model = spec.build().eval()
    images = _radiographs(4, 32)
    with torch.no_grad():
        plain = model(images)
    encrypted = run_local(spec, model.state_dict(), images, timeout_s=300).logits
    assert encrypted.shape == plain.shape
    assert (encrypted - plain).abs().max().item() < TOLERANCE
    decided = plain.abs() > TOLERANCE  # a logit within the tolerance of 0 may flip
    assert torch.equal((encrypted > 0)[decided], (plain > 0)[decided])
