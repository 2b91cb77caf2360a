"""Disclosure checks on files: the identifier scan, tables of counts, tre.sdc sidecars and ACRO output folders."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import REPO
from tre import sdc
from tre.airlock import TableKind
from tre.errors import InputError
from tre.sdc import _identifiers
from tre.sdc._acro import read_acro_results
from tre.sdc._check_files import NO_EVIDENCE, TABLE_KINDS, FileReport, check_files, check_paths
from tre.sdc._identifiers import Finding, scan_text

FIXTURES = REPO / "tests" / "fixtures" / "check"
LAST_YEAR = dt.date.today().year - 1


def kinds(text: str, delimiter: str | None = None) -> list[str]:
    return [finding.kind for finding in scan_text(text, delimiter=delimiter)]


def check(path: Path, kind: str | None = None, rules: sdc.RuleSet = sdc.DEFAULT_RULES) -> FileReport:
    [report] = check_paths([path], rules=rules, kind=kind)
    json.dumps(report.as_dict())  # the --output json shape must serialise
    return report


def result(report: FileReport, rule: str) -> tuple[str, str]:
    [found] = [(str(r.status), r.detail) for r in report.results if r.rule == rule]
    return found


def cells(report: FileReport) -> set[tuple[Any, Any, str, Any, str]]:
    return {(c.row, c.column, c.rule, c.value, str(c.status)) for c in report.cells}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- identifier scan ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("NHS number 943 476 5919 on file", "nhs_number"),
        ("9434765919", "nhs_number"),
        ("943-476-5919.", "nhs_number"),
        ("lives at LS1 4AP", "postcode"),
        ("EC1A 1BB", "postcode"),
        ("W1A 0AX", "postcode"),
        ("ls14ap", "postcode"),
        ("DN55 1PT", "postcode"),
        ("write to jo.bloggs+study@example.nhs.uk", "email"),
        ("call 0113 496 0000", "phone"),
        ("020 7946 0958", "phone"),
        ("07700 900123", "phone"),
        ("07700900123", "phone"),
        ("+44 20 7946 0958", "phone"),
        ("+447700900123", "phone"),
        ("+44 (0)113 496 0000", "phone"),
        ("0800 123 456", "phone"),
        ("DOB: 01/02/1980", "date_of_birth"),
        ("born on 1980-02-03", "date_of_birth"),
        ("Date of birth 1.1.1990 or 31/12/1999", "date_of_birth"),
    ],
)
def test_identifiers_are_found(text: str, kind: str) -> None:
    assert kinds(text) == [kind]


@pytest.mark.parametrize(
    "text",
    [
        "12",
        "1,234 of 56,789 patients",
        "3.14",
        "0.0123456789",  # ten digits after the point pass the NHS check digit: a decimal, not a number
        "1.0123456789e-05",
        "22.7539986028",
        "2019",
        "2015 to 2024",
        "2019/20",
        "E11.9",
        "I10, J45.909, C50.912",
        "LS1",
        "LS1 and M1 outward codes",
        "Q1 2nd highest",
        "1234567890",  # no valid check digit
        "0 1 2 3 4 5 6 7 8 9",
        "p < 0.001",
        "OR 1.23 (95% CI 1.01 to 1.51)",
        "extract taken 2025-03-01",
        "study period 01/04/2015 to 31/03/2020",
        f"born in {LAST_YEAR}",  # a year alone
        "version 1.2.3",
        "user@localhost",
        "31/02/1980 DOB",  # no such day
        f"DOB 01/01/{LAST_YEAR + 1}",  # not before this year
    ],
)
def test_ordinary_statistics_are_not_identifiers(text: str) -> None:
    assert kinds(text) == []


def test_findings_give_line_and_column_of_a_csv_never_the_value() -> None:
    text = (FIXTURES / "identifiers.csv").read_text(encoding="utf-8")
    findings = scan_text(text, delimiter=",")
    assert [(f.kind, f.line, f.column) for f in findings] == [
        ("nhs_number", 2, 0),
        ("date_of_birth", 2, 1),
        ("postcode", 2, 2),
        ("email", 2, 3),
        ("phone", 2, 4),
        ("nhs_number", 3, 0),
        ("date_of_birth", 3, 1),
        ("postcode", 3, 2),
        ("email", 3, 3),
        ("phone", 3, 4),
    ]
    shown = " ".join(f.describe() + json.dumps(f.as_dict()) for f in findings)
    values = [cell for line in text.splitlines()[1:] for cell in line.split(",")]
    assert not [value for value in values if value in shown]
    assert findings[0].describe() == "NHS number on line 2, column index 0"


def test_tsv_columns_and_quoted_fields_spanning_lines() -> None:
    text = 'id\tnote\n1\t"first line\nthen LS1 4AP"\n2\tjo@example.org\n'
    assert [(f.kind, f.line, f.column) for f in scan_text(text, delimiter="\t")] == [
        ("postcode", 3, 1),
        ("email", 4, 1),
    ]


@pytest.mark.parametrize("header", ["dob", "date_of_birth", "BirthDate", "patientDOB", "Date of Birth"])
def test_dates_in_a_birth_column(header: str) -> None:
    text = f"id,{header},n\n1,1980-01-02,5\n2,,7\n3,15/06/1975,9\n4,{LAST_YEAR + 1}-01-01,3\n"
    findings = scan_text(text, delimiter=",")
    assert [(f.kind, f.line, f.column) for f in findings] == [("date_of_birth", 2, 1), ("date_of_birth", 4, 1)]
    assert findings[0].detail == "in a column headed as a date of birth"


def test_a_column_mostly_of_full_dates_is_record_level() -> None:
    text = "id,admitted,ward\n1,1980-01-02,A\n2,1975-03-02,B\n3,2001-05-06,C\n4,unknown,D\n"
    assert [(f.line, f.column) for f in scan_text(text, delimiter=",")] == [(2, 1), (3, 1), (4, 1)]
    half = "id,seen\n1,1980-01-02\n2,unknown\n"  # exactly half are dates: not more than half
    assert kinds(half, ",") == []


@pytest.mark.parametrize(
    "dates",
    [
        ["2023-01-02", "2023-01-09", "2023-01-16", "2023-01-23"],  # weekly
        ["2023-03-01", "2023-02-01", "2023-01-01"],  # monthly, descending
        ["31/01/2023", "28/02/2023", "31/03/2023"],  # month-ends
        ["2020-04-01", "2021-04-01", "2022-04-01"],  # yearly
    ],
)
def test_a_time_axis_is_not_dates_of_birth(dates: list[str]) -> None:
    text = "period,count\n" + "".join(f"{date},{12 + i}\n" for i, date in enumerate(dates))
    assert kinds(text, ",") == []


def test_a_time_axis_with_a_gap_is_flagged() -> None:
    text = "week,count\n2023-01-02,12\n2023-01-09,15\n2023-01-23,11\n"
    assert kinds(text, ",") == ["date_of_birth"] * 3


def test_unparseable_csv_is_scanned_as_plain_text() -> None:
    text = 'a,b\n1,LS1 4AP\n2,"' + "x" * 200_000 + '"\n'  # a field over the csv module's limit
    assert [(f.kind, f.line, f.column) for f in scan_text(text, delimiter=",")] == [("postcode", 2, None)]


FRAGMENTS = ["LS1 4AP", "ls1", "4ap", "0113 496 0000", "07700", "900123", "943 476 5919", "9434765919", "jo@x.org",
             "@", ".", " ", "-", "+44", "0", "7", "\n", "E11.9", "(0)", "a", "/"]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.lists(st.sampled_from(FRAGMENTS), max_size=6).map("".join), max_size=4), max_size=5))
def test_the_one_pass_search_misses_no_cell(rows: list[list[str]]) -> None:
    """The exact search runs only where one pass over the whole text matched: that pass must miss nothing."""
    text = "".join(",".join(f'"{cell}"' for cell in row) + "\n" for row in rows)
    records, starts = _identifiers._records(text, ",")
    exact = {(f.line, f.column, f.kind) for f in _identifiers._scan_records(records, starts)}
    every_cell = {
        (line, column, kind)
        for index, record in enumerate(records)
        for column in range(len(record))
        for line, part in _identifiers._cell_lines(_identifiers._cell(record, starts[index], column))
        for kind in _identifiers._patterns(part)
    }
    assert exact == every_cell


def test_finding_is_frozen() -> None:
    finding = Finding("email", 3, 1)
    with pytest.raises(AttributeError):
        finding.line = 4  # type: ignore[misc]


# --- file checks: text and declared frequency tables ----------------------------------------------------------------


def test_text_file_with_identifiers_fails() -> None:
    report = check(FIXTURES / "identifiers.csv")
    assert str(report.status) == "fail"
    status, detail = result(report, "identifiers")
    assert status == "fail"
    assert detail.startswith("2 dates of birth, 2 e-mail addresses, 2 NHS numbers, 2 phone numbers, 2 postcodes")
    assert len(report.as_dict()["findings"]) == 10


def test_clean_text_passes() -> None:
    report = check(FIXTURES / "clean_report.txt")
    assert (str(report.status), report.evidence, report.findings) == ("pass", "not a table", ())
    assert {r.rule for r in report.results} == {"size", "file-type", "identifiers"}


@pytest.mark.parametrize(
    ("count", "status", "rule"),
    [(9, "fail", "threshold"), (10, "pass", None), (11, "pass", None), (1, "fail", "threshold"), (0, "fail", "zeros")],
)
def test_frequency_table_threshold(tmp_path: Path, count: int, status: str, rule: str | None) -> None:
    path = write(tmp_path / "counts.csv", f"region,female,male\nNorth,{count},40\nSouth,25,31\n")
    report = check(path, kind="frequency")
    assert (str(report.status), report.evidence) == (status, "frequency")
    assert cells(report) == ({("North", "female", rule, count, "fail")} if rule else set())


def test_zeros_pass_when_the_rules_allow_them(tmp_path: Path) -> None:
    path = write(tmp_path / "counts.csv", "region,female,male\nNorth,0,40\nSouth,25,31\n")
    report = check(path, kind="frequency", rules=sdc.RuleSet(zeros_disclosive=False))
    assert str(report.status) == "pass"
    assert check(path, kind="frequency", rules=sdc.RuleSet(threshold=30)).cells[0].rule == "zeros"


def test_frequency_fixtures_and_summaries() -> None:
    assert str(check(FIXTURES / "frequency_safe.csv", kind="frequency").status) == "pass"
    report = check(FIXTURES / "frequency_small.csv", kind="frequency")
    assert cells(report) == {("South", "female", "threshold", 3, "fail"), ("East", "male", "zeros", 0, "fail")}
    assert result(report, "threshold") == ("fail", "1 of 6 cells below 10")
    assert result(report, "zeros") == ("fail", "1 of 6 cells zero")


def test_frequency_table_cells_that_are_not_counts_are_reviewed(tmp_path: Path) -> None:
    path = write(tmp_path / "counts.tsv", "region\tsex\tn\tshare\nNorth\tF\t40\t0.5\nSouth\tM\t\t*\n")
    report = check(path, kind="frequency")
    assert str(report.status) == "review"
    assert [(c.row, c.column, c.rule, c.value, str(c.status)) for c in report.cells] == [
        (["North", "F"], "share", "count", 0.5, "review"),  # two leading text columns are row labels
        (["South", "M"], "n", "suppression", None, "review"),  # blank: can it be recovered? a person decides
        (["South", "M"], "share", "count", "*", "review"),
    ]


def test_numeric_table_without_evidence_is_reviewed() -> None:
    for name in ("means_no_evidence.csv", "frequency_safe.csv"):
        report = check(FIXTURES / name)
        assert (str(report.status), report.evidence) == ("review", "none")
        assert result(report, "evidence") == ("review", NO_EVIDENCE)


def test_text_only_table_passes() -> None:
    report = check(FIXTURES / "codebook.csv")
    assert (str(report.status), report.evidence) == ("pass", "none")


def test_binary_file_is_not_scanned(tmp_path: Path) -> None:
    path = tmp_path / "plot.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"943 476 5919")
    report = check(path)
    assert (str(report.status), report.evidence, report.findings) == ("pass", "not a table", ())


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="Unknown table kind 'magnitude'"):
        check_paths([FIXTURES / "codebook.csv"], rules=sdc.DEFAULT_RULES, kind="magnitude")
    with pytest.raises(InputError, match="not an ACRO output folder"):
        check(tmp_path)
    with pytest.raises(InputError, match="Cannot read"):
        check(tmp_path / "absent.csv")


# --- tre.sdc sidecars -----------------------------------------------------------------------------------------------


def saved(tmp_path: Path, counts: dict[tuple[str, str], int], **kwargs: Any) -> Path:
    rows = [(a, b) for (a, b), n in counts.items() for _ in range(n)]
    df = pd.DataFrame(rows, columns=["region", "sex"])
    path = tmp_path / "table.csv"
    sdc.crosstab(df["region"], df["sex"], **kwargs).save(path)
    return path


def test_sidecar_outcomes_are_the_files(tmp_path: Path) -> None:
    path = saved(tmp_path, {("North", "F"): 20, ("North", "M"): 4, ("South", "F"): 12, ("South", "M"): 15})
    report = check(path, kind="frequency")  # the sidecar's evidence wins over the declared kind
    assert (str(report.status), report.evidence) == ("fail", "sidecar")
    assert cells(report) == {("North", "M", "threshold", 4, "fail")}
    assert result(report, "sidecar")[0] == "pass"
    assert result(report, "sidecar")[1].startswith("matches table.csv.sdc.json; a table of counts")
    assert result(report, "threshold") == ("fail", "1 of 4 cells below 10")
    assert str(check(FIXTURES / "sdc_table.csv").status) == "pass"


def test_tampered_table_fails(tmp_path: Path) -> None:
    path = saved(tmp_path, {("North", "F"): 20, ("North", "M"): 14, ("South", "F"): 12, ("South", "M"): 15})
    assert str(check(path).status) == "pass"
    path.write_text(path.read_text(encoding="utf-8").replace("14", "4"), encoding="utf-8")
    report = check(path)
    assert str(report.status) == "fail"
    assert result(report, "sidecar")[0] == "fail"
    assert report.cells == ()


def test_sidecar_with_malformed_results_fails(tmp_path: Path) -> None:
    path = saved(tmp_path, {("North", "F"): 20, ("North", "M"): 14})
    sidecar = sdc.sidecar_path(path)
    document = json.loads(sidecar.read_text(encoding="utf-8"))
    sidecar.write_text(json.dumps({**document, "results": [{"rule": "threshold", "status": "fine"}]}), "utf-8")
    assert result(check(path), "sidecar") == ("fail", "table.csv.sdc.json has malformed per-cell results")


def test_counts_saved_under_weaker_rules_are_rechecked_under_the_policy(tmp_path: Path) -> None:
    path = saved(tmp_path, {("North", "F"): 20, ("North", "M"): 6}, rules=sdc.RuleSet(threshold=5))
    report = check(path)
    assert str(report.status) == "fail"
    assert cells(report) == {("North", "M", "threshold", 6, "fail")}
    assert str(check(path, rules=sdc.RuleSet(threshold=3, name="lenient")).status) == "pass"


def means(tmp_path: Path, **kwargs: Any) -> Path:
    """A table of mean ages, saved by tre.sdc with its sidecar."""
    df = pd.DataFrame({"region": ["North"] * 30 + ["South"] * 30, "sex": ["F", "M"] * 30})
    df["age"] = [40.0 + i % 13 for i in range(len(df))]
    path = tmp_path / "means.csv"
    sdc.crosstab(df["region"], df["sex"], values=df["age"], aggfunc="mean", **kwargs).save(path)
    return path


def test_a_table_of_statistics_is_reviewed_whatever_its_sidecar_claims(tmp_path: Path) -> None:
    report = check(means(tmp_path))
    assert str(report.status) == "review"
    assert report.cells == ()  # every cell passes by the sidecar's account...
    status, detail = result(report, "evidence")  # ...an account the airlock cannot recompute from the table
    assert status == "review"
    assert detail.startswith("a table of mean values: means.csv.sdc.json's per-cell results")
    assert result(report, "rules") == ("pass", "checked under rules at least as strict as default")


def test_claims_under_weaker_rules_are_reviewed(tmp_path: Path) -> None:
    report = check(means(tmp_path, rules=sdc.RuleSet(threshold=5)))
    assert result(report, "rules") == ("review", "checked under weaker rules than default: threshold 5 (policy 10)")


def test_suppressed_cells_are_reviewed_not_failed(tmp_path: Path) -> None:
    counts = {("North", "F"): 20, ("North", "M"): 4, ("South", "F"): 12, ("South", "M"): 15}
    report = check(saved(tmp_path, counts, suppress=True))
    assert str(report.status) == "review"
    suppressed = json.loads(sdc.sidecar_path(tmp_path / "table.csv").read_text())["suppressed"]
    assert len(suppressed) == 4  # the failing cell and its complements: every cell of a 2x2 table
    assert {(c.row, c.column, c.rule, c.value, str(c.status)) for c in report.cells} == {
        (cell["row"], cell["column"], "suppression", None, "review") for cell in suppressed
    }
    assert all(c.reason.startswith("suppressed; a checker confirms") for c in report.cells)


# --- evidence the author can forge ----------------------------------------------------------------------------------


def forge(path: Path, edit: dict[str, str], **changes: Any) -> None:
    """Edit a saved table and rewrite its sidecar to match, as a researcher with both files can: a new hash,
    every per-cell result "pass"."""
    text = path.read_text(encoding="utf-8")
    for old, new in edit.items():
        text = text.replace(old, new)
    path.write_text(text, encoding="utf-8")
    sidecar = sdc.sidecar_path(path)
    document = json.loads(sidecar.read_text(encoding="utf-8"))
    document["csv_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    document["results"] = [{**item, "status": "pass", "reason": ""} for item in document["results"]]
    document.update(status="pass", suppressed=[], **changes)
    sidecar.write_text(json.dumps(document), encoding="utf-8")


def test_a_forged_sidecar_cannot_pass_a_small_count(tmp_path: Path) -> None:
    path = saved(tmp_path, {("North", "F"): 20, ("North", "M"): 14, ("South", "F"): 12, ("South", "M"): 15})
    forge(path, {"14": "4"})
    assert sdc.verify_saved(path)  # the unkeyed hash is no obstacle
    report = check(path)
    assert str(report.status) == "fail"
    assert cells(report) == {("North", "M", "threshold", 4, "fail")}


def test_a_forged_sidecar_cannot_unsuppress_a_cell(tmp_path: Path) -> None:
    counts = {("North", "F"): 20, ("North", "M"): 4, ("South", "F"): 12, ("South", "M"): 15}
    path = saved(tmp_path, counts, suppress=True)
    forge(path, {"North,,": "North,20,4", "South,,": "South,12,15"})  # restore the hidden counts
    assert cells(check(path)) == {("North", "M", "threshold", 4, "fail")}


def test_a_sidecar_claiming_counts_for_a_table_of_means_is_checked_as_counts(tmp_path: Path) -> None:
    """Declaring means to be counts is the one lie the numbers cannot expose on their own: non-whole values are
    reviewed, and the declaration is shown to checkers (docs/explanation/airlock.md)."""
    path = means(tmp_path)
    forge(path, {}, aggfunc=None)
    report = check(path)
    assert report.evidence == "sidecar"
    assert str(report.status) == "review"
    assert {c.rule for c in report.cells} == {"count"}


def test_a_forged_acro_pass_on_a_frequency_table_is_recomputed(acro_folder: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(acro_folder, tmp_path / "forged"))
    results = json.loads((folder / "results.json").read_text())
    for output in results["results"].values():
        output.update(status="pass", outcome={}, summary=output["summary"].replace("fail", "pass"))
    (folder / "results.json").write_text(json.dumps(results))
    report = check(folder)
    assert result(report.files[0], "acro")[0] == "pass"  # what ACRO was made to say...
    assert str(report.files[0].status) == "fail"  # ...and what the table shows
    assert cells(report.files[0]) == {("East", "F", "zeros", 0, "fail"), ("East", "M", "threshold", 3, "fail")}
    assert str(report.files[2].status) == "review"  # means: a claimed pass is still only a claim


# --- the files of one airlock request, in memory ------------------------------------------------------------------


def test_check_files_pairs_sidecars_and_declarations_by_name(tmp_path: Path) -> None:
    table = saved(tmp_path, {("North", "F"): 20, ("North", "M"): 4, ("South", "F"): 12, ("South", "M"): 15})
    sidecar = sdc.sidecar_path(table)
    files = {
        "t.csv": table.read_bytes(),
        "t.csv.sdc.json": sidecar.read_bytes().replace(b'"table.csv"', b'"t.csv"'),
        "plain.csv": b"group,n\nA,3\nB,40\n",
        "declared.csv": b"group,n\nA,3\nB,40\n",
        "notes.txt": b"nothing to see\n",
    }
    reports = check_files(files, rules=sdc.DEFAULT_RULES, kinds={"declared.csv": "frequency"})
    assert {name: (str(r.status), r.evidence) for name, r in reports.items()} == {
        "t.csv": ("fail", "sidecar"),
        "t.csv.sdc.json": ("pass", "not a table"),
        "plain.csv": ("review", "none"),
        "declared.csv": ("fail", "frequency"),
        "notes.txt": ("pass", "not a table"),
    }
    assert cells(reports["t.csv"]) == {("North", "M", "threshold", 4, "fail")}
    with pytest.raises(InputError, match="Unknown table kind"):
        check_files(files, rules=sdc.DEFAULT_RULES, kinds={"t.csv": "means"})
    assert {kind.value for kind in TableKind} == set(TABLE_KINDS)  # what the airlock lets authors declare


def test_check_files_reads_an_acro_results_json_among_them() -> None:
    folder = FIXTURES / "acro_outputs"
    files = {name: (folder / name).read_bytes() for name in ("results.json", "output_0_0.csv")}
    reports = check_files(files, rules=sdc.DEFAULT_RULES)
    assert reports["output_0_0.csv"].evidence == "acro"
    assert cells(reports["output_0_0.csv"]) == {
        ("East", "female", "threshold", 1, "fail"),
        ("East", "male", "threshold", 2, "fail"),
    }
    broken = check_files({"results.json": b"{}", "t.csv": b"a,b\nx,1\n"}, rules=sdc.DEFAULT_RULES)
    assert result(broken["results.json"], "acro")[0] == "review"
    assert broken["t.csv"].evidence == "none"


# --- ACRO output folders --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def acro_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder written by a real ACRO session: a failing crosstab, a passing one and a failing mean table."""
    with warnings.catch_warnings():  # ACRO changes the global warning filters and root logging: contain it
        warnings.simplefilter("ignore")
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:
            acro = pytest.importorskip("acro")
            logging.getLogger("acro").setLevel(logging.ERROR)
            work = tmp_path_factory.mktemp("acro")
            with pytest.MonkeyPatch.context() as patch:
                patch.chdir(work)
                session = acro.ACRO(suppress=False)
                df = pd.DataFrame(
                    {"region": ["North"] * 40 + ["South"] * 30 + ["East"] * 3, "sex": ["F", "M"] * 35 + ["M"] * 3}
                )
                df["value"] = [float(i % 7 + 1) for i in range(len(df))]
                session.crosstab(df["region"], df["sex"])
                big = df[df["region"] != "East"]
                session.crosstab(big["region"], big["sex"])
                session.crosstab(df["region"], df["sex"], values=df["value"], aggfunc="mean")
                session.finalise("out", "json")
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
    return work / "out"


