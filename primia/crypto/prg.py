"""Masks: a cryptographic pseudo-random generator expanding a 256-bit seed into Z_2^k.

PRG(seed) is the AES-256-CTR keystream under key ``seed`` from counter 0, read as
little-endian k-bit words. Each seed is used for one mask only (seeds are derived per
round, see :mod:`primia.crypto.keys`), so the zero counter is never reused under a key.
The keystream is indistinguishable from uniform without the seed, so x + PRG(seed) mod
2^k reveals nothing about x. Generation is vectorised and goes a block at a time: OpenSSL
writes 1 MiB of keystream (about 3.5 GB/s a core with AES-NI) into a buffer that stays in
cache, and numpy adds it into the vector; nothing of the vector's size is allocated.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SEED_BYTES = 32
_ZERO_COUNTER = bytes(16)


BLOCK_BYTES = 1 << 20
"""Keystream bytes made per call into OpenSSL: large enough to amortise the call, small
enough to stay in cache while numpy adds them."""


class MaskGenerator:
    """Adds or subtracts PRG(seed) to vectors of one length and dtype."""

    def __init__(self, length: int, dtype: type[np.unsignedinteger]) -> None:
        self.length = length
        self.dtype = np.dtype(dtype)
        block = min(BLOCK_BYTES, length * self.dtype.itemsize)
        self._zeros = bytes(block)
        # update_into wants room for one block more than it writes (none of it used by CTR)
        self._buffer = bytearray(block + 15)

    def mask(self, seed: bytes) -> npt.NDArray[np.unsignedinteger]:
        """PRG(seed) as a new array."""
        target = np.zeros(self.length, dtype=self.dtype)
        self.add(target, seed)
        return target

    def add(self, target: npt.NDArray[np.unsignedinteger], seed: bytes, sign: int = 1) -> None:
        """target ← target + sign·PRG(seed) mod 2^k, in place (sign is +1 or −1)."""
        if target.shape != (self.length,) or target.dtype != self.dtype:
            raise ValueError(
                f"expected a vector of {self.length} {self.dtype.name}, "
                f"got {target.shape} {target.dtype}"
            )
        if sign not in (1, -1):
            raise ValueError(f"sign must be +1 or -1, not {sign}")
        if len(seed) != SEED_BYTES:
            raise ValueError(f"a mask seed is {SEED_BYTES} bytes, not {len(seed)}")
        combine = np.add if sign == 1 else np.subtract
        # One encryptor continues the keystream from block to block, so the words are
        # those of one AES-CTR stream from counter 0, whatever the block size.
        encryptor = Cipher(algorithms.AES(seed), modes.CTR(_ZERO_COUNTER)).encryptor()
        words_per_block = max(1, len(self._zeros) // self.dtype.itemsize)
        for start in range(0, self.length, words_per_block):
            part = target[start : start + words_per_block]
            size = part.size * self.dtype.itemsize
            written = encryptor.update_into(memoryview(self._zeros)[:size], self._buffer)
            keystream = np.frombuffer(
                self._buffer, dtype=self.dtype, count=written // self.dtype.itemsize
            )
            combine(part, keystream, out=part)
