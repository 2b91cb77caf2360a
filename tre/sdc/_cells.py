"""The common tables in one grouping: hash each key once, then build pandas' table and the evidence from cell codes.

``pandas.crosstab(a, b)`` and ``pandas.pivot_table(df, v, a, b)`` spend most of their time hashing every record's
labels. The evidence needs the same grouping, so for one row key and at most one column key (plain NumPy dtypes, no
margins) each key is factorised once, every record gets a cell code (``row * n_columns + column``) and both the
table and the evidence come from that code. Everything else goes through pandas' own call (see ``_tables``); the
tests hold the two paths to the same tables, evidence and results.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

from tre.sdc._evidence import Evidence, Ints

MAX_CELLS = 1 << 24  # beyond this many label combinations the per-cell arrays cost more than pandas' grouping
KEY_KINDS = frozenset("biufOmM")  # NumPy dtype kinds whose factorisation and sort are pandas' groupby's own
VALUE_KINDS = frozenset("iuf")


@dataclasses.dataclass(frozen=True)
class Grid:
    """Every record's cell in the grid of all row labels by all column labels (row-major; -1: a key is missing)."""

    codes: Ints
    rows: Any  # pandas Index: the row key's labels, sorted, named like pandas names the table's index
    columns: Any  # pandas Index: the column key's labels, or the values' name for a one-way pivot table

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), len(self.columns)


@dataclasses.dataclass(frozen=True)
class Layout:
    """The table pandas returns, and which grid rows and columns it shows (positions, in order)."""

    table: Any
    rows: Ints
    columns: Ints


def supported(keys: list[Any], values: Any | None) -> bool:
    """Whether this path reproduces pandas for these inputs: 1 or 2 keys and values of plain NumPy dtypes.

    The caller has already ruled out margins and more than one key per axis. Keys with an index that is not unique
    are left to pandas (``crosstab`` aligns them on it and refuses duplicates).
    """
    arrays = [*keys, values] if values is not None else keys
    if any(not isinstance(a, pd.Series) or a.ndim != 1 for a in arrays):
        return False
    if any(not isinstance(k.dtype, np.dtype) or k.dtype.kind not in KEY_KINDS for k in keys):
        return False
    if values is not None and (not isinstance(values.dtype, np.dtype) or values.dtype.kind not in VALUE_KINDS):
        return False
    index = arrays[0].index
    return isinstance(index, pd.RangeIndex) or bool(index.is_unique)


def encode(row_key: Any, column_key: Any | None, names: tuple[Any, Any], one_way: Any = None) -> Grid | None:
    """Factorise the keys (sorted, missing labels dropped) into cell codes; None if pandas must make this table.

    ``one_way`` is the label of the single column of a pivot table without a column key. Tuple labels (pandas turns
    them into a MultiIndex) and grids of more than ``MAX_CELLS`` cells are left to pandas.
    """
    row_codes, row_labels = pd.factorize(row_key, sort=True)
    if column_key is None:
        rows = _labels(row_labels, names[0])
        return None if rows is None else Grid(row_codes.astype(np.int64), rows, pd.Index([one_way]))
    column_codes, column_labels = pd.factorize(column_key, sort=True)
    rows, columns = _labels(row_labels, names[0]), _labels(column_labels, names[1])
    if rows is None or columns is None or len(rows) * len(columns) > MAX_CELLS:
        return None
    codes = row_codes.astype(np.int64) * len(columns) + column_codes
    codes[(row_codes < 0) | (column_codes < 0)] = -1
    return Grid(codes, rows, columns)


def _labels(uniques: Any, name: Any) -> Any:
    """The labels as pandas' groupby gives them: object labels that are all numbers or booleans get that dtype."""
    labels = pd.Index(uniques, name=name)
    if labels.dtype != object:
        return labels
    if any(isinstance(label, tuple) for label in labels):
        return None
    inferred = labels.infer_objects()
    return inferred if inferred.dtype.kind in "iufb" else labels


def count_table(grid: Grid, count: Ints) -> Layout:
    """``crosstab`` without values: records per cell, zero where none, only the labels seen in some cell."""
    counts = count.reshape(grid.shape)
    rows, columns = _shown(counts > 0)
    return _layout(grid, counts[np.ix_(rows, columns)], rows, columns)


def aggregate_table(grid: Grid, evidence: Evidence, values: Any, aggfunc: str) -> Layout:
    """``pivot_table``/``crosstab`` with values: each seen cell's statistic as pandas computes it.

    As in pandas (``dropna=True``), a cell whose statistic is missing is left out, and so is a row or column left
    with none; integer statistics stay integers only when no shown cell is empty (pandas' unstack).
    """
    seen = np.flatnonzero(evidence.count > 0)
    aggregated = _statistics(grid, evidence, seen, values, aggfunc)
    present = np.zeros(evidence.count.size, dtype=bool)
    present[seen] = ~pd.isna(aggregated)
    present = present.reshape(grid.shape)
    rows, columns = _shown(present)
    full = bool(present[np.ix_(rows, columns)].all())
    dtype = aggregated.dtype if full or aggregated.dtype.kind == "f" else np.dtype(np.float64)
    cells = np.empty(present.size, dtype=dtype) if full else np.full(present.size, np.nan, dtype=dtype)
    cells[seen] = aggregated
    return _layout(grid, cells.reshape(grid.shape)[np.ix_(rows, columns)], rows, columns)


def _statistics(grid: Grid, evidence: Evidence, seen: Ints, values: Any, aggfunc: str) -> Any:
    """The statistic of each seen cell, from pandas' group aggregation over that cell's records.

    A sum or mean of float64 values comes from the evidence instead: its total is pandas' compensated group sum of
    the same values in the same order, and pandas' group mean is that sum over the count of values
    (``test_sdc.py`` holds both to pandas' own tables).
    """
    if values.dtype == np.float64 and aggfunc in ("sum", "mean"):
        total = evidence.total[seen]
        if aggfunc == "sum":
            return total
        with np.errstate(invalid="ignore"):
            return total / evidence.contributors[seen]  # 0 / 0: NaN, a cell with no values
    group_of_cell = np.full(evidence.count.size + 1, -1, dtype=np.int64)  # the extra last entry catches code -1
    group_of_cell[seen] = np.arange(seen.size)
    groups = pd.Categorical.from_codes(group_of_cell[grid.codes], categories=pd.RangeIndex(seen.size))
    return values.groupby(groups, observed=False).agg(aggfunc).to_numpy()  # every group is seen


def _shown(present: Any) -> tuple[Ints, Ints]:
    """The rows and columns with at least one cell present (pandas drops the others)."""
    return np.flatnonzero(present.any(axis=1)), np.flatnonzero(present.any(axis=0))


def _layout(grid: Grid, cells: Any, rows: Ints, columns: Ints) -> Layout:
    table = pd.DataFrame(cells, index=grid.rows[rows], columns=grid.columns[columns])
    return Layout(table, rows, columns)