def test_read_acro_results(acro_folder: Path) -> None:
    outputs = read_acro_results(acro_folder)
    assert [(o.name, o.status) for o in outputs][:3] == [
        ("output_0", "fail"),
        ("output_1", "pass"),
        ("output_2", "fail"),
    ]
    assert outputs[0].files == ("output_0_0.csv",)
    assert "MinimumThresholdCheck: fail - 2 cells may need suppressing." in outputs[0].summary
    assert "\n" not in outputs[0].summary
    assert {(c.row, c.column, c.checks) for c in outputs[0].cells} == {
        ("East", "F", ("PresenceOfZeroCheck", "MinimumThresholdCheck")),
        ("East", "M", ("MinimumThresholdCheck",)),
    }
    assert all(o.status == "review" for o in outputs[3:])  # ACRO's session summaries, not for release


def test_acro_folder_report(acro_folder: Path) -> None:
    report = check(acro_folder)
    assert (str(report.status), report.evidence) == ("fail", "acro")
    assert result(report, "checksum") == ("pass", "results.json: matches ACRO's checksum")
    first = report.files[0]
    assert first.path == str(acro_folder / "output_0_0.csv")
    assert cells(first) == {  # recomputed from the table: ACRO also fails the zero on its threshold check
        ("East", "F", "zeros", 0, "fail"),
        ("East", "M", "threshold", 3, "fail"),
    }
    assert str(report.files[2].status) == "fail"  # a table of means: ACRO's claimed failures stay failures
    assert result(report.files[2], "evidence")[0] == "review"
    assert str(report.files[1].status) == "pass"
    assert report.as_dict()["files"][0]["results"][-1]["rule"] == "acro"


