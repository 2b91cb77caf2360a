"""NHS numbers in bulk: vectorised Modulus 11 checks and test-range numbers for synthetic data."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_WEIGHTS = np.array([10, 9, 8, 7, 6, 5, 4, 3, 2], dtype=np.int64)
_POWERS = 10 ** np.arange(9, -1, -1, dtype=np.int64)
TEST_RANGE_PREFIX = 999  # NHS numbers 999 000 0000 to 999 999 9999 are reserved for testing
TEST_RANGE_CAPACITY = 900_000  # of its 10**6 nine-digit stems, about 10/11 have a valid check digit

Int64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def digits(numbers: Int64Array) -> Int64Array:
    """An (n, 10) array of the decimal digits of ten-digit numbers."""
    return (numbers[:, None] // _POWERS[None, :]) % 10


def check_digits(first_nine: Int64Array) -> Int64Array:
    """Check digits for an (n, 9) digit array; 10 marks prefixes that no valid number has."""
    remainder = (first_nine * _WEIGHTS).sum(axis=1) % 11
    check: Int64Array = (11 - remainder) % 11
    return check


def valid_mask(numbers: Int64Array) -> BoolArray:
    """True where the number has ten digits and a correct Modulus 11 check digit."""
    in_range = (numbers >= 10**9) & (numbers < 10**10)
    all_digits = digits(np.where(in_range, numbers, 0))
    check = check_digits(all_digits[:, :9])
    result: BoolArray = in_range & (check != 10) & (check == all_digits[:, 9])
    return result


def _weighted_remainders(weights: Int64Array) -> npt.NDArray[np.int8]:
    """For every five-digit block 0..99999: its digits weighted by ``weights``, summed, modulo 11."""
    block = np.arange(10**5, dtype=np.int64)
    five = (block[:, None] // 10 ** np.arange(4, -1, -1, dtype=np.int64)) % 10
    remainders: npt.NDArray[np.int8] = ((five * weights).sum(axis=1) % 11).astype(np.int8)
    return remainders


_HIGH = _weighted_remainders(np.arange(10, 5, -1, dtype=np.int64))  # the first five digits, weights 10..6
_LOW = _weighted_remainders(np.arange(5, 0, -1, dtype=np.int64))  # the last five, weights 5..1


def modulus_11_ok(numbers: Int64Array) -> BoolArray:
    """True where a number's ten digits (leading zeros included), weighted 10, 9, ..., 2 and (the check digit) 1,
    sum to a multiple of 11: the rule of the SQL macro ``nhs_number_ok``, for numbers from 0 to 10**10 - 1.

    Two table look-ups a number (its first and last five digits), not ten divisions."""
    high, low = np.divmod(numbers, 10**5)
    total = _HIGH[high] + _LOW[low]  # each below 11, so the sum is a multiple of 11 only when 0 or 11
    result: BoolArray = (total == 0) | (total == 11)
    return result


def test_range_numbers(count: int, rng: np.random.Generator) -> Int64Array:
    """``count`` distinct valid NHS numbers from the range reserved for testing (at most 900,000 exist)."""
    if count > TEST_RANGE_CAPACITY:
        raise ValueError(f"the NHS test range holds about {TEST_RANGE_CAPACITY:,} valid numbers; asked for {count:,}")
    chosen: Int64Array = np.empty(0, dtype=np.int64)
    while chosen.size < count:
        body = TEST_RANGE_PREFIX * 10**6 + rng.integers(0, 10**6, size=int(count * 1.3) + 16, dtype=np.int64)
        check = check_digits(digits(body * 10)[:, :9])
        candidates = body[check != 10] * 10 + check[check != 10]
        chosen = np.unique(np.concatenate([chosen, candidates]))
    picked: Int64Array = rng.permutation(chosen)[:count]
    return picked
