"""Reading a source exactly once, as a stream of Arrow record batches of the columns the extract uses.

A CSV source goes through Arrow's streaming CSV reader with the declared types: rows are counted and bytes hashed
as they are parsed, so one pass gives the extract, the count of rows read and the checksum of exactly the bytes
that were parsed. A Parquet source is checksummed, then streamed by DuckDB, which reads only the columns used (cast to
the declared types) and applies the filter as it reads; its row count is in the file's metadata.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tre.data._plan import ExtractPlan
from tre.data._prefilter import ARROW_TYPES
from tre.data._sql import Parameters, parquet_scan_sql
from tre.data._stages import StageClock
from tre.errors import InputError

BLOCK_SIZE = 4 * 1024 * 1024  # CSV bytes per batch: fewer, larger batches cost less per row than 1 MiB ones
PARQUET_BATCH_ROWS = 65_536
_HASH_CHUNK = 4 * 1024 * 1024
CHECKSUM = "checksum"  # the stage that hashes the source's bytes


def _spellings(*words: str) -> list[str]:
    """Every upper/lower-case spelling of each word: the booleans DuckDB's CSV reader accepts, case-insensitively."""
    return sorted({"".join(p) for w in words for p in itertools.product(*({c.lower(), c.upper()} for c in w))})


_TRUE = _spellings("true", "t", "yes", "y", "1")
_FALSE = _spellings("false", "f", "no", "n", "0")


class HashingReader(io.RawIOBase):
    """A read-only, forward-only view of a file that feeds every byte read through SHA-256."""

    def __init__(self, handle: io.BufferedReader, clock: StageClock) -> None:
        self._handle = handle
        self._digest = hashlib.sha256()
        self._clock = clock

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all that are left, by default), read straight into the bytes returned: Arrow wraps
        them without copying (RawIOBase's read would go through readinto and a copy)."""
        data = self._handle.read(size)
        if data:
            with self._clock.stage(CHECKSUM):  # on the thread Arrow reads with
                self._digest.update(data)
        return data

    def readinto(self, buffer: Any) -> int:
        count = self._handle.readinto(buffer)
        if count:
            with self._clock.stage(CHECKSUM):  # on the thread Arrow reads with
                self._digest.update(memoryview(buffer)[:count])
        return count or 0

    def hexdigest(self) -> str:
        """The checksum of the whole file: reads (and hashes) whatever the parser left unread."""
        while chunk := self._handle.read(BLOCK_SIZE):
            self._digest.update(chunk)
        return self._digest.hexdigest()


class CsvSource:
    """A CSV source opened for one pass: iterate for its batches (the columns used, typed as declared), then
    ``rows_read`` and ``sha256``. Errors are InputErrors that name the row and column, never quoting a value."""

    queried = False  # every row is in its batches, as parsed: the first cut and the batch query are still to come

    def __init__(self, plan: ExtractPlan, path: Path, columns: list[str], clock: StageClock) -> None:
        self.rows_read = 0
        self.sha256 = ""  # known once every batch has been read
        self._plan = plan
        self._file = path.open("rb")
        self._hashing = HashingReader(self._file, clock)
        self._reader: pacsv.CSVStreamingReader | None = None
        try:
            self._reader = pacsv.open_csv(self._hashing, **_csv_options(plan, columns))  # parses the first block
        except pa.ArrowInvalid as exc:
            if not _has_no_records(path):
                self.close()
                raise self._error(exc) from None
        except BaseException:
            self.close()
            raise

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        try:
            for batch in self._reader or ():
                self.rows_read += batch.num_rows
                yield batch
        except pa.ArrowException as exc:
            raise self._error(exc) from None
        self.sha256 = self._hashing.hexdigest()

    def _error(self, exc: pa.ArrowException) -> InputError:
        return InputError(f"dataset {self._plan.dataset}: {describe_csv_error(self._plan, exc)}")

    def close(self) -> None:
        self._file.close()


class ParquetSource:
    """A Parquet source opened for one pass. DuckDB reads it on ``con`` (the reading thread's connection) with the
    batch query itself (``_sql.batch_sql``): only the columns used, cast to the declared types, only rows matching the
    filter, the NHS number as a number, generalised. Iterate for those batches, then ``sha256``; ``rows_read`` is the
    file's row count."""

    queried = True  # its batches are the batch query's result already

    def __init__(
        self, plan: ExtractPlan, path: Path, columns: list[str], clock: StageClock, con: duckdb.DuckDBPyConnection
    ) -> None:
        self.sha256 = ""
        self._path, self._clock, self._con = path, clock, con
        try:
            self.rows_read: int = pq.ParquetFile(path).metadata.num_rows
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"dataset {plan.dataset}: {path.name} is not a readable Parquet file ({exc})") from None
        self._params = Parameters()
        self._sql = parquet_scan_sql(plan, columns, self._params)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        with self._clock.stage(CHECKSUM):
            self.sha256 = sha256_file(self._path)
        params = self._params.values | {"source": str(self._path)}
        yield from self._con.sql(self._sql, params=params).to_arrow_reader(PARQUET_BATCH_ROWS)

    def close(self) -> None:
        pass  # the connection belongs to the pipeline