def test_acro_file_changed_after_finalise_fails(acro_folder: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(acro_folder, tmp_path / "copy"))
    (folder / "output_1_0.csv").write_text("sex,F,M\nNorth,2,20\n", encoding="utf-8")
    (folder / "output_2_0.csv").unlink()
    report = check(folder)
    assert result(report.files[1], "checksum") == ("fail", "output_1_0.csv: changed after ACRO finalised the folder")
    assert result(report.files[2], "file") == ("fail", "listed by output_2 in results.json but missing")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "Cannot read ACRO results"),
        ('{"results": {"output_0": {"status": "fail"', "is not valid JSON"),
        ("[1, 2]", "has no 'results' mapping"),
        ('{"results": {"output_0": {"status": "ok"}}}', "has status 'ok', not pass, fail or review"),
        ('{"results": {"output_0": {"status": "pass", "files": [{"name": "../x.csv"}]}}}', "not a file name"),
        ('{"results": {"output_0": {"status": "pass", "outcome": [1]}}}', "'outcome' that is not a table"),
    ],
)
def test_corrupt_acro_results(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        write(tmp_path / "results.json", content)
    with pytest.raises(InputError, match=message) as raised:
        read_acro_results(tmp_path)
    assert "\n" not in str(raised.value)


def test_corrupt_results_json_stops_the_folder_check(tmp_path: Path) -> None:
    write(tmp_path / "results.json", "not json")
    with pytest.raises(InputError, match="is not valid JSON"):
        check(tmp_path)


def test_fixture_acro_folder_is_a_real_one() -> None:
    report = check(FIXTURES / "acro_outputs")
    assert str(report.status) == "fail"
    assert cells(report.files[0]) == {
        ("East", "female", "threshold", 1, "fail"),
        ("East", "male", "threshold", 2, "fail"),
    }


@pytest.mark.parametrize(
    ("name", "default", "frequency"),
    [
        ("frequency_safe.csv", "review", "pass"),
        ("frequency_small.csv", "review", "fail"),
        ("means_no_evidence.csv", "review", "review"),
        ("weekly_counts.csv", "review", "pass"),
        ("codebook.csv", "pass", "review"),
        ("clean_report.txt", "pass", "pass"),
        ("identifiers.csv", "fail", "fail"),
        ("sdc_table.csv", "pass", "pass"),
        ("acro_outputs", "fail", "fail"),
    ],
)
def test_fixture_statuses_match_their_readme(name: str, default: str, frequency: str) -> None:
    assert (str(check(FIXTURES / name).status), str(check(FIXTURES / name, kind="frequency").status)) == (
        default,
        frequency,
    )
