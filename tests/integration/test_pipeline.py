"""The extract pipeline agrees with a plain reference implementation, and never leaks what it must not."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.reference_extract import OUTWARD, reference_extract
from tre.data import (
    ExtractCounts,
    ExtractPlan,
    PseudonymKey,
    Transform,
    _source,
    plan_extract,
    pseudonym,
    run_extract,
    sha256_file,
)
from tre.data._sql import MACROS
from tre.errors import InputError
from tre.governance.nhs_number import check_digit, is_valid_nhs_number
from tre.spec import ApprovedDataset, Condition, Dataset, DatasetRequest

DATASET = Dataset.model_validate(
    {
        "metadata": {"name": "episodes"},
        "spec": {
            "title": "Episodes",
            "location": "episodes.csv",
            "format": "csv",
            "owner": "Trust",
            "identifiability": "identifiable",
            "columns": [
                {"name": "nhs", "classification": "direct-identifier", "nhsNumber": True},
                {"name": "name", "classification": "direct-identifier"},
                {"name": "dob", "classification": "quasi-identifier", "type": "date", "generalise": "year"},
                {"name": "admitted", "classification": "quasi-identifier", "type": "date", "generalise": "month"},
                {"name": "postcode", "classification": "quasi-identifier", "generalise": "outward-code"},
                {"name": "code", "classification": "sensitive"},
                {"name": "stay", "classification": "other", "type": "integer"},
                {"name": "value", "classification": "other", "type": "float"},
            ],
        },
    }
)
COLUMNS = [c.name for c in DATASET.spec.columns]
HEADER = ",".join(COLUMNS) + "\n"
VALID = ["9434765919", "943 476 5870", "9990000042", "999-000-0271", "9990002584", "9990003459"]
INVALID = ["9434765918", "12345", "not-a-number", "99900000"]
KEY_A = PseudonymKey(1, bytes(range(32)))
KEY_B = PseudonymKey(1, bytes(range(1, 33)))


def normalised(number: str) -> int:
    return int(number.replace(" ", "").replace("-", ""))


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return path


def write_optouts(path: Path, numbers: set[int]) -> Path:
    pq.write_table(pa.table({"nhs_number": pa.array(sorted(numbers), pa.int64())}), path)
    return path


def plan_for(columns: list[str], conditions: list[Condition]) -> ExtractPlan:
    request = DatasetRequest(name="episodes", columns=columns, filter=conditions)
    return plan_extract(
        DATASET, request, ApprovedDataset(name="episodes", columns=frozenset(columns), filter=tuple(conditions))
    )


def extract(
    tmp: Path, rows: list[dict[str, Any]], plan: ExtractPlan, optouts: set[int], key: PseudonymKey
) -> tuple[list[tuple[Any, ...]], Any]:
    source = write_csv(tmp / "episodes.csv", rows)
    output = tmp / "out.parquet"
    result = run_extract(
        plan, source, optouts=write_optouts(tmp / "optouts.parquet", optouts), key=key, output=output, temp_dir=tmp
    )
    assert result.source_sha256 == sha256_file(source)
    table = pq.read_table(output)
    assert table.column_names == [c.name for c in plan.outputs]
    return [tuple(r.values()) for r in table.to_pylist()], result.counts


dates = st.dates(min_value=dt.date(1930, 1, 1), max_value=dt.date(2025, 12, 31)).map(dt.date.isoformat)
row_strategy = st.fixed_dictionaries(
    {
        "nhs": st.sampled_from(VALID + INVALID),
        "name": st.sampled_from(["Ann Smith", "Bo Li", "Cy Khan"]),
        "dob": dates,
        "admitted": st.one_of(st.none(), dates),
        "postcode": st.sampled_from(["LS1 4AP", "ls14ap", "SW1A 1AA", " M13 9PL ", "nonsense", "B1"]),
        "code": st.sampled_from(["E11", "I10", "J45"]),
        "stay": st.one_of(st.none(), st.integers(0, 60)),
        "value": st.one_of(st.none(), st.integers(0, 1000).map(lambda n: n / 10)),
    }
)
conditions = st.sampled_from(
    [
        Condition(column="code", op="in", value=["E11", "J45"]),
        Condition(column="code", op="!=", value="I10"),
        Condition(column="stay", op=">=", value=3),
        Condition(column="stay", op="is null"),
        Condition(column="admitted", op="<", value="2020-01-01"),
        Condition(column="value", op="not null"),
        Condition(column="dob", op=">", value="1970-06-30"),
        Condition(column="code", op="not in", value=["E11"]),
    ]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(row_strategy, max_size=25),
    opted=st.sets(st.sampled_from(VALID).map(normalised)),
    columns=st.lists(st.sampled_from(COLUMNS), min_size=1, unique=True),
    filter_=st.lists(conditions, max_size=2, unique=True),
)
def test_pipeline_agrees_with_the_reference(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[dict[str, Any]],
    opted: set[int],
    columns: list[str],
    filter_: list[Condition],
) -> None:
    tmp = tmp_path_factory.mktemp("extract")
    plan = plan_for(columns, filter_)
    got, counts = extract(tmp, rows, plan, opted, KEY_A)
    expected, expected_counts = reference_extract(
        ({k: None if v is None else str(v) for k, v in r.items()} for r in rows), plan, opted, KEY_A.key
    )
    assert sorted(got, key=repr) == sorted(expected, key=repr)
    assert (counts.rows_read, counts.rows_matching_filter, counts.invalid_nhs_numbers) == (
        expected_counts["read"],
        expected_counts["matching"],
        expected_counts["invalid"],
    )
    assert (counts.opt_outs_removed, counts.rows_written) == (expected_counts["opted"], expected_counts["written"])
    # the invariants, stated directly as well
    if "nhs" in columns:
        index = columns.index("nhs")
        forbidden = {pseudonym(KEY_A.key, str(n)) for n in opted}
        assert not forbidden & {row[index] for row in got}
        assert all(row[index] is None or len(row[index]) == 32 for row in got)
    assert [c.name for c in plan.outputs] == columns


def test_identifiers_never_appear_in_clear(tmp_path: Path) -> None:
    rows = [
        {
            "nhs": n,
            "name": "Ann Smith",
            "dob": "1980-05-02",
            "admitted": "2021-01-09",
            "postcode": "LS1 4AP",
            "code": "E11",
            "stay": 3,
            "value": 5.5,
        }
        for n in VALID
    ]
    plan = plan_for(COLUMNS, [])
    got, counts = extract(tmp_path, rows, plan, set(), KEY_A)
    assert counts.rows_written == len(VALID)
    text = repr(got)
    for number in VALID:
        assert number not in text
        assert str(normalised(number)) not in text
    assert "Ann Smith" not in text
    assert "LS1 4AP" not in text
    assert "1980-05-02" not in text
    assert {row[COLUMNS.index("postcode")] for row in got} == {"LS1"}
    assert {row[COLUMNS.index("dob")] for row in got} == {1980}
    assert {row[COLUMNS.index("admitted")] for row in got} == {"2021-01"}


def test_pseudonyms_are_stable_within_a_project_and_unlinkable_across(tmp_path: Path) -> None:
    rows = [
        {
            "nhs": n,
            "name": "A",
            "dob": "1980-01-01",
            "admitted": None,
            "postcode": "B1 1AA",
            "code": "E11",
            "stay": 1,
            "value": None,
        }
        for n in VALID
    ]
    plan = plan_for(["nhs"], [])
    first, _ = extract(tmp_path / "1", rows, plan, set(), KEY_A) if (tmp_path / "1").mkdir() is None else ([], None)
    again, _ = (
        extract(tmp_path / "2", list(reversed(rows)), plan, set(), KEY_A)
        if (tmp_path / "2").mkdir() is None
        else ([], None)
    )
    other, _ = extract(tmp_path / "3", rows, plan, set(), KEY_B) if (tmp_path / "3").mkdir() is None else ([], None)
    assert sorted(first) == sorted(again)
    assert len(set(first)) == len(VALID)  # spacing variants of one number would collapse: none here
    assert not set(first) & set(other)


def test_spacing_does_not_change_a_patients_pseudonym(tmp_path: Path) -> None:
    base = {
        "name": "A",
        "dob": "1980-01-01",
        "admitted": None,
        "postcode": "B1 1AA",
        "code": "E11",
        "stay": 1,
        "value": None,
    }
    rows = [base | {"nhs": "9434765919"}, base | {"nhs": "943 476 5919"}, base | {"nhs": "943-476-5919"}]
    got, _ = extract(tmp_path, rows, plan_for(["nhs"], []), set(), KEY_A)
    assert {g[0] for g in got} == {pseudonym(KEY_A.key, "9434765919")}


# ---- bad sources: one clear error, nothing written --------------------------------------------------------------


def _run(tmp_path: Path, source: Path, plan: ExtractPlan | None = None) -> Path:
    output = tmp_path / "out.parquet"
    run_extract(
        plan or plan_for(["nhs", "code"], []), source, optouts=None, key=KEY_A, output=output, temp_dir=tmp_path
    )
    return output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("nhs,name\n9434765919,A\n", "does not match its declaration (missing dob"),
        (",".join([*COLUMNS, "shoe_size"]) + "\n", "undeclared shoe_size"),
        (",".join(reversed(COLUMNS)) + "\n", "in another order"),
        ("", "is empty"),
        (
            HEADER + "9434765919,A,not-a-date,,LS1 4AP,E11,1,1.0\n",
            "row 2 (the header is row 1): column dob holds a value",
        ),
        (
            HEADER + "9434765919,A,1980-01-01,,LS1 4AP,E11,many,1.0\n",
            "column stay holds a value that is not a valid integer",
        ),
        (
            HEADER + "9434765919,A,1980-01-01\n",
            "row 2 (the header is row 1): the row does not have the declared columns",
        ),
        (HEADER + '9434765919,"A,1980-01-01,,LS1 4AP,E11,1,1.0\n', "the row does not have the declared columns"),
    ],
)
def test_bad_csv_sources_fail_cleanly(tmp_path: Path, content: str, message: str) -> None:
    """Values are type-checked in every column the extract uses (unused columns are not parsed); the error names
    the column but never quotes the source (it may be patient data)."""
    source = tmp_path / "episodes.csv"
    source.write_text(content)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        _run(tmp_path, source, plan_for(["nhs", "dob", "stay"], []))
    assert str(error.value).startswith("dataset episodes: ")
    for quoted in ("\n", "9434765919", "not-a-date", "many", "LS1 4AP"):
        assert quoted not in str(error.value)
    assert not (tmp_path / "out.parquet").exists()


def test_a_bad_value_deep_in_the_file_fails_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error after the first block surfaces through DuckDB; it is reported the same way, and nothing is written."""
    monkeypatch.setattr(_source, "BLOCK_SIZE", 256)
    good = "9434765919,A,1980-01-01,,LS1 4AP,E11,1,1.0\n"
    source = tmp_path / "episodes.csv"
    source.write_text(HEADER + good * 200 + good.replace(",1,1.0", ",1,high") + good * 10)
    message = (
        r"^dataset episodes: row 202 \(the header is row 1\): column value holds a value that is not a valid float$"
    )
    with pytest.raises(InputError, match=message):
        _run(tmp_path, source, plan_for(["nhs", "value"], []))
    assert not (tmp_path / "out.parquet").exists()


