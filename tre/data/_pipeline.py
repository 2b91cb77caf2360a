"""Run one dataset's extract: one streaming pass over the source, bounded memory, Parquet out.

Three stages, each on a thread of its own when the limits allow two threads or more, with small bounded queues
between them (memory stays flat whatever the source's size):

1. read (``_source``): parse a CSV source (Arrow releases the GIL while it parses; the bytes are checksummed as they
   are read) and make a sound first cut of the filter (``_prefilter``), gathering what is left into batches; a Parquet
   source is read by DuckDB with the transform's query itself;
2. transform (``_transform``): per batch, DuckDB applies the exact filter, normalises the NHS number and generalises;
   invalid NHS numbers and opted-out patients are dropped;
3. write (``_writer``, the calling thread): gather kept rows into row groups, pseudonymise each distinct identifier
   once per row group, write Parquet.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from tre.data._keys import PseudonymKey
from tre.data._plan import ExtractPlan
from tre.data._prefilter import Prefilter, TypedValue
from tre.data._readahead import ReadAhead
from tre.data._source import open_source, sha256_file
from tre.data._sql import MACROS, source_columns_used, typed_value_sql
from tre.data._stages import StageClock
from tre.data._transform import BatchTransform, load_optouts
from tre.data._writer import ExtractWriter
from tre.errors import InputError
from tre.spec import ColumnType

__all__ = ["EngineLimits", "ExtractCounts", "ExtractResult", "check_source_columns", "run_extract", "sha256_file"]

BATCH_ROWS = 131_072  # rows (after the first cut) per DuckDB query: big enough that a query's fixed cost is noise
READ_AHEAD = 2  # batches a stage may have ready for the next: the queues that bound memory
READ, FIRST_CUT = "read", "first cut"  # stage names (see ExtractResult.stage_seconds)


@dataclass(frozen=True)
class EngineLimits:
    """How much of the machine one extract may use. ``threads``: 1 runs the stages one after another on the calling
    thread; 2 or more overlap them on three threads (on two cores, reading keeps one busy and the other stages share
    the second), and DuckDB uses any beyond 2 within each query. ``memory_limit``: DuckDB's (it spills to
    ``temp_dir`` beyond it); the stages between them hold a few batches at a time."""

    threads: int = 2
    memory_limit: str = "1GB"


@dataclass(frozen=True)
class ExtractCounts:
    rows_read: int
    rows_matching_filter: int
    invalid_nhs_numbers: int
    opt_outs_removed: int
    rows_written: int


@dataclass(frozen=True)
class ExtractResult:
    """What one extract did, the SHA-256 of the source bytes it read, and the CPU seconds of each stage (read,
    checksum, first cut, sql, opt-out, pseudonymise, write), on whichever thread ran it."""

    counts: ExtractCounts
    source_sha256: str
    stage_seconds: dict[str, float] = field(default_factory=dict, compare=False)


def source_columns(plan: ExtractPlan, path: Path) -> list[str]:
    """The column names the source file actually has; InputError if it cannot be read as its format."""
    if plan.format == "parquet":
        try:
            return list(pq.read_schema(path).names)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"dataset {plan.dataset}: {path.name} is not a readable Parquet file ({exc})") from None
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), None)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"dataset {plan.dataset}: {path.name} is not a readable CSV file ({exc})") from None
    if not header:
        raise InputError(f"dataset {plan.dataset}: {path.name} is empty (no header row)")
    return [name.strip() for name in header]


def check_source_columns(plan: ExtractPlan, path: Path) -> None:
    """The source must have exactly the declared columns: a missing or extra one means the declaration is wrong."""
    actual = source_columns(plan, path)
    declared = [name for name, _ in plan.declared]
    missing = [c for c in declared if c not in actual]
    extra = [c for c in actual if c not in declared]
    if missing or extra:
        parts = [f"missing {', '.join(missing)}" if missing else "", f"undeclared {', '.join(extra)}" if extra else ""]
        detail = "; ".join(p for p in parts if p)
        raise InputError(f"dataset {plan.dataset}: {path.name} does not match its declaration ({detail})")
    if plan.format == "csv" and actual != declared:
        raise InputError(f"dataset {plan.dataset}: {path.name} has the declared columns in another order")


def _connect(limits: EngineLimits, temp_dir: Path) -> duckdb.DuckDBPyConnection:
    config: dict[str, Any] = {
        # each query runs on the thread that asks for it; more DuckDB threads only with more than two to spare
        "threads": max(1, limits.threads - 2),
        "memory_limit": limits.memory_limit,
        "temp_directory": str(temp_dir),
    }
    return _with_macros(duckdb.connect(":memory:", config=config))


def _with_macros(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    for macro in MACROS:
        con.execute(macro)
    return con


def _cursor(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A second connection to the same database, for another thread (macros are per connection)."""
    return _with_macros(con.cursor())


