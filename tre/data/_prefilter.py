"""A first cut of the approved row filter, in Arrow, before rows cross into DuckDB.

Most of a source usually fails the filter, and handing a row to DuckDB costs more than deciding in Arrow that it can
go. The cut is sound, not exact: it drops only rows that a condition certainly rejects, and DuckDB still applies the
whole filter to what is left, so the extract and its counts are those of the filter alone. It uses only comparisons
whose Arrow and DuckDB results are the same by construction: null tests on any type; equality and list membership on
text, integers, dates and booleans; order on integers, dates and booleans (not text, whose order depends on the
collation; not floats, which DuckDB orders with NaN above every number). Comparison values are cast by DuckDB itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tre.data._plan import ExtractPlan
from tre.spec import ColumnType, Condition, Operator

ARROW_TYPES = {
    ColumnType.STRING: pa.string(),
    ColumnType.INTEGER: pa.int64(),
    ColumnType.FLOAT: pa.float64(),
    ColumnType.DATE: pa.date32(),
    ColumnType.BOOLEAN: pa.bool_(),
}
_ORDERED = {ColumnType.INTEGER, ColumnType.DATE, ColumnType.BOOLEAN}
_EQUALITY = {*_ORDERED, ColumnType.STRING}
_COMPARE = {
    Operator.EQ: pc.equal,
    Operator.NE: pc.not_equal,
    Operator.LT: pc.less,
    Operator.LE: pc.less_equal,
    Operator.GT: pc.greater,
    Operator.GE: pc.greater_equal,
}

TypedValue = Callable[[Any, ColumnType], pa.Array]
"""A filter value as DuckDB compares it with a column of the given type, as a one-value Arrow array (NULL when
the value is not one that Arrow orders as DuckDB does); it raises on a value that does not cast."""


@dataclass(frozen=True)
class _Test:
    column: str
    op: Operator
    arrow_type: pa.DataType
    values: pa.Array | None  # the cast values (one for a comparison), None for a null test


def _usable(condition: Condition, kind: ColumnType) -> bool:
    if condition.op in (Operator.IS_NULL, Operator.NOT_NULL):
        return True
    if condition.op in (Operator.LT, Operator.LE, Operator.GT, Operator.GE):
        return kind in _ORDERED
    return kind in _EQUALITY


def _test(condition: Condition, kind: ColumnType, typed: TypedValue) -> _Test | None:
    if not _usable(condition, kind):
        return None
    if condition.value is None:
        return _Test(condition.column, condition.op, ARROW_TYPES[kind], None)
    raw = condition.value if isinstance(condition.value, tuple) else (condition.value,)
    values = pa.concat_arrays([typed(v, kind) for v in raw])
    if values.null_count or values.type != ARROW_TYPES[kind]:
        return None
    return _Test(condition.column, condition.op, ARROW_TYPES[kind], values)


def _keep(test: _Test, column: pa.Array) -> pa.BooleanArray:
    """False or NULL only where the condition is certainly not true (NULL is not true, in SQL; the filter drops it)."""
    if test.op is Operator.IS_NULL:
        return pc.is_null(column)
    if test.op is Operator.NOT_NULL:
        return pc.is_valid(column)
    assert test.values is not None
    if test.op is Operator.IN:
        return pc.is_in(column, value_set=test.values)  # a NULL is in no list
    if test.op is Operator.NOT_IN:
        return pc.invert(pc.is_in(column, value_set=test.values))  # a NULL is kept here: SQL decides
    return _COMPARE[test.op](column, test.values[0])


class Prefilter:
    """The usable conditions of a plan's filter, applied to batches of the source.

    Compute functions one by one, on the calling thread: a filter expression would run on Arrow's thread pool and
    cost more CPU in all."""

    def __init__(self, plan: ExtractPlan, typed: TypedValue) -> None:
        tests = (_test(c, plan.declared_type(c.column), typed) for c in plan.filter)
        self.tests = tuple(t for t in tests if t is not None)

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The rows of ``batch`` that may match the filter (all of them when no condition applies)."""
        mask = None
        for test in self.tests:
            column = batch.column(test.column)
            if column.type != test.arrow_type:  # a Parquet column not of its declared type: SQL casts it
                continue
            keep = _keep(test, column)
            mask = keep if mask is None else pc.and_(mask, keep)
        return batch if mask is None else batch.filter(mask)