def test_non_utf8_values_fail_cleanly(tmp_path: Path) -> None:
    source = tmp_path / "episodes.csv"
    good = b"9434765919,A,1980-01-01,,LS1 4AP,E11,1,1.0\n"
    source.write_bytes(HEADER.encode() + good * 500 + good.replace(b",A,", b",A\xff,"))
    with pytest.raises(InputError, match="column name holds text that is not UTF-8"):
        _run(tmp_path, source, plan_for(["nhs", "name"], []))


def test_non_utf8_csv_fails_cleanly(tmp_path: Path) -> None:
    source = tmp_path / "episodes.csv"
    source.write_bytes(b"\xff\xfe\x00n\x00h")
    with pytest.raises(InputError, match="not a readable CSV file"):
        _run(tmp_path, source)


def _parquet_plan() -> ExtractPlan:
    plan = plan_for(["nhs", "dob", "stay"], [Condition(column="stay", op=">", value=1)])
    return ExtractPlan(**{**plan.__dict__, "format": "parquet"})


def test_parquet_sources_are_read_and_cast(tmp_path: Path) -> None:
    table = pa.table(
        {
            "nhs": ["9434765919", "9434765918"],
            "name": ["A", "B"],
            "dob": pa.array([dt.date(1980, 1, 1), dt.date(1990, 1, 1)]),
            "admitted": pa.array([None, None], pa.date32()),
            "postcode": ["LS1 4AP", "B1"],
            "code": ["E11", "E11"],
            "stay": [5, 5],
            "value": [1.0, 2.0],
        }
    )
    source, output = tmp_path / "episodes.parquet", tmp_path / "out.parquet"
    pq.write_table(table, source)
    result = run_extract(_parquet_plan(), source, optouts=None, key=KEY_A, output=output, temp_dir=tmp_path)
    assert pq.read_table(output).to_pylist() == [{"nhs": pseudonym(KEY_A.key, "9434765919"), "dob": 1980, "stay": 5}]
    assert result.counts == ExtractCounts(2, 2, 1, 0, 1)
    assert result.source_sha256 == sha256_file(source)


