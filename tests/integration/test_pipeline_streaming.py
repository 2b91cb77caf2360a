"""The streaming pipeline: many batches and row groups, three threads or one, CSV or Parquet, give the extract the
reference implementation gives; the first cut of the filter never drops a row the filter keeps."""

from __future__ import annotations

import datetime as dt
import math
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.integration.test_pipeline import (
    COLUMNS,
    DATASET,
    KEY_A,
    VALID,
    conditions,
    normalised,
    plan_for,
    row_strategy,
    write_csv,
    write_optouts,
)
from tests.support.reference_extract import reference_extract
from tre.data import EngineLimits, ExtractPlan, _pipeline, _source, _writer, pseudonym, run_extract, sha256_file
from tre.data._pipeline import _typed_values
from tre.data._prefilter import ARROW_TYPES, Prefilter
from tre.data._sql import MACROS, Parameters, filter_sql
from tre.errors import InputError
from tre.spec import ApprovedDataset, Condition, Dataset, DatasetRequest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks, batches and row groups of a few rows: every boundary of the stream is crossed many times."""
    monkeypatch.setattr(_source, "BLOCK_SIZE", 256)
    monkeypatch.setattr(_source, "PARQUET_BATCH_ROWS", 3)
    monkeypatch.setattr(_pipeline, "BATCH_ROWS", 4)
    monkeypatch.setattr(_writer, "ROW_GROUP_SIZE", 5)


def _typed(rows: list[dict[str, Any]]) -> pa.Table:
    """The rows as the declared types (what a Parquet source would hold)."""
    columns = {}
    for column in DATASET.spec.columns:
        arrow_type = ARROW_TYPES[column.type]
        values = [r[column.name] for r in rows]
        if column.type.value == "date":
            values = [None if v is None else dt.date.fromisoformat(v) for v in values]
        columns[column.name] = pa.array(values, arrow_type)
    return pa.table(columns)


def _extract(source: Path, plan: ExtractPlan, optouts: set[int], tmp: Path, threads: int) -> tuple[list[Any], Any]:
    output = tmp / f"out-{threads}-{source.suffix[1:]}.parquet"
    result = run_extract(
        plan,
        source,
        optouts=write_optouts(tmp / "optouts.parquet", optouts),
        key=KEY_A,
        output=output,
        temp_dir=tmp,
        limits=EngineLimits(threads=threads),
    )
    assert result.source_sha256 == sha256_file(source)
    table = pq.read_table(output)
    assert table.schema.names == [c.name for c in plan.outputs]
    return [tuple(r.values()) for r in table.to_pylist()], result.counts


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(row_strategy, max_size=60),
    opted=st.sets(st.sampled_from(VALID).map(normalised)),
    columns=st.lists(st.sampled_from(COLUMNS), min_size=1, unique=True),
    filter_=st.lists(conditions, max_size=2, unique=True),
)
def test_every_path_through_the_stream_gives_the_reference_extract(
    tmp_path_factory: pytest.TempPathFactory,
    small_batches: None,
    rows: list[dict[str, Any]],
    opted: set[int],
    columns: list[str],
    filter_: list[Condition],
) -> None:
    """One thread or three, a CSV or a Parquet source, batches and row groups of a few rows: the same extract (as a
    multiset of rows) and the same counts as the row-by-row reference."""
    tmp = tmp_path_factory.mktemp("stream")
    plan = plan_for(columns, filter_)
    expected, counts = reference_extract(
        ({k: None if v is None else str(v) for k, v in r.items()} for r in rows), plan, opted, KEY_A.key
    )
    csv_source = write_csv(tmp / "episodes.csv", rows)
    parquet_source = tmp / "episodes.parquet"
    pq.write_table(_typed(rows), parquet_source)
    parquet_plan = ExtractPlan(**{**plan.__dict__, "format": "parquet"})
    for source, source_plan in ((csv_source, plan), (parquet_source, parquet_plan)):
        for threads in (1, 2):
            got, got_counts = _extract(source, source_plan, opted, tmp, threads)
            assert sorted(got, key=repr) == sorted(expected, key=repr), (source.suffix, threads)
            assert (got_counts.rows_read, got_counts.rows_matching_filter) == (counts["read"], counts["matching"])
            assert (got_counts.invalid_nhs_numbers, got_counts.opt_outs_removed) == (counts["invalid"], counts["opted"])
            assert got_counts.rows_written == counts["written"] == len(got)


def test_a_patient_in_many_row_groups_keeps_one_pseudonym_and_opt_outs_leave_every_one(
    tmp_path: Path, small_batches: None
) -> None:
    base = {"name": "A", "dob": "1980-01-01", "admitted": None, "postcode": "B1 1AA", "code": "E11", "stay": 1}
    rows = [base | {"nhs": VALID[i % 3], "value": i} for i in range(90)]  # three patients, thirty episodes each
    opted = {normalised(VALID[2])}
    got, counts = _extract(write_csv(tmp_path / "e.csv", rows), plan_for(["nhs", "value"], []), opted, tmp_path, 2)
    assert counts.opt_outs_removed == 30
    assert {nhs for nhs, _ in got} == {pseudonym(KEY_A.key, str(normalised(n))) for n in VALID[:2]}
    assert sorted(value for _, value in got) == [float(i) for i in range(90) if i % 3 != 2]


def test_a_failure_deep_in_the_stream_stops_every_thread_and_leaves_no_output(
    tmp_path: Path, small_batches: None
) -> None:
    good = "9434765919,A,1980-01-01,,LS1 4AP,E11,1,1.0\n"
    source = tmp_path / "episodes.csv"
    source.write_text(",".join(COLUMNS) + "\n" + good * 300 + good.replace(",1,1.0", ",1,high") + good * 300)
    output = tmp_path / "out.parquet"
    before = threading.active_count()
    with pytest.raises(InputError, match=r"row 302 \(the header is row 1\): column value holds a value"):
        run_extract(plan_for(["nhs", "value"], []), source, optouts=None, key=KEY_A, output=output, temp_dir=tmp_path)
    assert not output.exists()
    assert threading.active_count() == before


def test_the_pipeline_never_imports_pandas(tmp_path: Path) -> None:
    """pyarrow's own conversions import pandas (a third of a second in a fresh process); ours avoid them."""
    rows = [{"nhs": n, "name": "A", "dob": "1980-01-01", "admitted": "2021-02-03", "postcode": "LS1 4AP",
             "code": "E11", "stay": 2, "value": 1.5} for n in VALID]  # fmt: skip
    source = write_csv(tmp_path / "episodes.csv", rows)
    write_optouts(tmp_path / "optouts.parquet", {normalised(VALID[0])})
    script = f"""
import sys
from pathlib import Path
from tests.integration.test_pipeline import KEY_A, plan_for
from tre.data import run_extract
from tre.spec import Condition
plan = plan_for({COLUMNS!r}, [Condition(column="admitted", op=">=", value="2020-01-01")])
tmp = Path({str(tmp_path)!r})
run_extract(plan, tmp / "episodes.csv", optouts=tmp / "optouts.parquet", key=KEY_A, output=tmp / "out.parquet",
            temp_dir=tmp)
print("pandas" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
    assert pq.read_table(tmp_path / "out.parquet").num_rows == len(VALID) - 1
    assert source.exists()


# ---- the first cut: sound whatever the values --------------------------------------------------------------------

FILTER_DATASET = Dataset.model_validate(
    {
        "metadata": {"name": "typed"},
        "spec": {
            "title": "Every type",
            "location": "typed.csv",
            "format": "csv",
            "owner": "Trust",
            "identifiability": "pseudonymised",
            "columns": [
                {"name": "s", "classification": "other"},
                {"name": "i", "classification": "other", "type": "integer"},
                {"name": "f", "classification": "other", "type": "float"},
                {"name": "d", "classification": "other", "type": "date"},
                {"name": "b", "classification": "other", "type": "boolean"},
            ],
        },
    }
)
_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "s": st.sampled_from(["", "a", "B", "b", "é", "a b", "10", "9"]),
    "i": st.integers(-3, 3),
    "f": st.sampled_from([-1.5, -0.0, 0.0, 2.0, math.inf, -math.inf, math.nan]),
    "d": st.dates(dt.date(1999, 12, 30), dt.date(2000, 1, 2)),
    "b": st.booleans(),
}
_OPERATORS = ["==", "!=", "<", "<=", ">", ">=", "in", "not in", "is null", "not null"]


@st.composite
def typed_condition(draw: st.DrawFn) -> Condition:
    column = draw(st.sampled_from(list(_VALUES)))
    op = draw(st.sampled_from(_OPERATORS))
    if op in ("is null", "not null"):
        return Condition(column=column, op=op)
    value = _VALUES[column].map(lambda v: v.isoformat() if isinstance(v, dt.date) else v)
    if op in ("in", "not in"):
        return Condition(column=column, op=op, value=draw(st.lists(value, min_size=1, max_size=3)))
    return Condition(column=column, op=op, value=draw(value))


def _batch(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {c.name: pa.array([r[c.name] for r in rows], ARROW_TYPES[c.type]) for c in FILTER_DATASET.spec.columns}
    )


def _filter_plan(filter_: list[Condition]) -> ExtractPlan:
    from tre.data import plan_extract

    names = [c.name for c in FILTER_DATASET.spec.columns]
    request = DatasetRequest(name="typed", columns=names, filter=filter_)
    return plan_extract(FILTER_DATASET, request, ApprovedDataset(name="typed", columns=frozenset(names)))


_NAN_ROW = {"s": None, "i": None, "f": math.nan, "d": None, "b": None}


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(st.fixed_dictionaries({k: st.one_of(st.none(), v) for k, v in _VALUES.items()}), max_size=12),
    filter_=st.lists(typed_condition(), min_size=1, max_size=3),
)
# DuckDB orders NaN above every number and finds it equal to itself; Arrow does neither
@example(rows=[_NAN_ROW], filter_=[Condition(column="f", op=">", value=-1.5)])
@example(rows=[_NAN_ROW], filter_=[Condition(column="f", op="in", value=[math.nan])])
@example(rows=[_NAN_ROW | {"s": None}], filter_=[Condition(column="s", op="not in", value=["a"])])
def test_the_first_cut_never_drops_a_row_the_filter_keeps(rows: list[dict[str, Any]], filter_: list[Condition]) -> None:
    plan = ExtractPlan(**{**_filter_plan([]).__dict__, "filter": tuple(filter_)})
    numbered = _batch(rows).append_column("row", pa.array(range(len(rows)), pa.int64()))
    con = duckdb.connect()
    for macro in MACROS:
        con.execute(macro)
    params = Parameters()
    con.register("rows", numbered)
    sql = f"SELECT row FROM rows WHERE {filter_sql(plan, params)}"
    kept_by_filter = {row for (row,) in con.execute(sql, params.values).fetchall()}
    cut = Prefilter(plan, _typed_values(con)).apply(numbered)
    assert kept_by_filter <= set(cut.column("row").to_pylist())


def test_the_first_cut_does_cut() -> None:
    """Not vacuous: rows that certainly fail a usable condition are gone before SQL sees them."""
    rows = [{"s": s, "i": i, "f": 1.0, "d": dt.date(2000, 1, 1), "b": True} for s in ("a", "b", None) for i in (1, 5)]
    plan = ExtractPlan(
        **{
            **_filter_plan([]).__dict__,
            "filter": (
                Condition(column="s", op="in", value=["a"]),
                Condition(column="i", op=">", value=2),
                Condition(column="f", op=">", value=0.5),  # a float: left to SQL
            ),
        }
    )
    con = duckdb.connect()
    cut = Prefilter(plan, _typed_values(con)).apply(_batch(rows))
    assert cut.to_pylist() == [{"s": "a", "i": 5, "f": 1.0, "d": dt.date(2000, 1, 1), "b": True}]


@pytest.mark.parametrize("source_format", ["csv", "parquet"])
def test_a_filter_value_that_does_not_fit_its_column_is_one_clear_error(tmp_path: Path, source_format: str) -> None:
    rows = [{"nhs": VALID[0], "name": "A", "dob": "1980-01-01", "admitted": None, "postcode": "B1 1AA",
             "code": "E11", "stay": 1, "value": None}]  # fmt: skip
    source = write_csv(tmp_path / "episodes.csv", rows)
    plan = plan_for(["code"], [Condition(column="stay", op=">", value="many")])
    if source_format == "parquet":
        source = tmp_path / "episodes.parquet"
        pq.write_table(_typed(rows), source)
        plan = ExtractPlan(**{**plan.__dict__, "format": "parquet"})
    output = tmp_path / "out.parquet"
    with pytest.raises(InputError, match=r"^dataset episodes: Conversion Error"):
        run_extract(plan, source, optouts=None, key=KEY_A, output=output, temp_dir=tmp_path)
    assert not output.exists()
