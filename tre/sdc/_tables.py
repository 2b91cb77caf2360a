"""Checked tables: ``crosstab`` and ``pivot_table`` as in pandas, with per-cell disclosure evidence and outcomes."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

from tre.errors import InputError
from tre.sdc import _cells, _checks, _inputs
from tre.sdc._evidence import Evidence, Floats, empty_evidence, grid_cells, lay_out, tally, with_margins
from tre.sdc._output import save
from tre.sdc._rules import DEFAULT_RULES, RuleSet
from tre.sdc._suppress import protect

RESULT_COLUMNS = ["row", "column", "rule", "parameters", "value", "status", "reason"]


@dataclasses.dataclass(frozen=True)
class CheckedTable:
    """A table with the evidence, per-cell rule outcomes and overall status of its disclosure checks.

    ``table`` is what pandas returns for the same call (with failing cells and their complements set to NaN when
    suppression was asked for); ``evidence`` maps count, sum, top1, top2, top_n_sum, negatives and missing to
    DataFrames labelled like the table; ``results`` has one row per cell and rule; ``suppressed`` marks hidden cells.
    ``status`` is the worst outcome (fail, review, pass); a table whose failing cells were suppressed is a review.
    """

    table: Any
    evidence: dict[str, Any]
    results: Any
    status: str
    rules: RuleSet
    aggfunc: str | None
    suppressed: Any

    def flagged(self) -> list[dict[str, Any]]:
        """Every cell and rule that did not pass: row, column, rule, value (the statistic tested), status, reason."""
        rows = self.results[self.results["status"] != _checks.PASS]
        fields = ["row", "column", "rule", "value", "status", "reason"]
        return [dict(zip(fields, values, strict=True)) for values in rows[fields].itertuples(index=False)]

    def save(self, path: str | Path) -> Path:
        """Write the table as CSV and its checks to ``<path>.sdc.json``; returns the sidecar's path."""
        return save(self, Path(path))


def crosstab(
    index: Any,
    columns: Any,
    values: Any = None,
    aggfunc: str | None = None,
    *,
    data: Any = None,
    rules: RuleSet = DEFAULT_RULES,
    suppress: bool = False,
    margins: bool = False,
) -> CheckedTable:
    """``pandas.crosstab`` with disclosure checks; index, columns and values may name columns of ``data``."""
    if values is None and aggfunc is not None:
        raise InputError(f"aggfunc={aggfunc!r} needs values to aggregate.")
    function = _inputs.check_aggfunc(aggfunc, allow_none=values is None)
    rows, cols = _inputs.axis_arrays(index, data), _inputs.axis_arrays(columns, data)
    value_array = _inputs.axis_arrays(values, data)[0] if values is not None else None
    _inputs.check_aligned(rows + cols, value_array)
    numbers = _values_for(function, value_array)
    if not margins and len(rows) == len(cols) == 1 and _inputs.unique_index(rows + cols, value_array):
        names = (_inputs.crosstab_name(rows[0], "row"), _inputs.crosstab_name(cols[0], "col"))
        keys = [_inputs.as_series(rows[0]), _inputs.as_series(cols[0])]
        value_series = None if value_array is None else _inputs.as_series(value_array)
        checked = _one_grouping(keys, names, value_series, numbers, function, rules, suppress)
        if checked is not None:
            return checked
    keys = _inputs.key_frame(rows + cols, value_array)
    table = pd.crosstab(rows, cols, values=value_array, aggfunc=function, margins=margins)
    return _check(table, keys, numbers, function, rules, suppress, margins, row_keys=len(rows), one_way=False)


def pivot_table(
    data: Any,
    values: str,
    index: Any,
    columns: Any = None,
    aggfunc: str = "mean",
    *,
    rules: RuleSet = DEFAULT_RULES,
    suppress: bool = False,
    margins: bool = False,
) -> CheckedTable:
    """``pandas.pivot_table`` of one values column with disclosure checks."""
    function = _inputs.check_aggfunc(aggfunc, allow_none=False)
    if not isinstance(values, str):
        raise InputError(f"pivot_table values must be a single column name, not {values!r}.")
    _inputs.pivot_names(data, values, "values", required=True)
    row_names = _inputs.pivot_names(data, index, "index", required=True)
    col_names = _inputs.pivot_names(data, columns, "columns", required=False)
    numbers = _values_for(function, data[values])
    if not margins and len(row_names) == 1 and len(col_names) <= 1 and values not in row_names + col_names:
        keys = [data[name] for name in row_names + col_names] + ([] if col_names else [None])
        names = (row_names[0], col_names[0] if col_names else None)
        checked = _one_grouping(keys, names, data[values], numbers, function, rules, suppress)
        if checked is not None:
            return checked
    keys = _inputs.key_frame([data[name] for name in row_names + col_names], None)
    table = pd.pivot_table(data, values=values, index=index, columns=columns, aggfunc=function, margins=margins)
    one_way = not col_names
    return _check(table, keys, numbers, function, rules, suppress, margins, row_keys=len(row_names), one_way=one_way)


def _values_for(aggfunc: str | None, values: Any | None) -> Floats | None:
    """Per-record contributions: none for a plain count, presence for ``count``, the numbers otherwise."""
    if values is None:
        return None
    if aggfunc == "count":
        return np.where(pd.isna(pd.Series(values)).to_numpy(), np.nan, 1.0)
    return _inputs.numeric_values(values)


