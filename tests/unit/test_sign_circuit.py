"""The sign-bit circuit of :mod:`primia.inference.sign_circuit` as pure logic.

The two parties run in two threads; the one step that needs the other party, the shared
AND, is played by a dealer that opens both inputs and shares the product afresh (in a
session, Beaver's AND with CrypTen's dealer: covered by the integration tests).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import torch

from primia.inference.sign_circuit import (
    even_bits,
    join_halves,
    odd_bits,
    pack_bits,
    sign_shares,
    unpack_bits,
)

TOP = 2**63 - 1
BOTTOM = -(2**63)


def _random(count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(BOTTOM, TOP, (count,), generator=generator)


def _unsigned(value: int) -> int:
    return value & (2**64 - 1)


class _Dealer:
    """Both parties' shared ANDs, in lockstep: each call waits for the other party's."""

    def __init__(self, seed: int) -> None:
        self._inputs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._outputs: tuple[torch.Tensor, torch.Tensor] | None = None
        self._dealt = threading.Barrier(2, action=self._deal)
        self._read = threading.Barrier(2)
        self._generator = torch.Generator().manual_seed(seed)
        self.calls = 0

    def _deal(self) -> None:
        (u0, v0), (u1, v1) = self._inputs[0], self._inputs[1]
        product = (u0 ^ u1) & (v0 ^ v1)
        mask = torch.randint(BOTTOM, TOP, product.shape, generator=self._generator)
        self._outputs = (mask, product ^ mask)
        self.calls += 1

    def party(self, rank: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        def conjunction(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
            self._inputs[rank] = (first, second)
            self._dealt.wait()
            assert self._outputs is not None
            output = self._outputs[rank]
            self._read.wait()  # both have read this AND's output before the next one
            return output

        return conjunction


def _sign(first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The opened sign bits of first + second (mod 2^64), and the number of AND rounds."""
    dealer = _Dealer(seed=7)
    shares: dict[int, torch.Tensor] = {}

    def run(rank: int, share: torch.Tensor) -> None:
        shares[rank] = sign_shares(share, rank, dealer.party(rank))

    threads = [threading.Thread(target=run, args=item) for item in enumerate((first, second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert shares[0].shape == first.shape
    return (shares[0] ^ shares[1]) & 1, dealer.calls


def test_even_and_odd_bits_pack_into_the_low_half() -> None:
    words = torch.cat([_random(500, seed=1), torch.tensor([0, -1, TOP, BOTTOM])])
    packed = zip(words.tolist(), even_bits(words).tolist(), odd_bits(words).tolist(), strict=True)
    for word, even, odd in packed:
        bits = _unsigned(word)
        assert even == sum(((bits >> (2 * i)) & 1) << i for i in range(32))
        assert odd == sum(((bits >> (2 * i + 1)) & 1) << i for i in range(32))


def test_joined_halves_keep_the_values_in_order() -> None:
    low = torch.tensor([0x89ABCDEF, 0x01234567, 0xFFFFFFFF, 0x1])
    assert join_halves(low).tolist() == [0x0123456789ABCDEF, (0x1 << 32) + 0xFFFFFFFF]


@pytest.mark.parametrize("count", [1, 63, 64, 65, 4096, 10_007])
def test_sign_of_randomly_split_values_is_their_sign(count: int) -> None:
    values = _random(count, seed=count)
    first = _random(count, seed=count + 1)
    signs, rounds = _sign(first, values - first)  # int64 arithmetic wraps mod 2^64
    assert torch.equal(signs, (values < 0).long())
    assert rounds == 7  # the generate bits, then six levels: CrypTen's adder has as many


def test_sign_where_the_carry_decides_it() -> None:
    # share pairs whose low 63 bits carry into bit 63, or just fail to, at the extremes
    pairs = [
        (TOP, 1),  # 2^63: a carry makes it negative
        (TOP, 0),
        (-1, 1),  # 0: carry and both tops cancel
        (-1, -1),
        (2**62, 2**62),  # carry from bit 62 alone
        (2**62, 2**62 - 1),
        (BOTTOM, BOTTOM),
        (BOTTOM, 0),
        (0, 0),
        (1, -2),
        (2**62 + 1, 2**62 - 1),
    ]
    first = torch.tensor([a for a, _ in pairs])
    second = torch.tensor([b for _, b in pairs])
    signs, _ = _sign(first, second)
    assert torch.equal(signs, ((first + second) < 0).long())


def test_shares_keep_their_shape() -> None:
    values = _random(3 * 5 * 7, seed=3).reshape(3, 5, 7)
    first = _random(3 * 5 * 7, seed=4).reshape(3, 5, 7)
    signs, _ = _sign(first, values - first)
    assert torch.equal(signs, (values < 0).long())


@pytest.mark.parametrize("count", [1, 64, 65, 130])
def test_packed_bits_unpack_to_the_same_bits(count: int) -> None:
    bits = _random(count, seed=count) & 1
    words = pack_bits(bits)
    assert words.numel() == -(-count // 64)
    assert torch.equal(unpack_bits(words, count), bits)
