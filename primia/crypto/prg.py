"""Masks: a cryptographic pseudo-random generator expanding a 256-bit seed into Z_2^k.

PRG(seed) is the AES-256-CTR keystream under key ``seed`` from counter 0, read as
little-endian k-bit words. Each seed is used for one mask only (seeds are derived per
round, see :mod:`primia.crypto.keys`), so the zero counter is never reused under a key.
The keystream is indistinguishable from uniform without the seed, so x + PRG(seed) mod
2^k reveals nothing about x. Generation is vectorised: OpenSSL writes the keystream into
one buffer (about 3 GB/s a core with AES-NI) and numpy adds it into the accumulator.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SEED_BYTES = 32
_ZERO_COUNTER = bytes(16)


class MaskGenerator:
    """Adds or subtracts PRG(seed) to vectors of one length and dtype, reusing buffers."""

    def __init__(self, length: int, dtype: type[np.unsignedinteger]) -> None:
        self.length = length
        self.dtype = np.dtype(dtype)
        size = length * self.dtype.itemsize
        self._zeros = bytes(size)
        # update_into wants room for one block more than it writes (none of it used by CTR)
        self._buffer = bytearray(size + 15)

    def mask(self, seed: bytes) -> npt.NDArray[np.unsignedinteger]:
        """PRG(seed) as a new array."""
        return self._keystream(seed).copy()

    def add(self, target: npt.NDArray[np.unsignedinteger], seed: bytes, sign: int = 1) -> None:
        """target ← target + sign·PRG(seed) mod 2^k, in place (sign is +1 or −1)."""
        if target.shape != (self.length,) or target.dtype != self.dtype:
            raise ValueError(
                f"expected a vector of {self.length} {self.dtype.name}, "
                f"got {target.shape} {target.dtype}"
            )
        keystream = self._keystream(seed)
        if sign == 1:
            np.add(target, keystream, out=target)
        elif sign == -1:
            np.subtract(target, keystream, out=target)
        else:
            raise ValueError(f"sign must be +1 or -1, not {sign}")

    def _keystream(self, seed: bytes) -> npt.NDArray[np.unsignedinteger]:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"a mask seed is {SEED_BYTES} bytes, not {len(seed)}")
        encryptor = Cipher(algorithms.AES(seed), modes.CTR(_ZERO_COUNTER)).encryptor()
        written = encryptor.update_into(self._zeros, self._buffer)
        return np.frombuffer(self._buffer, dtype=self.dtype, count=written // self.dtype.itemsize)