def test_corrupt_parquet_fails_cleanly(tmp_path: Path) -> None:
    source = tmp_path / "episodes.parquet"
    source.write_bytes(b"PAR1 this is not really parquet PAR1")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        _run(tmp_path, source, _parquet_plan())


def test_filter_values_are_parameters_never_sql(tmp_path: Path) -> None:
    hostile = "E11'); DROP TABLE staged; --"
    rows = [
        {
            "nhs": "9434765919",
            "name": "A",
            "dob": "1980-01-01",
            "admitted": None,
            "postcode": "B1 1AA",
            "code": hostile,
            "stay": 1,
            "value": None,
        }
    ]
    got, counts = extract(
        tmp_path, rows, plan_for(["code"], [Condition(column="code", op="==", value=hostile)]), set(), KEY_A
    )
    assert got == [(hostile,)]
    assert counts.rows_written == 1


def test_plan_transforms_follow_classification() -> None:
    plan = plan_for(COLUMNS, [])
    assert {c.name: c.transform for c in plan.outputs} == {
        "nhs": Transform.PSEUDONYMISE,
        "name": Transform.PSEUDONYMISE,
        "dob": Transform.YEAR,
        "admitted": Transform.MONTH,
        "postcode": Transform.OUTWARD_CODE,
        "code": Transform.KEEP,
        "stay": Transform.KEEP,
        "value": Transform.KEEP,
    }
    narrowed = plan_extract(
        DATASET,
        DatasetRequest(name="episodes", columns=["nhs", "code", "stay"]),
        ApprovedDataset(name="episodes", columns=frozenset({"code"})),
    )
    assert [c.name for c in narrowed.outputs] == ["code"]


