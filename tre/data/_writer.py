"""The end of an extract: kept rows gathered into row groups, direct identifiers pseudonymised once per distinct
value in each (by DuckDB, which hashes without holding Python's GIL), written as Parquet (zstd level 1)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from tre.data._keys import PseudonymKey, hmac_pads
from tre.data._plan import ExtractPlan, OutputColumn, Transform
from tre.data._prefilter import ARROW_TYPES
from tre.data._sql import NUMBER_COLUMN, pseudonym_sql
from tre.data._stages import StageClock
from tre.data._transform import TABLE, per_value, query

ROW_GROUP_SIZE = 131_072  # rows per Parquet row group; kept rows are gathered to at least this many, then written
PSEUDONYMISE, WRITE = "pseudonymise", "write"  # stage names
_OUTPUT_TYPES = {
    Transform.PSEUDONYMISE: pa.string(),
    Transform.YEAR: pa.int32(),
    Transform.MONTH: pa.string(),
    Transform.OUTWARD_CODE: pa.string(),
}


def output_schema(plan: ExtractPlan) -> pa.Schema:
    """The extract's columns, in order, with their types after generalisation and pseudonymisation."""
    return pa.schema([(c.name, _OUTPUT_TYPES.get(c.transform, ARROW_TYPES[c.source_type])) for c in plan.outputs])


class ExtractWriter:
    """Writes kept rows to ``output`` in row groups; ``close`` after the last, ``abandon`` on failure. ``con`` is
    this thread's own DuckDB connection, with the macros."""

    def __init__(
        self, plan: ExtractPlan, con: duckdb.DuckDBPyConnection, key: PseudonymKey, output: Path, clock: StageClock
    ) -> None:
        self._plan, self._con, self._clock = plan, con, clock
        ipad, opad = hmac_pads(key.key)
        self._pads = {"ipad": ipad, "opad": opad}  # parameters of the query, never in its text
        self._schema = output_schema(plan)
        self._writer = pq.ParquetWriter(output, self._schema, compression="zstd", compression_level=1)
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self.rows_written = 0

    def add(self, kept: pa.Table) -> None:
        self._pending.append(kept)
        self._pending_rows += kept.num_rows
        if self._pending_rows >= ROW_GROUP_SIZE:
            self._flush()

    def _flush(self) -> None:
        if not self._pending_rows:
            return
        table = pa.concat_tables(self._pending)
        self._pending, self._pending_rows = [], 0
        columns = [self._finished(table, column) for column in self._plan.outputs]
        group = pa.Table.from_arrays(columns, schema=self._schema)
        with self._clock.stage(WRITE):
            self._writer.write_table(group, row_group_size=group.num_rows)
        self.rows_written += group.num_rows

    def _finished(self, table: pa.Table, column: OutputColumn) -> pa.Array:
        """An output column as written: a direct identifier replaced by its pseudonym."""
        if column.transform is not Transform.PSEUDONYMISE:
            return table.column(column.name).combine_chunks().cast(self._schema.field(column.name).type)
        nhs_number = column.name == self._plan.nhs_number_column
        sql = pseudonym_sql(TABLE, nhs_number=nhs_number)

        def pseudonyms(values: pa.Array) -> pa.Array:
            texts = pa.Table.from_arrays([values], names=["v"])
            return query(self._con, sql, texts, self._pads).column(0).combine_chunks()

        with self._clock.stage(PSEUDONYMISE):
            return per_value(table.column(NUMBER_COLUMN if nhs_number else column.name), pseudonyms)

    def close(self) -> None:
        self._flush()
        with self._clock.stage(WRITE):
            self._writer.close()

    def abandon(self) -> None:
        self._writer.close()
