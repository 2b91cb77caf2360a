"""The extract pipeline agrees with a plain reference implementation, and never leaks what it must not."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.reference_extract import reference_extract
from tre.data import ExtractPlan, PseudonymKey, Transform, plan_extract, pseudonym, run_extract
from tre.errors import InputError
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
    counts = run_extract(
        plan, source, optouts=write_optouts(tmp / "optouts.parquet", optouts), key=key, output=output, temp_dir=tmp
    )
    table = pq.read_table(output)
    assert table.column_names == [c.name for c in plan.outputs]
    return [tuple(r.values()) for r in table.to_pylist()], counts


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
        (",".join(COLUMNS) + "\n9434765919,A,not-a-date,,LS1 4AP,E11,1,1.0\n", "dataset episodes:"),
        (",".join(COLUMNS) + "\n9434765919,A,1980-01-01,,LS1 4AP,E11,many,1.0\n", "dataset episodes:"),
        (",".join(COLUMNS) + "\n9434765919,A,1980-01-01\n", "dataset episodes:"),
    ],
)
def test_bad_csv_sources_fail_cleanly(tmp_path: Path, content: str, message: str) -> None:
    """Values are type-checked in every column the extract uses (unused columns are not parsed)."""
    source = tmp_path / "episodes.csv"
    source.write_text(content)
    with pytest.raises(InputError, match=message.replace("(", r"\(")) as error:
        _run(tmp_path, source, plan_for(["nhs", "dob", "stay"], []))
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out.parquet").exists()


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
    pq.write_table(table, tmp_path / "episodes.parquet")
    output = _run(tmp_path, tmp_path / "episodes.parquet", _parquet_plan())
    assert pq.read_table(output).to_pylist() == [{"nhs": pseudonym(KEY_A.key, "9434765919"), "dob": 1980, "stay": 5}]


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
