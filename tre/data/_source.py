"""Reading a source exactly once.

A CSV source goes through Arrow's streaming CSV reader with the declared types: rows are counted and bytes hashed
as they pass on their way into DuckDB, so one pass gives the extract, the count of rows read and the checksum of
exactly the bytes that were parsed. A Parquet source is read by DuckDB; its row count is in the file's metadata.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from tre.data._plan import ExtractPlan
from tre.spec import ColumnType

BLOCK_SIZE = 1024 * 1024
ARROW_TYPES = {
    ColumnType.STRING: pa.string(),
    ColumnType.INTEGER: pa.int64(),
    ColumnType.FLOAT: pa.float64(),
    ColumnType.DATE: pa.date32(),
    ColumnType.BOOLEAN: pa.bool_(),
}


def _spellings(*words: str) -> list[str]:
    """Every upper/lower-case spelling of each word: the booleans DuckDB's CSV reader accepts, case-insensitively."""
    return sorted({"".join(p) for w in words for p in itertools.product(*({c.lower(), c.upper()} for c in w))})


_TRUE = _spellings("true", "t", "yes", "y", "1")
_FALSE = _spellings("false", "f", "no", "n", "0")


class HashingReader(io.RawIOBase):
    """A read-only, forward-only view of a file that feeds every byte read through SHA-256."""

    def __init__(self, handle: io.BufferedReader) -> None:
        self._handle = handle
        self._digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self._handle.readinto(buffer)
        if count:
            self._digest.update(memoryview(buffer)[:count])
        return count or 0

    def hexdigest(self) -> str:
        """The checksum of the whole file: reads (and hashes) whatever the parser left unread."""
        while chunk := self._handle.read(BLOCK_SIZE):
            self._digest.update(chunk)
        return self._digest.hexdigest()


class CsvSource:
    """A CSV source opened for one pass: ``batches`` for DuckDB, then ``rows_read`` and ``sha256``."""

    def __init__(self, plan: ExtractPlan, path: Path, columns: list[str]) -> None:
        self.rows_read = 0
        self.error: pa.ArrowException | None = None
        self._file = path.open("rb")
        self._hashing = HashingReader(self._file)
        reader: pacsv.CSVStreamingReader | None = None
        try:
            reader = pacsv.open_csv(self._hashing, **_csv_options(plan, columns))  # parses the first block
        except pa.ArrowInvalid:
            if not _has_no_records(path):
                self.close()
                raise
        except BaseException:
            self.close()
            raise
        schema = pa.schema([(name, ARROW_TYPES[plan.declared_type(name)]) for name in columns])
        self.batches = pa.RecordBatchReader.from_batches(schema, self._counted(reader))

    def _counted(self, reader: pacsv.CSVStreamingReader | None) -> Iterator[pa.RecordBatch]:
        if reader is None:
            return
        try:
            for batch in reader:
                self.rows_read += batch.num_rows
                yield batch
        except pa.ArrowException as exc:
            self.error = exc  # DuckDB reports it wrapped in a traceback; the caller reports this instead
            raise

    @property
    def sha256(self) -> str:
        return self._hashing.hexdigest()

    def close(self) -> None:
        self._file.close()


def _csv_options(plan: ExtractPlan, columns: list[str]) -> dict[str, Any]:
    declared = [name for name, _ in plan.declared]
    return {
        # parsed on the DuckDB thread that asks for the next batch, so EngineLimits.threads bounds the whole extract
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