# ---- one pass over the source: what Arrow's CSV reader must get right -------------------------------------------


def _quoted_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return path


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(row_strategy, min_size=1, max_size=60),
    names=st.lists(st.text(alphabet='ab ,"\n\r-', max_size=12), min_size=60, max_size=60),
)
def test_quoted_values_spanning_lines_and_blocks_are_read_as_records(
    tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, Any]], names: list[str]
) -> None:
    """Newlines, quotes and commas inside quoted values, with blocks far smaller than the file: every record is read
    once (rows read counts records, not lines), and the checksum covers exactly the file's bytes."""
    tmp = tmp_path_factory.mktemp("quoted")
    rows = [r | {"name": name} for r, name in zip(rows, names, strict=False)]
    source = _quoted_csv(tmp / "episodes.csv", rows)
    plan = plan_for(["nhs", "name", "postcode", "stay"], [])
    output = tmp / "out.parquet"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_source, "BLOCK_SIZE", 512)
        result = run_extract(plan, source, optouts=None, key=KEY_A, output=output, temp_dir=tmp)
    with source.open(newline="") as handle:
        expected, counts = reference_extract(
            ({k: v or None for k, v in row.items()} for row in csv.DictReader(handle)), plan, set(), KEY_A.key
        )
    got = [tuple(r.values()) for r in pq.read_table(output).to_pylist()]
    assert sorted(got, key=repr) == sorted(expected, key=repr)
    assert result.counts.rows_read == counts["read"] == len(rows)
    assert result.source_sha256 == sha256_file(source)


