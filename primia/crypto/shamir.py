"""Shamir secret sharing of 32-byte secrets over the prime field GF(2^521 − 1).

A secret S (read as an integer < 2^256 < p) is the constant term of a random polynomial
f of degree t − 1; the share of the party with index x ≥ 1 is f(x). Any t shares give
S = Σ_j f(x_j) Π_{m≠j} x_m / (x_m − x_j) (Lagrange at 0); any t − 1 shares are uniformly
distributed whatever S is, so they reveal nothing. Coefficients come from the OS's CSPRNG.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping

PRIME = 2**521 - 1
"""A Mersenne prime, larger than any 256-bit secret."""
SHARE_BYTES = 66
SECRET_BYTES = 32


def split(secret: bytes, indices: Iterable[int], threshold: int) -> dict[int, bytes]:
    """The share of ``secret`` for each party index (distinct, 1 ≤ x < p); any
    ``threshold`` of them recover it."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"a secret is {SECRET_BYTES} bytes, not {len(secret)}")
    xs = list(indices)
    if len(set(xs)) != len(xs) or any(not 1 <= x < PRIME for x in xs):
        raise ValueError("share indices must be distinct integers from 1")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"a threshold of {threshold} for {len(xs)} shares cannot work")
    coefficients = [int.from_bytes(secret, "big")] + [
        secrets.randbelow(PRIME) for _ in range(threshold - 1)
    ]
    return {x: _evaluate(coefficients, x).to_bytes(SHARE_BYTES, "big") for x in xs}


def combine(shares: Mapping[int, bytes]) -> bytes:
    """The secret from shares {index: share}; at least the threshold many are needed (with
    fewer the result is a meaningless value, which the caller's checks will reject)."""
    if not shares:
        raise ValueError("no shares to combine")
    points = [(x, int.from_bytes(share, "big")) for x, share in shares.items()]
    if any(len(share) != SHARE_BYTES for share in shares.values()):
        raise ValueError(f"a share is {SHARE_BYTES} bytes")
    if any(y >= PRIME for _, y in points):
        raise ValueError("a share lies outside the field")
    total = 0
    for j, (x_j, y_j) in enumerate(points):
        numerator, denominator = 1, 1
        for m, (x_m, _) in enumerate(points):
            if m != j:
                numerator = numerator * x_m % PRIME
                denominator = denominator * (x_m - x_j) % PRIME
        total = (total + y_j * numerator * pow(denominator, -1, PRIME)) % PRIME
    if total >= 2 ** (8 * SECRET_BYTES):
        raise ValueError("the shares do not combine to a secret: too few, or altered")
    return total.to_bytes(SECRET_BYTES, "big")


def _evaluate(coefficients: list[int], x: int) -> int:
    value = 0
    for coefficient in reversed(coefficients):
        value = (value * x + coefficient) % PRIME
    return value
