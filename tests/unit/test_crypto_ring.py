"""Fixed-point encoding into Z_2^k: no wrap for n summands, unbiased rounding, clipping."""

from fractions import Fraction

import numpy as np
import pytest

from primia.crypto.ring import FixedPoint, ring_bytes, ring_values
from primia.errors import ConfigError

SIGNED = {32: np.int32, 64: np.int64}


def _ring_sum(fixed_point: FixedPoint, encodings: list[np.ndarray]) -> np.ndarray:
    """Σ encodings mod 2^k, as the coordinator adds them."""
    total = np.zeros_like(encodings[0])
    for values in encodings:
        np.add(total, values, out=total)
    assert total.dtype == fixed_point.dtype
    return total


def _float_tolerance(fixed_point: FixedPoint, summands: int) -> float:
    """One unit per summand of rounding, plus float64's 53 bits falling short of a 64-bit
    ring: s·x and the decoded sum are float64 products."""
    return summands * (fixed_point.resolution + 4 * fixed_point.clip * 2.0**-53)


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("summands", [1, 2, 3, 5, 20, 1000])
@pytest.mark.parametrize("clip", [8.0, 3.0, 0.7])
@pytest.mark.parametrize("sign", [1, -1])
def test_for_sum_cannot_wrap_with_every_summand_at_the_clip(bits, summands, clip, sign):
    fixed_point = FixedPoint.for_sum(summands=summands, clip=clip, bits=bits)
    rng = np.random.default_rng(0)
    extreme = np.full(8, sign * clip)
    encodings = [fixed_point.encode(extreme, rng).values for _ in range(summands)]

    signed = [values.view(SIGNED[bits]) for values in encodings]
    assert all(np.all(np.sign(values) == sign) for values in signed), "one encoding wrapped"
    decoded = fixed_point.decode(_ring_sum(fixed_point, encodings))
    np.testing.assert_allclose(
        decoded, sign * summands * clip, rtol=0, atol=_float_tolerance(fixed_point, summands)
    )


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("summands", [1, 5, 20])
def test_for_sum_scale_lies_within_the_bound_and_wastes_at_most_one_bit(bits, summands):
    """s ≤ ((2^(k−1) − 1)/n − 1)/c in exact arithmetic (not in float64, whose 53 bits
    round the 64-bit bound up), and more than half of it."""
    clip = 8.0
    fixed_point = FixedPoint.for_sum(summands=summands, clip=clip, bits=bits)
    bound = (Fraction(2 ** (bits - 1) - 1, summands) - 1) / Fraction(clip)
    assert bound / 2 < Fraction(fixed_point.scale) <= bound
    assert fixed_point.resolution == 1 / fixed_point.scale


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("units", [0.25, 0.7, -0.25, -3.7, 12.5])
def test_stochastic_rounding_is_unbiased(bits, units):
    """E[enc(x)] = s·x: x a fraction of a unit away from the grid averages out to s·x."""
    fixed_point = FixedPoint.for_sum(summands=4, clip=2.0, bits=bits)
    samples = 200_000
    encoded = fixed_point.encode(
        np.full(samples, units / fixed_point.scale), np.random.default_rng(1)
    )
    as_units = encoded.values.view(SIGNED[bits]).astype(np.float64)

    assert set(np.unique(as_units)) == {np.floor(units), np.floor(units) + 1}
    fraction = units - np.floor(units)
    standard_error = np.sqrt(fraction * (1 - fraction) / samples)
    assert abs(as_units.mean() - units) < 6 * standard_error


def test_rounding_noise_comes_from_the_generator():
    fixed_point = FixedPoint.for_sum(summands=3, clip=1.0)
    values = np.random.default_rng(2).uniform(-1, 1, 1000)

    first = fixed_point.encode(values, np.random.default_rng(5)).values
    again = fixed_point.encode(values, np.random.default_rng(5)).values
    other = fixed_point.encode(values, np.random.default_rng(6)).values
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_clipped_values_are_counted_and_encoded_at_the_clip():
    fixed_point = FixedPoint.for_sum(summands=2, clip=8.0)
    values = np.array([-np.inf, -10.0, -8.0, 0.0, 7.5, 8.0, 8.001, 100.0, np.inf])

    encoded = fixed_point.encode(values, np.random.default_rng(0))

    assert encoded.clipped == 5  # -inf, -10, 8.001, 100, inf; ±8 lie in the range
    decoded = fixed_point.decode(encoded.values)
    expected = np.array([-8.0, -8.0, -8.0, 0.0, 7.5, 8.0, 8.0, 8.0, 8.0])
    np.testing.assert_allclose(decoded, expected, rtol=0, atol=fixed_point.resolution)


