"""Per-cell evidence for the disclosure rules, tallied in one pass from each record's cell (or group) code."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
from numpy.typing import NDArray

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]


@dataclasses.dataclass(frozen=True)
class Evidence:
    """Evidence for every cell of a grid; each array has the grid's shape (``tops`` has one more axis)."""

    count: Ints  # records in the cell
    missing: Ints  # records whose value is missing (NaN)
    negatives: Ints  # records whose value is negative
    total: Floats  # sum of the non-missing values
    tops: Floats  # largest absolute contributions, descending, zero-padded: shape (rows, columns, depth)

    @property
    def contributors(self) -> Ints:
        """Records that contribute a value to the cell's statistic."""
        return self.count - self.missing

    def top_sum(self, n: int) -> Floats:
        """Sum of the n largest absolute contributions."""
        summed: Floats = self.tops[..., :n].sum(axis=-1)
        return summed

    def frames(self, index: Any, columns: Any, dominance_n: int) -> dict[str, Any]:
        """The evidence as DataFrames labelled like the table."""
        arrays = {
            "count": self.count,
            "sum": self.total,
            "top1": self.tops[..., 0],
            "top2": self.tops[..., 1],
            "top_n_sum": self.top_sum(dominance_n),
            "negatives": self.negatives,
            "missing": self.missing,
        }
        return {name: pd.DataFrame(array, index=index, columns=columns) for name, array in arrays.items()}


def tally(codes: Ints, cells: int, values: Floats | None, depth: int) -> Evidence:
    """Evidence for each of ``cells`` cells from every record's cell code (-1: in no cell), as 1-D arrays.

    Counts, missing values and negatives are bincounts; the sum is pandas' compensated group sum, so it adds up as
    pandas' own tables do; the ``depth`` largest contributions take ``depth`` rounds of per-cell maxima.
    """
    shifted = codes + 1  # bin 0 collects the records in no cell
    count = _bincount(shifted, cells)
    if values is None:
        nothing = np.zeros(cells, dtype=np.int64)
        tops = (np.arange(depth) < count[:, None]).astype(np.float64)
        return Evidence(count=count, missing=nothing, negatives=nothing, total=count.astype(np.float64), tops=tops)
    missing = np.isnan(values)
    counted = ~missing & (codes >= 0)
    return Evidence(
        count=count,
        missing=_bincount(shifted[missing], cells),
        negatives=_bincount(shifted[values < 0], cells),
        total=group_sums(codes, cells, values),
        tops=_largest(codes, np.abs(values), counted, cells, depth),
    )


def _bincount(shifted: Ints, cells: int) -> Ints:
    counts: Ints = np.bincount(shifted, minlength=cells + 1)[1:].astype(np.int64, copy=False)
    return counts


def group_sums(codes: Ints, cells: int, values: Floats) -> Floats:
    """The sum of each cell's non-missing values (0 if none), added in record order as pandas' groupby adds them."""
    groups = pd.Categorical.from_codes(codes, categories=pd.RangeIndex(cells))
    sums: Floats = pd.Series(values, copy=False).groupby(groups, observed=False).sum().to_numpy(np.float64)
    return sums


def _largest(codes: Ints, magnitudes: Floats, counted: NDArray[np.bool_], groups: int, depth: int) -> Floats:
    """The ``depth`` largest magnitudes in each group, counting only the ``counted`` records; zero-padded.

    Each round takes every group's maximum and removes all its copies, so ``depth`` rounds suffice; no sort needed.
    ``magnitudes`` is overwritten.
    """
    if not counted.all():
        codes, magnitudes = codes[counted], magnitudes[counted]
    tops = np.zeros((groups, depth))
    filled = np.zeros(groups, dtype=np.int64)
    ranks = np.arange(depth)
    for round_ in range(depth):
        best = np.full(groups, -np.inf)
        np.maximum.at(best, codes, magnitudes)
        taken = magnitudes == best[codes]
        copies = np.bincount(codes[taken], minlength=groups)
        place = (ranks >= filled[:, None]) & (ranks < (filled + copies)[:, None]) & (best > -np.inf)[:, None]
        tops = np.where(place, best[:, None], tops)
        filled += copies
        if round_ < depth - 1:
            magnitudes[taken] = -np.inf
    return tops


def grid_cells(evidence: Evidence, shape: tuple[int, int], rows: Ints, columns: Ints) -> Evidence:
    """From 1-D evidence over the cells of a row-major grid of ``shape``, the cells of these rows and columns."""

    def pick(values: Any) -> Any:
        return values.reshape(shape + values.shape[1:])[np.ix_(rows, columns)]

    return Evidence(
        count=pick(evidence.count),
        missing=pick(evidence.missing),
        negatives=pick(evidence.negatives),
        total=pick(evidence.total),
        tops=pick(evidence.tops),
    )


def lay_out(group: Evidence, keys: Any, rows: Any, columns: Any | None, row_keys: int) -> Evidence:
    """Place each group's evidence (1-D, in the order of ``keys``) in the table cell with the same labels.

    Cells with no records get zeros.
    """
    i, j = _positions(keys, rows, columns, row_keys)
    found = (i >= 0) & (j >= 0)
    i, j = i[found], j[found]
    shape = (len(rows), 1 if columns is None else len(columns))

    def place(values: Any, dtype: Any) -> Any:
        grid = np.zeros(shape + values.shape[1:], dtype=dtype)
        grid[i, j] = values[found]
        return grid

    return Evidence(
        count=place(group.count, np.int64),
        missing=place(group.missing, np.int64),
        negatives=place(group.negatives, np.int64),
        total=place(group.total, np.float64),
        tops=place(group.tops, np.float64),
    )


def _positions(keys: Any, rows: Any, columns: Any | None, row_keys: int) -> tuple[Ints, Ints]:
    """Row and column positions in the table of each group's key combination (-1 where absent)."""
    if columns is None:
        return rows.get_indexer(keys), np.zeros(len(keys), dtype=np.int64)
    levels = list(range(keys.nlevels))
    row_part = keys.droplevel(levels[row_keys:])
    column_part = keys.droplevel(levels[:row_keys])
    return rows.get_indexer(row_part), columns.get_indexer(column_part)


def empty_evidence(shape: tuple[int, int], depth: int) -> Evidence:
    """Evidence for a grid of cells that no record reaches."""
    zeros = np.zeros(shape, dtype=np.int64)
    return Evidence(
        count=zeros, missing=zeros, negatives=zeros, total=zeros.astype(np.float64), tops=np.zeros((*shape, depth))
    )


def with_margins(evidence: Evidence, *, rows: bool, columns: bool) -> Evidence:
    """Append the evidence of a totals row and/or column: the union of the cells they add up."""
    if rows:
        evidence = _append_total(evidence, axis=0)
    if columns:
        evidence = _append_total(evidence, axis=1)
    return evidence


def _append_total(evidence: Evidence, axis: int) -> Evidence:
    def add(values: Any) -> Any:
        return np.concatenate([values, values.sum(axis=axis, keepdims=True)], axis=axis)

    depth = evidence.tops.shape[-1]
    pooled = np.moveaxis(evidence.tops, axis, -2)
    pooled = pooled.reshape(*pooled.shape[:-2], -1)
    margin = -np.sort(-pooled, axis=-1)[..., :depth]
    tops = np.concatenate([evidence.tops, np.expand_dims(margin, axis)], axis=axis)
    return Evidence(
        count=add(evidence.count),
        missing=add(evidence.missing),
        negatives=add(evidence.negatives),
        total=add(evidence.total),
        tops=tops,
    )
