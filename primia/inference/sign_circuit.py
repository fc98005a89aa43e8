"""A comparison with zero that computes only the sign bit, for two computing parties.

Every ReLU and max pool of an encrypted network asks whether a secret-shared value
x = x₀ + x₁ (mod 2^64, party i holding x_i) is negative. CrypTen answers by converting x
to a binary sharing with a full 64-bit adder (a set–propagate–kill tree over all 64
carries: one AND round for the generate bits, then six rounds of two ANDs on whole 64-bit
words: 13 word-ANDs per value) and keeping bit 63. Only that bit is needed:

    sign(x) = x₀[63] ⊕ x₁[63] ⊕ c,   c = the carry into bit 63 of x₀ + x₁,

and c is the generate bit of the whole 63-bit range in the carry tree (bit 63 itself
enters as the neutral pair g = 0, p = 1). A tree that computes only that root halves its
width at every level: level k combines the 64/2^k (g, p) pairs of each value into half as
many, with (g, p)_hi ∘ (g, p)_lo = (g_hi ⊕ p_hi ∧ g_lo, p_hi ∧ p_lo). The pairs of all
values are kept packed contiguously in 64-bit words, so level k's two ANDs cost 1/2^k word
per value: 1 (the generate bits) + 1 + ½ + … ≈ 3 word-ANDs per value instead of 13, in the
same seven rounds. Only the sign reaches the arithmetic conversion, as in CrypTen.

Sharing. Party i's arithmetic share x_i is its own input to the circuit: the XOR sharing
of x₀ is (x₀, 0) and of x₁ is (0, x₁). Every value a party sees from the circuit is a
Beaver AND's opening (ε = u ⊕ a, δ = v ⊕ b for the dealer's fresh uniform a, b), so this
reveals nothing more than CrypTen's randomised sharing does; every local step (shifts,
masks with public constants, XOR, OR of disjoint bits) is XOR-linear and applied to each
share. The bit that comes out is the same bit CrypTen's adder gives (tested against it and
against plaintext on the ring's extremes); the shares and the dealer's triples differ.
"""

from __future__ import annotations

from typing import Any

import torch

_WORD_BITS = 64
_LEVELS = 6
_LOW63 = (1 << 63) - 1
_SIGN = -(1 << 63)
"""Bit 63 as a two's-complement int64."""

# masks that move the even bits of a word into its low half (bit 2i -> bit i)
_EVEN = 0x5555555555555555
_SPREAD = (
    (1, 0x3333333333333333),
    (2, 0x0F0F0F0F0F0F0F0F),
    (4, 0x00FF00FF00FF00FF),
    (8, 0x0000FFFF0000FFFF),
    (16, 0x00000000FFFFFFFF),
)


def even_bits(words: torch.Tensor) -> torch.Tensor:
    """Bits 0, 2, …, 62 of each word, packed into bits 0…31 (the rest zero)."""
    packed = words & _EVEN  # bit 63 is cleared, so every shift below is logical
    for shift, mask in _SPREAD:
        packed = (packed | (packed >> shift)) & mask
    return packed


def odd_bits(words: torch.Tensor) -> torch.Tensor:
    """Bits 1, 3, …, 63 of each word, packed into bits 0…31 (the rest zero)."""
    return even_bits(words >> 1)


