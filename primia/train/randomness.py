"""Random generators for DP: seeded from the operating system, never from a config seed.

DP noise that can be regenerated can be subtracted, and Poisson batches that can be
predicted void the amplification by subsampling; so both come from generators whose seed
is drawn from the OS CSPRNG (``os.urandom``). The generators themselves are PyTorch's,
as in Opacus without ``secure_mode`` (which needs torchcsprng, unavailable for current
PyTorch); see docs/privacy.md.
"""

from __future__ import annotations

import os

import torch


def os_seeded_generator(device: torch.device | None = None) -> torch.Generator:
    """A PyTorch generator on ``device`` seeded with 64 bits from the OS CSPRNG."""
    generator = torch.Generator(device=device) if device is not None else torch.Generator()
    return generator.manual_seed(int.from_bytes(os.urandom(8), "little"))