def _first_cut(source: Iterable[pa.RecordBatch], prefilter: Prefilter | None, clock: StageClock) -> Iterator[pa.Table]:
    """The source's rows that pass the first cut (all, without one), gathered into tables of about ``BATCH_ROWS``;
    the first tables are smaller, so the later stages start early."""
    pending: list[pa.RecordBatch] = []
    rows, target = 0, max(1, BATCH_ROWS // 8)
    for batch in clock.each(READ, source):
        with clock.stage(FIRST_CUT):
            cut = prefilter.apply(batch) if prefilter else batch
        if cut.num_rows:
            pending.append(cut)
            rows += cut.num_rows
        if pending and rows >= target:
            yield pa.Table.from_batches(pending)
            pending, rows, target = [], 0, min(2 * target, BATCH_ROWS)
    if pending:
        yield pa.Table.from_batches(pending)


def _typed_values(con: duckdb.DuckDBPyConnection) -> TypedValue:
    def typed(value: Any, kind: ColumnType) -> pa.Array:
        return con.sql(typed_value_sql(kind), params={"v": value}).to_arrow_table().column(0).combine_chunks()

    return typed


def run_extract(
    plan: ExtractPlan,
    source: Path,
    *,
    optouts: Path | None,
    key: PseudonymKey,
    output: Path,
    temp_dir: Path,
    limits: EngineLimits | None = None,
) -> ExtractResult:
    """Extract ``source`` per ``plan`` into the Parquet file ``output``: its counts, the checksum of the source
    bytes read, and the CPU seconds of each stage. InputError on a source that does not fit; nothing is left at
    ``output`` after any failure."""
    check_source_columns(plan, source)
    limits = limits or EngineLimits()
    clock = StageClock()
    con = _connect(limits, temp_dir)
    # one connection a thread: the reader (for a Parquet source), the transform, the writer
    reader_con, writer_con = _cursor(con), _cursor(con)
    try:
        reader = open_source(plan, source, source_columns_used(plan), clock, reader_con)
        try:
            prefilter = None if reader.queried else Prefilter(plan, _typed_values(con))
            transform = BatchTransform(plan, con, load_optouts(optouts), clock, queried=reader.queried)
            writer = ExtractWriter(plan, writer_con, key, output, clock)
            _run(_first_cut(reader, prefilter, clock), transform, writer, threaded=limits.threads > 1)
        finally:
            reader.close()
        tally = transform.tally
        counts = ExtractCounts(reader.rows_read, tally.matching, tally.invalid, tally.opted, writer.rows_written)
        return ExtractResult(counts, reader.sha256, clock.seconds)
    except duckdb.Error as exc:
        output.unlink(missing_ok=True)
        raise InputError(f"dataset {plan.dataset}: {_first_line(exc)}") from None
    except BaseException:
        output.unlink(missing_ok=True)
        raise
    finally:
        for connection in (reader_con, writer_con, con):
            connection.close()


def _run(batches: Iterator[pa.Table], transform: BatchTransform, writer: ExtractWriter, *, threaded: bool) -> None:
    """Read, transform, write; each stage on a thread of its own when ``threaded``."""
    ahead: list[ReadAhead[pa.Table]] = []
    if threaded:
        ahead.append(ReadAhead(batches, READ_AHEAD))
        batches = iter(ahead[-1])
    kept: Iterator[pa.Table] = (transform(batch) for batch in batches)
    if threaded:
        ahead.append(ReadAhead(kept, READ_AHEAD))
        kept = iter(ahead[-1])
    try:
        for table in kept:
            writer.add(table)
        writer.close()
    except BaseException:
        writer.abandon()
        raise
    finally:
        for stage in ahead:
            stage.cancel()
        for stage in ahead:
            stage.close()


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