def test_a_byte_order_mark_is_not_a_row(tmp_path: Path) -> None:
    source = tmp_path / "episodes.csv"
    source.write_text("\ufeff" + HEADER + "9434765919,A,1980-01-01,,LS1 4AP,E11,1,1.0\n", encoding="utf-8")
    output = tmp_path / "out.parquet"
    result = run_extract(
        plan_for(["nhs", "dob"], []), source, optouts=None, key=KEY_A, output=output, temp_dir=tmp_path
    )
    assert result.counts == ExtractCounts(1, 1, 0, 0, 1)
    assert pq.read_table(output).to_pylist() == [{"nhs": pseudonym(KEY_A.key, "9434765919"), "dob": 1980}]


@pytest.mark.parametrize("content", [HEADER, HEADER.rstrip("\n"), HEADER + "\n\n"])
def test_a_source_with_only_a_header_gives_an_empty_extract(tmp_path: Path, content: str) -> None:
    source = tmp_path / "episodes.csv"
    source.write_text(content)
    output = tmp_path / "out.parquet"
    result = run_extract(
        plan_for(["nhs", "dob"], []), source, optouts=None, key=KEY_A, output=output, temp_dir=tmp_path
    )
    assert result.counts == ExtractCounts(0, 0, 0, 0, 0)
    assert result.source_sha256 == sha256_file(source)
    table = pq.read_table(output)
    assert (table.num_rows, table.column_names) == (0, ["nhs", "dob"])


def test_column_names_never_clash_with_the_pipelines_own(tmp_path: Path) -> None:
    """Declared names may start with an underscore, or be the names of working tables and their columns."""
    names = ["nhs", "_valid", "_opted", "_n", "v", "p", "s", "staged"]
    dataset = Dataset.model_validate(
        {
            "metadata": {"name": "odd"},
            "spec": {
                "title": "Odd names",
                "location": "odd.csv",
                "format": "csv",
                "owner": "Trust",
                "identifiability": "identifiable",
                "columns": [
                    {"name": "nhs", "classification": "direct-identifier", "nhsNumber": True},
                    {"name": "_valid", "classification": "other", "type": "boolean"},
                    {"name": "_opted", "classification": "other"},
                    {"name": "_n", "classification": "other", "type": "integer"},
                    {"name": "v", "classification": "direct-identifier"},
                    {"name": "p", "classification": "other"},
                    {"name": "s", "classification": "other"},
                    {"name": "staged", "classification": "other"},
                ],
            },
        }
    )
    plan = plan_extract(
        dataset,
        DatasetRequest(name="odd", columns=names[1:]),
        ApprovedDataset(
            name="odd", columns=frozenset(names), filter=(Condition(column="_valid", op="==", value=True),)
        ),
    )
    source = tmp_path / "odd.csv"
    source.write_text(",".join(names) + "\n9434765919,false,x,1,a,b,c,d\n9434765919,true,x,1,a,b,c,d\n")
    output = tmp_path / "out.parquet"
    result = run_extract(plan, source, optouts=None, key=KEY_A, output=output, temp_dir=tmp_path)
    assert result.counts == ExtractCounts(2, 1, 0, 0, 1)
    row = dict(zip(names[1:], (True, "x", 1, pseudonym(KEY_A.key, "a"), "b", "c", "d"), strict=True))
    assert pq.read_table(output).to_pylist() == [row]