def test_nothing_clipped_within_the_range():
    fixed_point = FixedPoint.for_sum(summands=2, clip=1.0)
    encoded = fixed_point.encode(np.linspace(-1, 1, 101), np.random.default_rng(0))
    assert encoded.clipped == 0


def test_encode_flattens_and_returns_the_ring_dtype():
    fixed_point = FixedPoint.for_sum(summands=2, clip=1.0, bits=64)
    encoded = fixed_point.encode(np.zeros((3, 4)), np.random.default_rng(0))
    assert encoded.values.shape == (12,)
    assert encoded.values.dtype == np.uint64


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("summands", [2, 7, 50])
def test_decoded_sum_of_encodings_is_the_sum_of_the_inputs(bits, summands):
    clip = 5.0
    fixed_point = FixedPoint.for_sum(summands=summands, clip=clip, bits=bits)
    rng = np.random.default_rng(summands)
    inputs = rng.uniform(-clip, clip, size=(summands, 1000))

    encodings = [fixed_point.encode(row, rng).values for row in inputs]
    decoded = fixed_point.decode(_ring_sum(fixed_point, encodings))

    np.testing.assert_allclose(
        decoded, inputs.sum(axis=0), rtol=0, atol=_float_tolerance(fixed_point, summands)
    )


def test_decode_refuses_a_vector_of_another_ring():
    fixed_point = FixedPoint.for_sum(summands=2, clip=1.0, bits=32)
    with pytest.raises(ValueError, match="uint32"):
        fixed_point.decode(np.zeros(3, dtype=np.uint64))


@pytest.mark.parametrize("bad", [np.nan, [1.0, np.nan, 2.0]])
def test_nan_is_refused(bad):
    fixed_point = FixedPoint.for_sum(summands=2, clip=1.0)
    with pytest.raises(ValueError, match="NaN"):
        fixed_point.encode(bad, np.random.default_rng(0))


@pytest.mark.parametrize("bits", [0, 16, 31, 128])
def test_ring_bits_other_than_32_or_64_are_refused(bits):
    with pytest.raises(ConfigError, match="32 or 64"):
        FixedPoint(bits=bits, scale=10.0, clip=1.0)
    with pytest.raises(ConfigError, match="32 or 64"):
        FixedPoint.for_sum(summands=2, clip=1.0, bits=bits)


@pytest.mark.parametrize("clip", [0.0, -1.0, np.inf, np.nan])
def test_a_clip_that_is_not_a_positive_number_is_refused(clip):
    with pytest.raises(ConfigError, match="clipping range"):
        FixedPoint(bits=32, scale=10.0, clip=clip)
    with pytest.raises(ConfigError, match="clipping range"):
        FixedPoint.for_sum(summands=2, clip=clip)


def test_a_sum_needs_a_summand():
    with pytest.raises(ConfigError, match="at least one summand"):
        FixedPoint.for_sum(summands=0, clip=1.0)


def test_a_scale_below_one_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="raise the ring bits to 64"):
        FixedPoint.for_sum(summands=1000, clip=1e7, bits=32)
    assert FixedPoint.for_sum(summands=1000, clip=1e7, bits=64).scale >= 1


@pytest.mark.parametrize(("bits", "dtype"), [(32, np.uint32), (64, np.uint64)])
def test_ring_values_round_trip_through_little_endian_bytes(bits, dtype):
    values = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, 1000, dtype=dtype)
    values[:2] = [1, np.iinfo(dtype).max]
    data = ring_bytes(values)

    assert len(data) == 1000 * bits // 8
    assert data[: bits // 8] == (1).to_bytes(bits // 8, "little")
    back = ring_values(data, bits)
    assert back.dtype == dtype
    assert np.array_equal(back, values)


def test_ring_bytes_are_little_endian_whatever_the_array_byte_order():
    values = np.array([1, 2**32 - 2], dtype=">u4")
    assert ring_bytes(values) == b"\x01\x00\x00\x00\xfe\xff\xff\xff"


@pytest.mark.parametrize(("bits", "size"), [(32, 3), (32, 4001), (64, 12), (64, 7)])
def test_bytes_of_a_partial_ring_element_are_refused(bits, size):
    with pytest.raises(ValueError, match=f"{size} bytes are not a whole number of {bits}-bit"):
        ring_values(bytes(size), bits)