def _one_grouping(
    keys: list[Any],
    names: tuple[Any, Any],
    values: Any | None,
    numbers: Floats | None,
    aggfunc: str | None,
    rules: RuleSet,
    suppress: bool,
) -> CheckedTable | None:
    """The table and its evidence from one factorisation of each key (``keys``: row key, column key or None for a
    one-way pivot table of ``values``); None when only pandas' own call can reproduce the table."""
    row_key, column_key = keys
    if not _cells.supported([k for k in keys if k is not None], values):
        return None
    grid = _cells.encode(row_key, column_key, names, one_way=None if values is None else values.name)
    if grid is None:
        return None
    cells = tally(grid.codes, grid.shape[0] * grid.shape[1], numbers, _depth(rules))
    if not cells.count.any():
        return None  # no record has every key: pandas' empty table
    if values is None:
        layout = _cells.count_table(grid, cells.count)
    else:
        layout = _cells.aggregate_table(grid, cells, values, str(aggfunc))
    evidence = grid_cells(cells, grid.shape, layout.rows, layout.columns)
    return _finish(layout.table, evidence, numbers is not None, aggfunc, rules, suppress)


def _depth(rules: RuleSet) -> int:
    """How many of each cell's largest contributions the rules need (p% needs two)."""
    return max(2, rules.dominance_n)


def _check(
    table: Any,
    keys: Any,
    values: Floats | None,
    aggfunc: str | None,
    rules: RuleSet,
    suppress: bool,
    margins: bool,
    *,
    row_keys: int,
    one_way: bool,
) -> CheckedTable:
    """Gather the evidence for pandas' table, run the rules and, if asked, suppress."""
    evidence = _table_evidence(table, keys, values, rules, margins, row_keys=row_keys, one_way=one_way)
    return _finish(table, evidence, values is not None, aggfunc, rules, suppress)


def _finish(
    table: Any, evidence: Evidence, has_values: bool, aggfunc: str | None, rules: RuleSet, suppress: bool
) -> CheckedTable:
    """Run the rules on the evidence and, if asked, suppress."""
    outcomes = _checks.evaluate(evidence, rules, _checks.kind_of(aggfunc), has_values=has_values)
    hidden = np.zeros(table.shape, dtype=bool)
    if suppress:
        hidden = protect(_checks.failing(outcomes, table.shape), evidence.contributors.astype(np.float64))
    status = _checks.overall(outcomes) if table.size else _checks.REVIEW
    if hidden.any():
        status = _checks.REVIEW  # every failing cell is hidden; a checker confirms the suppression is enough
    return CheckedTable(
        table=table.mask(hidden) if suppress else table,
        evidence=evidence.frames(table.index, table.columns, rules.dominance_n),
        results=_results(outcomes, table) if table.size else _empty_results(),
        status=status,
        rules=rules,
        aggfunc=aggfunc,
        suppressed=pd.DataFrame(hidden, index=table.index, columns=table.columns, dtype=bool),
    )


def _table_evidence(
    table: Any, keys: Any, values: Floats | None, rules: RuleSet, margins: bool, *, row_keys: int, one_way: bool
) -> Evidence:
    """Evidence laid out like ``table``, including its totals row and column when it shows them."""
    if table.size == 0:
        return empty_evidence(table.shape, _depth(rules))
    with_totals = margins
    rows = table.index[:-1] if with_totals else table.index
    columns = None if one_way else table.columns[:-1] if with_totals else table.columns
    grouped = keys.groupby(list(keys.columns), observed=True, dropna=True, sort=False)
    codes = grouped.ngroup().to_numpy(np.float64, na_value=-1.0).astype(np.int64)
    labels = grouped.size().index
    evidence = lay_out(tally(codes, len(labels), values, _depth(rules)), labels, rows, columns, row_keys)
    if with_totals:
        evidence = with_margins(evidence, rows=True, columns=not one_way)
    return evidence


def _results(outcomes: list[_checks.Outcome], table: Any) -> Any:
    """One row per cell and rule, row-major within each rule."""
    n_rows, n_cols = table.shape
    cells, rules = n_rows * n_cols, len(outcomes)
    return pd.DataFrame(
        {
            "row": np.tile(np.repeat(_objects(table.index), n_cols), rules),
            "column": np.tile(_objects(table.columns), n_rows * rules),
            "rule": np.repeat(_objects([outcome.rule for outcome in outcomes]), cells),
            "parameters": np.repeat(_objects([outcome.parameters for outcome in outcomes]), cells),
            "value": np.concatenate([outcome.value.ravel() for outcome in outcomes]),
            "status": np.concatenate([outcome.status.ravel() for outcome in outcomes]).astype(object),
            "reason": np.concatenate([outcome.reason.ravel() for outcome in outcomes]).astype(object),
        }
    )


def _objects(items: Any) -> Any:
    """A 1-D object array of the items as they are (tuples and dicts stay single elements)."""
    array = np.empty(len(items), dtype=object)
    array[:] = list(items)
    return array


def _empty_results() -> Any:
    """The results of a table with no cells: one table-level review."""
    reason = "the table has no cells; check that an empty output is intended and not itself disclosive"
    row: dict[str, Any] = {"row": None, "column": None, "rule": "empty_table", "parameters": {}, "value": 0.0}
    return pd.DataFrame([{**row, "status": _checks.REVIEW, "reason": reason}], columns=RESULT_COLUMNS)
