"""The middle of an extract, one batch at a time: the exact filter, the NHS number check and the opt-out list,
generalisation. DuckDB does what SQL states (the filter, the NHS number's normalisation, generalisation); NumPy does
the Modulus 11 check and the opt-out look-up."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tre.data._arrays import boolean_array, int64_values
from tre.data._nhs import BoolArray, Int64Array, modulus_11_ok
from tre.data._plan import ExtractPlan, Transform
from tre.data._sql import (
    NUMBER_COLUMN,
    Parameters,
    batch_sql,
    outward_sql,
    quote,
)
from tre.data._stages import StageClock

SQL, OPT_OUT = "sql", "opt-out"  # stage names
_TABLE_NAME = "#batch"
TABLE = quote(_TABLE_NAME)  # the table a query's input is registered as


class OptOutList:
    """The opted-out NHS numbers, for fast membership tests of many numbers at once.

    Sorted and distinct for a binary search, with a bitmap of the buckets (number mod 2**22) that hold any: most
    numbers asked about are settled by one look-up in it, and only the rest are searched for."""

    _BUCKETS = 2**22

    def __init__(self, numbers: Int64Array) -> None:
        self.numbers: Int64Array = np.unique(numbers)
        self._occupied: BoolArray = np.zeros(self._BUCKETS, dtype=bool)
        self._occupied[self.numbers % self._BUCKETS] = True

    def contains(self, numbers: Int64Array) -> BoolArray:
        found: BoolArray = np.zeros(numbers.size, dtype=bool)
        if self.numbers.size == 0:
            return found
        maybe = self._occupied[numbers % self._BUCKETS]
        candidates = numbers[maybe]
        at = np.minimum(np.searchsorted(self.numbers, candidates), self.numbers.size - 1)
        found[maybe] = self.numbers[at] == candidates
        return found


def load_optouts(optouts: Path | None) -> OptOutList:
    """The opt-out list stored as Parquet (column ``nhs_number``), or an empty one."""
    if optouts is None:
        return OptOutList(np.empty(0, dtype=np.int64))
    column = pq.ParquetFile(optouts).read(columns=["nhs_number"]).column("nhs_number")
    return OptOutList(int64_values(column.cast(pa.int64()).drop_null().combine_chunks()))


def valid_numbers(numbers: Int64Array) -> BoolArray:
    """Numbers of ten digits (-1 stands for anything else) with a correct Modulus 11 check digit."""
    valid: BoolArray = numbers >= 0
    valid[valid] = modulus_11_ok(numbers[valid])
    return valid


@dataclass
class Tally:
    matching: int = 0
    invalid: int = 0
    opted: int = 0


def query(con: duckdb.DuckDBPyConnection, sql: str, table: pa.Table, params: dict[str, Any] | None = None) -> pa.Table:
    """The result of ``sql`` over ``table`` (which it names ``TABLE``)."""
    con.register(_TABLE_NAME, table)
    try:
        return con.sql(sql, params=params).to_arrow_table()
    finally:
        con.unregister(_TABLE_NAME)


def per_value(values: pa.ChunkedArray | pa.Array, work: Callable[[pa.Array], pa.Array]) -> pa.Array:
    """``work`` (Arrow array to Arrow array) done once per distinct value, spread back over the rows; NULL stays."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    encoded = pc.dictionary_encode(values)
    result: pa.Array = work(encoded.dictionary).take(encoded.indices)
    return result


class BatchTransform:
    """Takes a batch of source rows (after the first cut) to the rows the extract keeps, generalised; direct
    identifiers still as the text their pseudonyms are keyed on, and the NHS number as its number."""

    def __init__(
        self,
        plan: ExtractPlan,
        con: duckdb.DuckDBPyConnection,
        optouts: OptOutList,
        clock: StageClock,
        *,
        queried: bool = False,
    ) -> None:
        """``queried``: the batches are the batch query's result already (DuckDB ran it as it read the source)."""
        self._plan, self._con, self._optouts, self._clock = plan, con, optouts, clock
        self._params = Parameters()
        self._sql = None if queried else batch_sql(plan, self._params, TABLE)
        self._outward = [c.name for c in plan.outputs if c.transform is Transform.OUTWARD_CODE]
        self.tally = Tally()

    def __call__(self, batch: pa.Table) -> pa.Table:
        matching = batch
        if self._sql is not None:
            with self._clock.stage(SQL):
                matching = query(self._con, self._sql, batch, self._params.values)
        with self._clock.stage(OPT_OUT):
            kept = self._kept(matching)
        with self._clock.stage(SQL):
            for name in self._outward:
                index = kept.schema.get_field_index(name)
                kept = kept.set_column(index, name, per_value(kept.column(index), self._outward_codes))
        return kept

    def _kept(self, matching: pa.Table) -> pa.Table:
        """Rows with a valid NHS number that is not on the opt-out list (all rows, when there is no NHS number)."""
        self.tally.matching += matching.num_rows
        if not self._plan.nhs_number_column:
            return matching
        numbers = int64_values(matching.column(NUMBER_COLUMN).combine_chunks())
        valid = valid_numbers(numbers)
        opted = valid & self._optouts.contains(numbers)
        self.tally.invalid += int((~valid).sum())
        self.tally.opted += int(opted.sum())
        return matching.filter(boolean_array(valid & ~opted))

    def _outward_codes(self, postcodes: pa.Array) -> pa.Array:
        """DuckDB's outward_code of each distinct postcode (the rule stays in one place: SQL)."""
        values = pa.Table.from_arrays([postcodes], names=["v"])
        return query(self._con, outward_sql(TABLE), values).column(0).combine_chunks()