def join_halves(words: torch.Tensor) -> torch.Tensor:
    """Words of 32 used low bits, two by two into one: word 2j low, word 2j+1 high, so
    values stay in order (the last dimension's length must be even)."""
    return words[..., 0::2] | (words[..., 1::2] << 32)


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """Bit 0 of each element, 64 to a word: element 64·i + j as bit j of word i."""
    flat = bits.reshape(-1) & 1
    padded = torch.zeros(-(-flat.numel() // _WORD_BITS) * _WORD_BITS, dtype=torch.long)
    padded[: flat.numel()] = flat
    positions = torch.arange(_WORD_BITS, device=bits.device)
    # distinct powers of two: the sum is their OR (bit 63 wraps to the sign, as intended)
    return (padded.to(bits.device).reshape(-1, _WORD_BITS) << positions).sum(-1)


def unpack_bits(words: torch.Tensor, count: int) -> torch.Tensor:
    """Bit j of word i as element 64·i + j, the first ``count`` of them."""
    positions = torch.arange(_WORD_BITS, device=words.device)
    bits = (words.unsqueeze(-1) >> positions) & 1
    return bits.reshape(-1)[:count]


def carry_into_sign(
    generate: torch.Tensor, propagate: torch.Tensor, conjunction: Any
) -> torch.Tensor:
    """A party's share of the root generate bit of each word's carry tree, one bit per
    value, packed 64 values to a word (value i is bit i mod 64 of word i // 64).

    ``generate`` and ``propagate`` are this party's XOR shares of one word of (g, p) bits
    per value; their length must be a multiple of 2^6 (padding values are discarded by
    the caller). ``conjunction(u, v)`` is the shared AND of two share tensors (u may
    broadcast against v), the only step that talks to the other party."""
    pairs = torch.stack([generate, propagate])
    for _ in range(_LEVELS):
        low, high = join_halves(even_bits(pairs)), join_halves(odd_bits(pairs))
        # (g, p)_hi ∘ (g, p)_lo: both new bits need p_hi ∧ (g_lo, p_lo), one round
        products = conjunction(high[1:2], low)
        pairs = torch.stack([high[0] ^ products[0], products[1]])
    return pairs[0]


def sign_shares(share: torch.Tensor, rank: int, conjunction: Any) -> torch.Tensor:
    """This party's XOR share (in bit 0) of the sign bit of x = x₀ + x₁, for each element of
    its arithmetic share ``share`` = x_rank (``rank`` 0 or 1); same shape as ``share``."""
    values = share.reshape(-1)
    count = values.numel()
    # the tree halves the words six times: a whole number of 2^6 words (one value each)
    padded = max(-(-count // 2**_LEVELS), 1) * 2**_LEVELS
    own = torch.zeros(padded, dtype=torch.long, device=share.device)
    own[:count] = values & _LOW63
    nothing = torch.zeros_like(own)
    # x₀'s bits are shared as (x₀, 0) and x₁'s as (0, x₁); p gets the neutral bit 63
    mine, theirs = (own, nothing) if rank == 0 else (nothing, own)
    generate = conjunction(mine, theirs)
    propagate = own ^ _SIGN if rank == 0 else own
    carry = unpack_bits(carry_into_sign(generate, propagate, conjunction), count)
    return (carry ^ ((values >> 63) & 1)).reshape(share.shape)


def install() -> None:
    """Compute CrypTen's comparisons with zero (``MPCTensor._ltz``, behind every ReLU, max
    and sign) by :func:`sign_shares` in this process, where two parties compute on CPU
    without active security; elsewhere CrypTen's own conversion runs."""
    from crypten.mpc.mpc import MPCTensor

    original = MPCTensor._ltz
    if getattr(original, "primia", False):
        return

    def ltz(self: Any) -> Any:
        import crypten.communicator as comm
        from crypten.config import cfg
        from crypten.mpc.ptype import ptype as Ptype

        if (
            comm.get().get_world_size() != 2
            or cfg.mpc.active_security
            or self.ptype != Ptype.arithmetic
            or self.share.is_cuda
        ):
            return original(self)
        return _sign_ltz(self, comm.get().get_rank())

    ltz.primia = True  # type: ignore[attr-defined]
    MPCTensor._ltz = ltz


def _conjunction(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The shared AND of two XOR-share tensors, by CrypTen's Beaver AND with the dealer."""
    from crypten.mpc.primitives import BinarySharedTensor, beaver

    shares: torch.Tensor = beaver.AND(
        BinarySharedTensor.from_shares(first), BinarySharedTensor.from_shares(second)
    ).share
    return shares


def _sign_ltz(tensor: Any, rank: int) -> Any:
    """``tensor._ltz()`` as CrypTen returns it (1 where negative, 0 elsewhere, arithmetic
    shares, encoder scale 1), with the sign from :func:`sign_shares`.

    The sign becomes arithmetic as in CrypTen's single-bit conversion: with a random bit r
    dealt both ways, z = sign ⊕ r is opened and the result is r + z − 2·r·z; the opened
    bits travel 64 to a word (CrypTen opens a word per bit)."""
    from crypten.encoder import FixedPointEncoder
    from crypten.mpc.primitives import ArithmeticSharedTensor, BinarySharedTensor
    from crypten.mpc.ptype import ptype as Ptype

    # installed only with the acceleration, whose dealing this is (imported here: the
    # acceleration imports this module)
    from primia.inference.acceleration import random_bits

    sign = sign_shares(tensor.share, rank, _conjunction)
    count = sign.numel()
    random_binary, random_arithmetic = random_bits(sign.size(), device=sign.device)
    masked = BinarySharedTensor.from_shares(pack_bits(sign ^ random_binary))
    opened = unpack_bits(masked.reveal(), count).reshape(sign.shape)
    # the dealer's share of r is read once the opening is done (its answer waited)
    arithmetic = ArithmeticSharedTensor.from_shares(random_arithmetic.result(), precision=0)
    bit = arithmetic * (1 - 2 * opened) + opened
    # what CrypTen's conversion leaves: its encoder for the input's precision, scale 1
    bit.encoder = FixedPointEncoder(precision_bits=0 if tensor.encoder.scale == 1 else None)
    bit.encoder._scale = 1
    result = tensor.shallow_copy()
    result._tensor, result.ptype = bit, Ptype.arithmetic
    return result