def test_booleans_are_read_as_duckdb_reads_them(tmp_path: Path) -> None:
    dataset = Dataset.model_validate(
        {
            "metadata": {"name": "flags"},
            "spec": {
                "title": "Flags",
                "location": "flags.csv",
                "format": "csv",
                "owner": "Trust",
                "identifiability": "pseudonymised",
                "columns": [{"name": "flag", "classification": "other", "type": "boolean"}],
            },
        }
    )
    plan = plan_extract(
        dataset,
        DatasetRequest(name="flags", columns=["flag"]),
        ApprovedDataset(name="flags", columns=frozenset({"flag"})),
    )
    # a blank line is no record at all (as in Python's csv module), so an empty value in a one-column file is quoted
    spellings = ["true", "True", "T", "yes", "Y", "1", "false", "FALSE", "f", "No", "n", "0", '""']
    source = tmp_path / "flags.csv"
    source.write_text("flag\n" + "\n".join(spellings) + "\n")
    output = tmp_path / "out.parquet"
    run_extract(plan, source, optouts=None, key=KEY_A, output=output, temp_dir=tmp_path)
    assert pq.read_table(output).column("flag").to_pylist() == [True] * 6 + [False] * 6 + [None]
    source.write_text("flag\ntrue\nmaybe\n")
    with pytest.raises(InputError, match="column flag holds a value that is not a valid boolean"):
        run_extract(plan, source, optouts=None, key=KEY_A, output=output, temp_dir=tmp_path)


# ---- the SQL forms of the rules agree with the plain Python ones -------------------------------------------------


def _sql_values(expression: str, values: list[str]) -> list[Any]:
    con = duckdb.connect()
    for macro in MACROS:
        con.execute(macro)
    rows = con.execute(
        f"SELECT {expression} FROM (SELECT unnest($v) AS x, generate_subscripts($v, 1) AS i) ORDER BY i", {"v": values}
    )
    return [r[0] for r in rows.fetchall()]


def _with_check_digit(nine: int) -> str:
    digits = f"{nine:09d}"
    check = check_digit(digits)
    return digits + str(check if check is not None else 0)


nhs_like = st.one_of(
    st.integers(0, 999_999_999).map(_with_check_digit),  # right check digit, or the impossible remainder 10
    st.integers(0, 9_999_999_999).map(lambda n: f"{n:010d}"),
    st.text(alphabet="0123456789 -x+.", max_size=14),
)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(nhs_like, min_size=1, max_size=50))
def test_nhs_number_check_in_sql_is_modulus_11(values: list[str]) -> None:
    got = _sql_values("nhs_number_ok(nhs_ten_digits(nhs_normalised(x)))", values)
    normalised = [v.replace(" ", "").replace("-", "") for v in values]
    assert got == [n.isdigit() and is_valid_nhs_number(n) for n in normalised]


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.text(alphabet="LSWAMEls0123456789 ", max_size=10), min_size=1, max_size=50))
def test_outward_code_in_sql_agrees_with_the_reference(values: list[str]) -> None:
    got = _sql_values("outward_code(x)", values)
    assert got == [m.group(1) if (m := OUTWARD.match(v.strip().upper())) else None for v in values]
