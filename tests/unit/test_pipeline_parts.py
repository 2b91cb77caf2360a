"""The pieces of the streaming extract pipeline, each against a plain statement of what it must do."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tre.data._arrays import boolean_array, int64_values
from tre.data._nhs import modulus_11_ok
from tre.data._readahead import ReadAhead
from tre.data._stages import StageClock
from tre.data._transform import OptOutList, valid_numbers
from tre.governance.nhs_number import check_digit, is_valid_nhs_number


def _with_check_digit(nine: int) -> int:
    check = check_digit(f"{nine:09d}")
    return nine * 10 + (check if check is not None else 0)


ten_digit_numbers = st.one_of(
    st.integers(0, 10**10 - 1),
    st.integers(0, 10**9 - 1).map(_with_check_digit),  # right check digit (or the impossible remainder 10)
)


@settings(max_examples=300)
@given(numbers=st.lists(ten_digit_numbers, min_size=1, max_size=200))
def test_modulus_11_by_table_look_up_is_the_textbook_rule(numbers: list[int]) -> None:
    got = modulus_11_ok(np.array(numbers, dtype=np.int64))
    assert got.tolist() == [is_valid_nhs_number(f"{n:010d}") for n in numbers]


def test_numbers_without_ten_digits_are_never_valid() -> None:
    numbers = np.array([-1, -1, _with_check_digit(999_000_004), 0], dtype=np.int64)
    assert valid_numbers(numbers).tolist() == [False, False, True, True]  # 0000000000 passes Modulus 11, as in SQL


numbers_near_each_other = st.integers(0, 10**10 - 1).flatmap(
    # many numbers share a bucket of the opt-out bitmap (number mod 2**22): the binary search must still decide
    lambda base: st.lists(st.integers(0, 40).map(lambda k: (base + k * 2**22) % 10**10), max_size=40)
)


@settings(max_examples=200)
@given(optouts=numbers_near_each_other, asked=st.lists(st.integers(-1, 10**10 - 1), max_size=60), extra=st.data())
def test_opt_out_membership_is_set_membership(optouts: list[int], asked: list[int], extra: st.DataObject) -> None:
    asked += extra.draw(st.lists(st.sampled_from(optouts), max_size=20)) if optouts else []
    listed = OptOutList(np.array(optouts, dtype=np.int64))
    got = listed.contains(np.array(asked, dtype=np.int64))
    assert got.tolist() == [n in set(optouts) for n in asked]


def test_int64_values_reads_a_slice_without_copying() -> None:
    array = pa.array(range(10), pa.int64()).slice(3, 4)
    values = int64_values(array)
    assert values.tolist() == [3, 4, 5, 6]
    assert not values.flags.owndata
    with pytest.raises(ValueError, match="without NULLs"):
        int64_values(pa.array([1, None], pa.int64()))
    with pytest.raises(ValueError, match="int64"):
        int64_values(pa.array([1], pa.int32()))


@given(values=st.lists(st.booleans(), max_size=70))
def test_boolean_array_round_trips(values: list[bool]) -> None:
    assert boolean_array(np.array(values, dtype=bool)).to_pylist() == values


# ---- read-ahead: errors reach the consumer, and stopping never hangs --------------------------------------------


def test_read_ahead_yields_every_item_in_order() -> None:
    ahead = ReadAhead(iter(range(100)), 2)
    try:
        assert list(ahead) == list(range(100))
    finally:
        ahead.close()


def test_an_error_while_reading_is_raised_in_the_consumer() -> None:
    def items() -> Iterator[int]:
        yield 1
        raise ValueError("row 7 is bad")

    ahead = ReadAhead(items(), 2)
    got: list[int] = []
    try:
        with pytest.raises(ValueError, match="row 7 is bad"):
            got.extend(ahead)
    finally:
        ahead.close()
    assert got == [1]


def test_closing_stops_a_producer_that_would_never_end_and_closes_its_source() -> None:
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.set()

    before = threading.active_count()
    ahead = ReadAhead(endless(), 2)
    assert next(iter(ahead)) == 0
    ahead.close()
    assert closed.is_set()
    assert threading.active_count() == before


def test_chained_read_aheads_stop_when_cancelled_together() -> None:
    """The middle stage waits on a slow first stage; cancelling both must not leave it waiting."""
    release = threading.Event()

    def slow() -> Iterator[int]:
        yield 1
        release.wait(30)  # the first stage stalls (e.g. a huge block) until released
        yield 2

    before = threading.active_count()
    first = ReadAhead(slow(), 1)
    second = ReadAhead((n * 10 for n in first), 1)
    assert next(iter(second)) == 10
    first.cancel()
    second.cancel()
    second.close()  # returns although the first stage has not produced its next item
    release.set()
    first.close()
    assert threading.active_count() == before


def test_stage_clock_counts_time_and_closes_what_it_wraps() -> None:
    closed = threading.Event()

    def items() -> Iterator[int]:
        try:
            yield from range(5)
        finally:
            closed.set()

    clock = StageClock()
    timed = clock.each("read", items())
    assert next(timed) == 0
    timed.close()
    assert closed.is_set()
    with clock.stage("sql"):
        sum(range(10_000))
    assert set(clock.seconds) == {"read", "sql"}
    assert all(seconds >= 0 for seconds in clock.seconds.values())
