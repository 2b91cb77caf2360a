"""Turn the arguments of ``crosstab`` and ``pivot_table`` into pandas-ready inputs and a key frame for grouping."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]

from tre.errors import InputError
from tre.sdc._evidence import Floats

AGGFUNCS = ("count", "sum", "mean", "median", "std", "min", "max")


def check_aggfunc(aggfunc: object, *, allow_none: bool) -> str | None:
    """Refuse an aggregation this library cannot check."""
    if aggfunc is None and allow_none:
        return None
    if not isinstance(aggfunc, str) or aggfunc not in AGGFUNCS:
        raise InputError(f"aggfunc must be one of {', '.join(AGGFUNCS)}, not {aggfunc!r}.")
    return aggfunc


def _is_array_list(value: object) -> bool:
    """Whether ``value`` is a list of arrays (several keys) rather than one array of labels, as pandas decides."""
    return isinstance(value, list | tuple) and len(value) > 0 and all(pd.api.types.is_list_like(v) for v in value)


def axis_arrays(axis: Any, data: Any | None) -> list[Any]:
    """The key arrays for one axis: a Series, an array, a column name in ``data``, or a list of those."""
    items = list(axis) if _is_array_list(axis) or (data is not None and isinstance(axis, list)) else [axis]
    return [_column(item, data) for item in items]


def _column(item: Any, data: Any | None) -> Any:
    if data is not None and isinstance(item, str):
        if item not in data.columns:
            raise InputError(f"Column {item!r} is not in the data.")
        return data[item]
    if isinstance(item, str) or not pd.api.types.is_list_like(item):
        raise InputError(f"Expected an array, a Series or (with data=) a column name, not {item!r}.")
    return item


def check_aligned(arrays: list[Any], values: Any | None) -> None:
    """Refuse keys and values that do not describe the same records (Series on different indexes, other lengths)."""
    series = [a for a in [*arrays, values] if isinstance(a, pd.Series)]
    if any(not s.index.equals(series[0].index) for s in series[1:]):
        raise InputError("All the Series passed must share one index; use .reset_index(drop=True) to align them.")
    lengths = {len(a) for a in [*arrays, values] if a is not None}
    if len(lengths) > 1:
        raise InputError(f"All the arrays passed must have the same length, not {sorted(lengths)}.")


def unique_index(arrays: list[Any], values: Any | None) -> bool:
    """Whether the Series among the (aligned) inputs have a unique index, or there are none."""
    series = next((a for a in [*arrays, values] if isinstance(a, pd.Series)), None)
    return series is None or isinstance(series.index, pd.RangeIndex) or bool(series.index.is_unique)


def as_series(array: Any) -> Any:
    """The array as a Series (a Series is returned as it is)."""
    return array if isinstance(array, pd.Series) else pd.Series(array)


def crosstab_name(array: Any, prefix: str) -> Any:
    """The name ``pandas.crosstab`` gives an axis of one key: the Series' name, else ``row_0`` or ``col_0``."""
    name = array.name if isinstance(array, pd.Series) else None
    return f"{prefix}_0" if name is None else name


def key_frame(arrays: list[Any], values: Any | None) -> Any:
    """A frame with one column per key (k0, k1, ...) in record order; every input must describe the same records."""
    check_aligned(arrays, values)
    columns = {
        f"k{i}": a.reset_index(drop=True) if isinstance(a, pd.Series) else pd.Series(a) for i, a in enumerate(arrays)
    }
    return pd.DataFrame(columns)


def numeric_values(values: Any) -> Floats:
    """The values to aggregate as floats (missing values become NaN)."""
    try:
        return np.asarray(pd.to_numeric(pd.Series(values).reset_index(drop=True)), dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f"The values to aggregate must be numeric: {error}.") from error


def pivot_names(data: Any, names: Any, role: str, *, required: bool) -> list[str]:
    """The column names pivot_table groups by on one axis."""
    if names is None and not required:
        return []
    listed = names if isinstance(names, list) else [names]
    if not listed or not all(isinstance(name, str) for name in listed):
        raise InputError(f"pivot_table {role} must be a column name or a list of column names, not {names!r}.")
    missing = [name for name in listed if name not in data.columns]
    if missing:
        raise InputError(f"pivot_table {role} names columns that are not in the data: {', '.join(missing)}.")
    return listed
