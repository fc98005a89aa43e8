"""The pure parts of :mod:`primia.inference.acceleration`: the random ring elements two
holders of one generator draw, and the product sizes computed on shapes only. (The
multiplication and AND identities are checked end to end: encrypted logits against
plaintext in tests/integration/test_encrypted_inference.py, whose sessions use them.)"""

from __future__ import annotations

import torch

from primia.inference.acceleration import dealer_seeds, keystream, product_size, ring_random


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_holders_of_one_generator_draw_the_same_elements_and_others_do_not() -> None:
    mine, copy, other = _generator(7), _generator(7), _generator(8)
    for size in [(3, 5), (1,), (), (2, 64, 9, 9)]:
        drawn = ring_random(size, generator=mine)
        assert drawn.dtype == torch.int64 and drawn.shape == torch.Size(size)
        assert torch.equal(drawn, ring_random(size, generator=copy))
    many = ring_random((4096,), generator=mine)
    assert not torch.equal(many, ring_random((4096,), generator=other))
    assert not torch.equal(many, ring_random((4096,), generator=mine))  # the generator moved on


def test_elements_depend_on_all_64_bits_of_the_seed() -> None:
    """torch starts its Mersenne Twister from a seed's low 32 bits: seeds that differ
    above them give the same words, so keys drawn from the words alone had 32 bits of
    secrecy, and whoever saw one draw (the model owner: a dealt triple it can check, or
    its own seed from the dealer's generator) found the seed by trying all 2^32."""
    low, high = 0x12345678, 0x12345678 + (0x9ABC << 40)
    words = [torch.randint(-(2**63), 2**63 - 1, (4,), generator=_generator(s)) for s in (low, high)]
    assert torch.equal(*words)  # the premise: torch's generator ignores the high bits
    assert not torch.equal(
        ring_random((64,), generator=_generator(low)),
        ring_random((64,), generator=_generator(high)),
    )


def test_the_dealers_seeds_do_not_come_from_torchs_generator() -> None:
    """CrypTen's dealer drew its seeds from torch's default generator (32 bits of start):
    given one seed, the next followed. Ours come from the operating system."""
    torch.manual_seed(0)
    first = dealer_seeds(2)
    torch.manual_seed(0)
    again = dealer_seeds(2)
    assert first[0].dtype == torch.int64 and first[0].dim() == 0
    assert len({int(s) for s in first + again}) == 4


def test_elements_cover_the_ring_and_k_bit_elements_their_range() -> None:
    elements = ring_random((1 << 16,), generator=_generator(1))
    assert (elements < 0).any() and (elements > 0).any()
    # every one of the 64 bits is set in about half the elements
    bits = (elements.unsqueeze(1) >> torch.arange(64)) & 1
    assert ((bits.float().mean(0) - 0.5).abs() < 0.02).all()
    one_bit = ring_random((1 << 12,), generator=_generator(1), bitlength=1)
    assert set(one_bit.unique().tolist()) == {0, 1}
    twenty = ring_random((1 << 12,), generator=_generator(1), bitlength=20)
    assert twenty.min() >= 0 and twenty.max() < 1 << 20


def test_keystream_is_aes_ctr_of_zeros_at_every_length() -> None:
    key = bytes(range(16))
    long = keystream(key, 100)
    for size in (0, 1, 15, 16, 17, 33):
        assert torch.equal(keystream(key, size), long[:size])


def test_product_sizes_match_the_products() -> None:
    image, weight = torch.zeros(2, 3, 9, 9, dtype=torch.long), torch.ones(4, 3, 3, 3).long()
    for options in [
        {"stride": 2, "padding": 1},
        {"stride": (1, 2), "padding": (0, 2), "dilation": 2},
        {"stride": 1, "padding": 0, "dilation": 1, "groups": 1},
    ]:
        conv = torch.conv2d(image, weight, **options)
        assert product_size("conv2d", image.shape, weight.shape, **options) == conv.shape
    grouped = torch.conv2d(image[:, :2], weight[:, :1], groups=2, padding=1)
    assert product_size("conv2d", (2, 2, 9, 9), (4, 1, 3, 3), groups=2, padding=1) == grouped.shape
    line = torch.conv1d(image[0, :, 0], weight[:, :, 0], stride=3)
    assert product_size("conv1d", (3, 9), (4, 3, 3), stride=3) == line.shape  # unbatched
    assert product_size("conv1d", (1, 3, 9), (4, 3, 3), stride=3) == (1, *line.shape)
    assert product_size("matmul", (5, 3), (3, 2)) == torch.Size([5, 2])
    assert product_size("matmul", (7, 1, 5, 3), (6, 3, 2)) == torch.Size([7, 6, 5, 2])
    assert product_size("matmul", (3,), (3, 2)) == torch.Size([2])
    assert product_size("mul", (5, 1), (1, 4)) == torch.Size([5, 4])
