"""NumPy views of Arrow arrays and back, by their buffers.

pyarrow's own conversions (``to_numpy``, ``pa.array``) import pandas when it is installed, which costs a third of a
second in a fresh process; an extract needs only these two, which never do."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from tre.data._nhs import BoolArray, Int64Array


def int64_values(array: pa.Array) -> Int64Array:
    """The values of an int64 array that has no NULLs, without copying them."""
    if array.type != pa.int64() or array.null_count:
        raise ValueError(f"expected int64 values without NULLs, got {array.type} with {array.null_count} NULLs")
    values: Int64Array = np.frombuffer(array.buffers()[1], dtype=np.int64, count=len(array), offset=array.offset * 8)
    return values


def boolean_array(values: BoolArray) -> pa.BooleanArray:
    """A boolean Arrow array with the same values (no NULLs)."""
    bits = pa.py_buffer(np.packbits(values, bitorder="little"))
    array: pa.BooleanArray = pa.Array.from_buffers(pa.bool_(), len(values), [None, bits])
    return array
