"""Shamir sharing of 32-byte secrets: any t shares recover, fewer do not."""

import itertools
import os

import pytest

from primia.crypto import shamir

SECRET = bytes(range(100, 132))


@pytest.mark.parametrize(("parties", "threshold"), [(2, 2), (5, 3), (7, 7), (6, 1)])
def test_any_threshold_many_shares_recover_the_secret(parties, threshold):
    shares = shamir.split(SECRET, range(1, parties + 1), threshold)
    for size in range(threshold, parties + 1):
        for chosen in itertools.combinations(shares, size):
            assert shamir.combine({x: shares[x] for x in chosen}) == SECRET


def test_shares_are_field_elements_of_fixed_size_for_the_indices_asked():
    shares = shamir.split(SECRET, [3, 9, 27, 81], 2)
    assert sorted(shares) == [3, 9, 27, 81]
    assert all(len(share) == shamir.SHARE_BYTES for share in shares.values())
    assert all(int.from_bytes(share, "big") < shamir.PRIME for share in shares.values())
    assert shamir.combine({9: shares[9], 81: shares[81]}) == SECRET


@pytest.mark.parametrize("secret", [bytes(32), b"\xff" * 32, os.urandom(32)])
def test_extreme_secrets_round_trip(secret):
    shares = shamir.split(secret, range(1, 6), 3)
    assert shamir.combine({x: shares[x] for x in (1, 4, 5)}) == secret


def test_each_split_draws_fresh_coefficients():
    first = shamir.split(SECRET, range(1, 4), 2)
    again = shamir.split(SECRET, range(1, 4), 2)
    assert all(first[x] != again[x] for x in first)


def _combined_or_refused(shares: dict[int, bytes]) -> bytes | None:
    try:
        return shamir.combine(shares)
    except ValueError as error:
        assert "too few, or altered" in str(error)
        return None


@pytest.mark.parametrize(("parties", "threshold"), [(3, 2), (5, 3), (20, 11)])
def test_one_share_short_of_the_threshold_does_not_give_the_secret(parties, threshold):
    shares = shamir.split(SECRET, range(1, parties + 1), threshold)
    for chosen in itertools.islice(itertools.combinations(shares, threshold - 1), 20):
        assert _combined_or_refused({x: shares[x] for x in chosen}) != SECRET


def test_an_altered_share_does_not_give_the_secret():
    shares = shamir.split(SECRET, range(1, 4), 3)
    value = int.from_bytes(shares[2], "big")
    shares[2] = ((value + 1) % shamir.PRIME).to_bytes(shamir.SHARE_BYTES, "big")
    assert _combined_or_refused(shares) != SECRET


@pytest.mark.parametrize("threshold", [0, -1, 4])
def test_a_threshold_outside_one_to_the_number_of_parties_is_refused(threshold):
    with pytest.raises(ValueError, match=f"threshold of {threshold} for 3 shares"):
        shamir.split(SECRET, [1, 2, 3], threshold)


@pytest.mark.parametrize("indices", [[1, 2, 2], [0, 1, 2], [-1, 1, 2], [1, 2, shamir.PRIME]])
def test_indices_must_be_distinct_and_nonzero_field_elements(indices):
    with pytest.raises(ValueError, match="distinct integers from 1"):
        shamir.split(SECRET, indices, 2)


@pytest.mark.parametrize("size", [0, 16, 31, 33])
def test_a_secret_of_another_size_is_refused(size):
    with pytest.raises(ValueError, match=f"32 bytes, not {size}"):
        shamir.split(bytes(size), [1, 2], 2)


def test_combine_refuses_no_shares():
    with pytest.raises(ValueError, match="no shares"):
        shamir.combine({})


def test_combine_refuses_a_share_of_another_size():
    shares = shamir.split(SECRET, [1, 2], 2)
    shares[2] = shares[2][1:]
    with pytest.raises(ValueError, match="66 bytes"):
        shamir.combine(shares)


def test_combine_refuses_a_share_outside_the_field():
    shares = shamir.split(SECRET, [1, 2], 2)
    shares[2] = shamir.PRIME.to_bytes(shamir.SHARE_BYTES, "big")
    with pytest.raises(ValueError, match="outside the field"):
        shamir.combine(shares)
