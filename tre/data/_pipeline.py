"""Run one dataset's extract with DuckDB: one pass over the source, bounded memory, Parquet out."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from tre.data._keys import PseudonymKey, hmac_pads
from tre.data._plan import ExtractPlan
from tre.data._source import CsvSource, describe_csv_error
from tre.data._sql import (
    COUNTS_SQL,
    MACROS,
    Parameters,
    output_sql,
    parquet_source_sql,
    pseudonym_map_sql,
    source_columns_used,
    staged_sql,
)
from tre.errors import InputError

ROW_GROUP_SIZE = 122_880  # DuckDB's own: small enough that two threads share a 600k-row extract's writing
_HASH_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class EngineLimits:
    """How much of the machine one extract may use; DuckDB spills to ``temp_dir`` beyond the memory limit."""

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
    """What one extract did, and the SHA-256 of the source bytes it read."""

    counts: ExtractCounts
    source_sha256: str


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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
        "threads": limits.threads,
        "memory_limit": limits.memory_limit,
        "temp_directory": str(temp_dir),
        "preserve_insertion_order": False,
    }
    return duckdb.connect(":memory:", config=config)


def _load_optouts(con: duckdb.DuckDBPyConnection, optouts: Path | None) -> None:
    if optouts is None:
        con.execute("CREATE TEMP TABLE optouts (nhs_number BIGINT)")
    else:
        con.execute("CREATE TEMP TABLE optouts AS SELECT nhs_number FROM read_parquet($path)", {"path": str(optouts)})


def _literal_path(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


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
    """Extract ``source`` per ``plan`` into the Parquet file ``output``: its counts, and the checksum of the source
    bytes read. InputError on a source that does not fit."""
    check_source_columns(plan, source)
    con = _connect(limits or EngineLimits(), temp_dir)
    try:
        for macro in MACROS:
            con.execute(macro)
        _load_optouts(con, optouts)
        rows_read, source_sha256 = _stage(con, plan, source)
        counts = ExtractCounts(rows_read, *con.execute(COUNTS_SQL).fetchone())  # type: ignore[misc]
        ipad, opad = hmac_pads(key.key)
        for column in plan.pseudonymised:
            con.execute(pseudonym_map_sql(column, plan), {"ipad": ipad, "opad": opad})
        con.execute(
            f"COPY ({output_sql(plan)}) TO {_literal_path(output)} "
            f"(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, ROW_GROUP_SIZE {ROW_GROUP_SIZE})"
        )
    except duckdb.Error as exc:
        output.unlink(missing_ok=True)
        raise InputError(f"dataset {plan.dataset}: {_first_line(exc)}") from None
    finally:
        con.close()
    return ExtractResult(counts, source_sha256)


def _stage(con: duckdb.DuckDBPyConnection, plan: ExtractPlan, source: Path) -> tuple[int, str]:
    """The staged table of rows matching the filter, from one pass over the source; the rows read and checksum."""
    params = Parameters()
    if plan.format == "parquet":
        source_sha256 = sha256_file(source)
        con.execute(
            staged_sql(plan, params, parquet_source_sql(plan, "$source")), params.values | {"source": str(source)}
        )
        return pq.ParquetFile(source).metadata.num_rows, source_sha256
    try:
        csv_source = CsvSource(plan, source, source_columns_used(plan))
    except pa.ArrowException as exc:
        raise InputError(f"dataset {plan.dataset}: {describe_csv_error(plan, exc)}") from None
    try:
        con.register("source_rows", csv_source.batches)
        con.execute(staged_sql(plan, params, "source_rows"), params.values)
        return csv_source.rows_read, csv_source.sha256
    except duckdb.Error:
        if csv_source.error is None:
            raise
        raise InputError(f"dataset {plan.dataset}: {describe_csv_error(plan, csv_source.error)}") from None
    finally:
        con.unregister("source_rows")
        csv_source.close()


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
