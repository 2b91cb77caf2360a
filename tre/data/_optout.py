"""The national data opt-out list: parse a file, validate every NHS number, store a new version."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tre.data._nhs import Int64Array, valid_mask
from tre.errors import InputError

MAX_OPTOUT_FILE_BYTES = 1024**3
_SEPARATORS = str.maketrans("", "", " -")


@dataclass(frozen=True)
class ParsedOptOuts:
    """The distinct valid NHS numbers in a file, sorted, and the line numbers that held anything else."""

    numbers: Int64Array
    invalid_lines: tuple[int, ...]

    def to_parquet_bytes(self) -> bytes:
        sink = io.BytesIO()
        pq.write_table(pa.table({"nhs_number": pa.array(self.numbers, pa.int64())}), sink, compression="zstd")
        return sink.getvalue()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.numbers.tobytes()).hexdigest()


def _plain_lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line.strip()


def _csv_column(path: Path, column: str) -> Iterator[tuple[int, str]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or column not in reader.fieldnames:
            raise InputError(f"{path}: no column {column!r} in the header ({', '.join(reader.fieldnames or [])})")
        for row in reader:
            value = (row.get(column) or "").strip()
            if value:
                yield reader.line_num, value


def parse_optout_file(path: Path, *, column: str | None = None) -> ParsedOptOuts:
    """One NHS number a line (spaces or hyphens allowed), or the named column of a CSV file."""
    _check_size(path)
    lines = _csv_column(path, column) if column else _plain_lines(path)
    line_numbers, values = [], []
    try:
        for number, value in lines:
            line_numbers.append(number)
            values.append(value.translate(_SEPARATORS))
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    return _validate(path, np.array(line_numbers, dtype=np.int64), values)


def _check_size(path: Path) -> None:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"{path}: cannot read file ({exc.strerror})") from None
    if size > MAX_OPTOUT_FILE_BYTES:
        raise InputError(f"{path}: file is {size} bytes, over the {MAX_OPTOUT_FILE_BYTES}-byte limit")


def _validate(path: Path, line_numbers: Int64Array, values: list[str]) -> ParsedOptOuts:
    if not values:
        raise InputError(f"{path}: the opt-out file is empty; expected one NHS number per line")
    digits_only = np.array([len(v) == 10 and v.isdigit() for v in values], dtype=bool)
    numbers = np.array([int(v) if ok else 0 for v, ok in zip(values, digits_only, strict=True)], dtype=np.int64)
    valid = digits_only & valid_mask(numbers)
    if not valid.any():
        raise InputError(f"{path}: none of its {len(values)} lines is a valid NHS number (Modulus 11 check)")
    invalid = tuple(int(n) for n in line_numbers[~valid])
    return ParsedOptOuts(np.unique(numbers[valid]), invalid)
