"""Comparisons with zero by the sign-bit circuit in real three-party CrypTen sessions.

Three processes (model owner, data owner, crypto provider with CrypTen's TTP dealer) meet
over gloo on loopback and compare values whose shares they are given, chosen so that the
carry into bit 63 decides the sign, at both of CrypTen's encodings (scale 1 and 2^16).
Over the mutual-TLS links the circuit runs in every encrypted-inference test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from primia.launch import free_port

pytestmark = pytest.mark.slow


PARTY = """
import sys
import numpy as np
import torch
from primia.inference import parties

rank, port, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
meeting = parties.Rendezvous("127.0.0.1", port)
if rank == 2:
    parties.crypto_provider(meeting)
else:
    with parties.join(meeting, rank) as session:
        assert getattr(session.crypten.mpc.MPCTensor._ltz, "primia", False)
        share = torch.from_numpy(np.load(f"{folder}/share{rank}.npy"))
        signs = []
        for precision in (0, None):
            value = session.crypten.mpc.MPCTensor.from_shares(share, precision=precision)
            signs.append(value._ltz().reveal().numpy())
        np.save(f"{folder}/signs{rank}.npy", np.stack(signs))
"""

TOP, BOTTOM = 2**63 - 1, -(2**63)


def _shares() -> tuple[torch.Tensor, torch.Tensor]:
    extremes = [(TOP, 1), (TOP, 0), (-1, 1), (-1, -1), (2**62, 2**62), (2**62, 2**62 - 1)]
    extremes += [(BOTTOM, BOTTOM), (BOTTOM, 0), (0, 0), (1, -2)]
    generator = torch.Generator().manual_seed(5)
    values = torch.randint(BOTTOM, TOP, (2, 1_000), generator=generator)
    first = torch.cat([torch.tensor([a for a, _ in extremes]), values[0]])
    second = torch.cat([torch.tensor([b for _, b in extremes]), values[1]])
    return first.reshape(2, 5, -1), second.reshape(2, 5, -1)


def test_sessions_compare_with_zero_exactly(tmp_path: Path) -> None:
    first, second = _shares()
    np.save(tmp_path / "share0.npy", first.numpy())
    np.save(tmp_path / "share1.npy", second.numpy())
    port = str(free_port())
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", PARTY, str(rank), port, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for rank in range(3)
    ]
    outputs = []
    try:
        for process in processes:
            output, _ = process.communicate(timeout=120)
            outputs.append(output.decode(errors="replace"))
    finally:
        for process in processes:
            process.kill()
    assert all(process.returncode == 0 for process in processes), "\n".join(outputs)
    # the encoding's scale does not change the sign: x is the ring element either way
    expected = ((first + second) < 0).long().numpy()
    for rank in (0, 1):
        signs = np.load(tmp_path / f"signs{rank}.npy")
        assert signs.shape == (2, *expected.shape)
        np.testing.assert_array_equal(signs[0], expected)
        np.testing.assert_array_equal(signs[1], expected)
