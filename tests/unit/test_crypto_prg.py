"""Masks: AES-256-CTR keystreams as k-bit words, added and removed exactly."""

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from scipy import stats

from primia.crypto.prg import BLOCK_BYTES, SEED_BYTES, MaskGenerator

SEED = bytes(range(SEED_BYTES))
OTHER_SEED = bytes(range(1, SEED_BYTES + 1))


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_a_seed_always_gives_the_same_mask(dtype):
    first = MaskGenerator(1000, dtype).mask(SEED)
    again = MaskGenerator(1000, dtype).mask(SEED)
    assert first.dtype == dtype and first.shape == (1000,)
    assert np.array_equal(first, again)


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_different_seeds_give_unrelated_masks(dtype):
    generator = MaskGenerator(1000, dtype)
    first, other = generator.mask(SEED), generator.mask(OTHER_SEED)
    assert np.count_nonzero(first == other) <= 1


def test_the_mask_is_the_aes_ctr_keystream_from_counter_zero_little_endian():
    """Known answer, from AES-256 in ECB on the counter blocks 0, 1, 2, … (big-endian)."""
    encryptor = Cipher(algorithms.AES(SEED), modes.ECB()).encryptor()
    keystream = b"".join(encryptor.update(block.to_bytes(16, "big")) for block in range(4))

    words32 = MaskGenerator(16, np.uint32).mask(SEED)
    words64 = MaskGenerator(8, np.uint64).mask(SEED)

    assert np.array_equal(words32, np.frombuffer(keystream, dtype="<u4"))
    assert np.array_equal(words64, np.frombuffer(keystream, dtype="<u8"))


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_a_mask_longer_than_a_block_is_one_keystream(dtype):
    """Made a block at a time, the words are still one AES-CTR stream from counter 0."""
    length = 2 * BLOCK_BYTES // np.dtype(dtype).itemsize + 3
    encryptor = Cipher(algorithms.AES(SEED), modes.CTR(bytes(16))).encryptor()
    keystream = encryptor.update(bytes(length * np.dtype(dtype).itemsize))
    expected = np.frombuffer(keystream, dtype=np.dtype(dtype).newbyteorder("<"))
    assert np.array_equal(MaskGenerator(length, dtype).mask(SEED), expected)
    target = np.arange(length, dtype=dtype)
    MaskGenerator(length, dtype).add(target, SEED, -1)
    assert np.array_equal(target + expected, np.arange(length, dtype=dtype))


def test_an_empty_vector_is_left_as_it_is():
    generator = MaskGenerator(0, np.uint32)
    assert generator.mask(SEED).shape == (0,)


def test_a_mask_is_a_copy_that_later_masks_do_not_overwrite():
    generator = MaskGenerator(100, np.uint32)
    first = generator.mask(SEED)
    kept = first.copy()
    generator.mask(OTHER_SEED)
    assert np.array_equal(first, kept)


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_add_is_addition_mod_2k_and_subtracting_restores_the_vector(dtype):
    generator = MaskGenerator(5000, dtype)
    original = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, 5000, dtype=dtype)
    target = original.copy()

    generator.add(target, SEED)
    assert np.array_equal(target, original + generator.mask(SEED))  # numpy wraps mod 2^k
    generator.add(target, SEED, -1)
    assert np.array_equal(target, original)


def test_masks_of_several_seeds_cancel_in_any_order():
    generator = MaskGenerator(1000, np.uint64)
    target = np.arange(1000, dtype=np.uint64)
    generator.add(target, SEED)
    generator.add(target, OTHER_SEED, -1)
    generator.add(target, SEED, -1)
    generator.add(target, OTHER_SEED)
    assert np.array_equal(target, np.arange(1000, dtype=np.uint64))


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((999,), np.uint32), ((1001,), np.uint32), ((10, 100), np.uint32), ((1000,), np.uint64)],
)
def test_add_refuses_a_vector_of_another_length_or_dtype(shape, dtype):
    generator = MaskGenerator(1000, np.uint32)
    with pytest.raises(ValueError, match="expected a vector of 1000 uint32"):
        generator.add(np.zeros(shape, dtype=dtype), SEED)


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_a_seed_of_another_size_is_refused(size):
    generator = MaskGenerator(10, np.uint32)
    with pytest.raises(ValueError, match=f"32 bytes, not {size}"):
        generator.mask(bytes(size))
    with pytest.raises(ValueError, match=f"32 bytes, not {size}"):
        generator.add(np.zeros(10, dtype=np.uint32), bytes(size))


@pytest.mark.parametrize("sign", [0, 2, -2])
def test_add_refuses_a_sign_other_than_plus_or_minus_one(sign):
    generator = MaskGenerator(10, np.uint32)
    target = np.zeros(10, dtype=np.uint32)
    with pytest.raises(ValueError, match="sign must be"):
        generator.add(target, SEED, sign)
    assert not target.any()


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_mask_bytes_look_uniform(dtype):
    """Chi-square over 256 bins of the lowest and the highest byte of each word."""
    values = MaskGenerator(100_000, dtype).mask(SEED)
    top_shift = 8 * (np.dtype(dtype).itemsize - 1)
    for byte in (values & 0xFF, values >> dtype(top_shift)):
        counts = np.bincount(byte.astype(np.intp), minlength=256)
        assert stats.chisquare(counts).pvalue > 1e-4


def test_mask_words_average_half_the_ring():
    values = MaskGenerator(100_000, np.uint32).mask(SEED).astype(np.float64)
    standard_error = 2.0**32 / np.sqrt(12 * values.size)
    assert abs(values.mean() - 2.0**31) < 6 * standard_error