def open_source(
    plan: ExtractPlan, path: Path, columns: list[str], clock: StageClock, con: duckdb.DuckDBPyConnection
) -> CsvSource | ParquetSource:
    """``path`` opened for one pass (``con`` reads a Parquet source); InputError if it cannot be read as its format."""
    if plan.format == "parquet":
        return ParquetSource(plan, path, columns, clock, con)
    return CsvSource(plan, path, columns, clock)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _csv_options(plan: ExtractPlan, columns: list[str]) -> dict[str, Any]:
    declared = [name for name, _ in plan.declared]
    return {
        # parsed on the thread that asks for the next batch (not Arrow's pool), so EngineLimits.threads holds
        "read_options": pacsv.ReadOptions(column_names=declared, skip_rows=1, block_size=BLOCK_SIZE, use_threads=False),
        "parse_options": pacsv.ParseOptions(newlines_in_values=True),
        "convert_options": pacsv.ConvertOptions(
            column_types={name: ARROW_TYPES[plan.declared_type(name)] for name in columns},
            include_columns=columns,
            null_values=[""],
            strings_can_be_null=True,
            true_values=_TRUE,
            false_values=_FALSE,
        ),
    }


def _has_no_records(path: Path) -> bool:
    """True for a file that is a header line and nothing else (Arrow cannot skip a header with no line end)."""
    with path.open("rb") as handle:
        first = handle.readline()
        return not first.endswith((b"\n", b"\r")) and not handle.read(1)


_ROW = r"(?:Row #(?P<row>\d+): )?"
_CONVERSION = re.compile(
    rf"In CSV column #(?P<column>\d+): {_ROW}CSV conversion error to [^:]+: (?P<what>invalid value|invalid UTF8 data)"
)
_PARSE = re.compile(rf"CSV parse error: {_ROW}(?P<what>Expected \d+ columns, got \d+)")


def describe_csv_error(plan: ExtractPlan, error: pa.ArrowException) -> str:
    """Arrow's message without the values it quotes (they may be patient data)."""
    text = str(error)
    if match := _CONVERSION.match(text):
        name, kind = plan.declared[int(match["column"])]
        what = "text that is not UTF-8" if "UTF8" in match["what"] else f"a value that is not a valid {kind.value}"
        return f"{_where(match['row'])}column {name} holds {what}"
    if match := _PARSE.match(text):
        return f"{_where(match['row'])}the row does not have the declared columns ({match['what'].lower()})"
    return "not a readable CSV file"


def _where(row: str | None) -> str:
    return f"row {row} (the header is row 1): " if row else ""
