"""``tre check``: every fixture gets the status its README promises, in both table kinds; JSON output is stable."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, Tre

FIXTURES = REPO / "tests" / "fixtures" / "check"
_ROW = re.compile(r"^\| `(?P<path>[^`]+)`[^|]*\| (?P<default>\w+) \| (?P<frequency>\w+) \|")


def expectations() -> list[tuple[str, str, str]]:
    rows = []
    for line in (FIXTURES / "README.md").read_text().splitlines():
        match = _ROW.match(line)
        if match:
            rows.append((match["path"].rstrip("/"), match["default"], match["frequency"]))
    return rows


@pytest.mark.parametrize(("name", "default", "frequency"), expectations())
def test_each_fixture_gets_its_documented_status(tre: Tre, name: str, default: str, frequency: str) -> None:
    for extra, expected in (((), default), (("--kind", "frequency"), frequency)):
        result = tre("check", str(FIXTURES / name), *extra, "--output", "json")
        (report,) = json.loads(result.stdout)
        assert report["status"] == expected, (name, extra, report)
        assert result.exit_code == (1 if expected == "fail" else 0)


def test_expectations_cover_every_fixture() -> None:
    names = {row[0] for row in expectations()}
    on_disk = {p.name for p in FIXTURES.iterdir() if p.name != "README.md" and not p.name.endswith(".sdc.json")}
    assert names == on_disk


def test_json_shape_and_that_findings_never_hold_the_value(tre: Tre) -> None:
    result = tre("check", str(FIXTURES / "identifiers.csv"), "--output", "json")
    (report,) = json.loads(result.stdout)
    assert set(report) == {"path", "status", "evidence", "results", "cells", "findings", "files"}
    assert {f["kind"] for f in report["findings"]} >= {"nhs_number", "postcode", "email"}
    raw = (FIXTURES / "identifiers.csv").read_text()
    for token in re.findall(r"[\w.+-]+@[\w.-]+|\b999\d{7}\b", raw):
        assert token not in result.stdout


def test_a_tampered_sidecar_table_fails(tre: Tre, tmp_path: Path) -> None:
    for name in ("sdc_table.csv", "sdc_table.csv.sdc.json"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    assert tre("check", str(tmp_path / "sdc_table.csv")).exit_code == 0
    table = tmp_path / "sdc_table.csv"
    table.write_text(table.read_text().replace("1", "2", 1))
    assert tre("check", str(tmp_path / "sdc_table.csv")).exit_code == 1


def test_strict_rules_and_bad_rule_files(tre: Tre, tmp_path: Path) -> None:
    strict = REPO / "policies" / "disclosure" / "strict.yaml"
    table = tmp_path / "counts.csv"
    table.write_text("region,female,male\nNorth,12,15\nSouth,19,30\n")
    default = tre("check", str(table), "--kind", "frequency", "-o", "json")
    assert json.loads(default.stdout)[0]["status"] == "pass"
    result = tre("check", str(table), "--kind", "frequency", "--rules", str(strict), "-o", "json")
    assert json.loads(result.stdout)[0]["status"] == "fail"  # counts of 12 to 19 fail a threshold of 20
    bad = tmp_path / "rules.yaml"
    bad.write_text("threshold: 10\ncolour: blue\n")
    refused = tre("check", str(table), "--rules", str(bad))
    assert refused.exit_code == 1
    assert "colour" in refused.stderr
