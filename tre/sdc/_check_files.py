"""Disclosure checks on output files on disk, for ``tre check PATH... [--rules FILE] [--kind frequency]``.

Each path gets a ``FileReport``:

* every file: the airlock's size and type checks, and for text the identifier scan (any finding fails the file);
* a CSV/TSV with a ``<name>.sdc.json`` sidecar from ``CheckedTable.save``: the sidecar must match the table byte for
  byte (else fail), its per-cell outcomes become the file's, cells it suppressed fail no more (review, as in tre.sdc),
  and rules weaker than the policy's make it a review;
* a CSV/TSV without a sidecar declared ``kind="frequency"``: every numeric cell is a count; 0 < count < threshold
  fails, a zero fails when the rules hold zeros disclosive, a value that is not a count is a review;
* any other CSV/TSV with numbers: review ("numeric table without evidence: a checker must review");
* an ACRO output folder (a directory holding ``results.json``): ACRO's status per output, its flagged cells, its
  checksums, and the file checks on every file it lists.

A table is read as pandas writes one: the first row holds the column labels; the first column (when there are two
or more) and any further leading columns with text in them hold the row labels; empty and NaN cells are missing.

``FileReport.as_dict()`` (the ``--output json`` shape; statuses are "pass", "review" or "fail")::

    {"path": "out/counts.csv", "status": "fail",
     "evidence": "sidecar" | "frequency" | "acro" | "none" | "not a table",
     "results": [{"rule": "size" | "file-type" | "identifiers" | "sidecar" | "rules" | "threshold" | "zeros" | ...,
                  "status": "pass", "detail": "one line"}],
     "cells": [{"row": "x", "column": "1", "rule": "threshold", "value": 3, "status": "fail", "reason": "..."}],
     "findings": [{"kind": "postcode", "line": 4, "column": 2, "detail": ""}],
     "files": [FileReport, ...]}

``value`` is the cell as the file shows it (None if it cannot be located); findings never hold the matched text;
``files`` lists the files of an ACRO folder (empty otherwise). The status is the worst of the results, cells and
files.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tre.airlock._checks import CheckResult, Status, check_file, content_type
from tre.errors import InputError
from tre.sdc._acro import RESULTS_FILE, AcroOutput, read_acro_results, rule_name
from tre.sdc._identifiers import KINDS, PLURALS, Finding, scan_text
from tre.sdc._output import sidecar_path, verify_saved
from tre.sdc._rules import RuleSet

MAX_BYTES = 50 * 1024 * 1024  # the airlock's default limit per file
DELIMITERS = {".csv": ",", ".tsv": "\t"}
TABLE_KINDS = ("frequency",)
NO_EVIDENCE = "numeric table without evidence: a checker must review"
MISSING = frozenset({"", "nan", "na", "n/a", "null", "none"})
Value = int | float | str | None


@dataclasses.dataclass(frozen=True)
class RuleResult:
    """One check's outcome for a file."""

    rule: str
    status: Status
    detail: str


@dataclasses.dataclass(frozen=True)
class FlaggedCell:
    """A table cell that did not pass a rule; ``value`` is the cell as the file shows it."""

    row: Any
    column: Any
    rule: str
    value: Value
    status: Status
    reason: str


@dataclasses.dataclass(frozen=True)
class FileReport:
    """The disclosure checks of one path (see the module docstring for the JSON shape)."""

    path: str
    status: Status
    evidence: str
    results: tuple[RuleResult, ...]
    cells: tuple[FlaggedCell, ...] = ()
    findings: tuple[Finding, ...] = ()
    files: tuple[FileReport, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON values."""
        return {
            "path": self.path,
            "status": str(self.status),
            "evidence": self.evidence,
            "results": [{"rule": r.rule, "status": str(r.status), "detail": r.detail} for r in self.results],
            "cells": [{**dataclasses.asdict(cell), "status": str(cell.status)} for cell in self.cells],
            "findings": [finding.as_dict() for finding in self.findings],
            "files": [report.as_dict() for report in self.files],
        }


@dataclasses.dataclass(frozen=True)
class _Table:
    """A delimited table: column labels, rows of cell texts, and how many leading columns are row labels."""

    header: list[str]
    rows: list[list[str]]
    labels: int

    def cells(self) -> Iterator[tuple[Any, str, str]]:
        """(row label, column label, text) of every value cell that is not missing."""
        for row in self.rows:
            label: Any = row[0] if self.labels == 1 else row[: self.labels] if self.labels else None
            for j in range(self.labels, len(row)):
                if row[j].strip().lower() not in MISSING:
                    yield label, self.header[j] if j < len(self.header) else str(j), row[j]

    def lookup(self) -> dict[tuple[tuple[str, ...], str], str]:
        """Cell text by (row label parts, column label)."""
        return {(_key(label), column): text for label, column, text in self.cells()}


def check_paths(paths: list[Path], *, rules: RuleSet, kind: str | None, max_bytes: int = MAX_BYTES) -> list[FileReport]:
    """A report per path: a file, or an ACRO output folder; ``kind="frequency"`` declares tables of counts."""
    if kind is not None and kind not in TABLE_KINDS:
        raise InputError(f"Unknown table kind {kind!r}; known: {', '.join(TABLE_KINDS)}.")
    return [_check_path(Path(path), rules, kind, max_bytes) for path in paths]


def _check_path(path: Path, rules: RuleSet, kind: str | None, max_bytes: int) -> FileReport:
    if path.is_dir():
        if not (path / RESULTS_FILE).is_file():
            raise InputError(f"{path} is a directory but not an ACRO output folder (it has no {RESULTS_FILE}).")
        return _check_acro(path, max_bytes)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(f"Cannot read {path}: {error.strerror or error}.") from error
    return _check_file(path, data, rules, kind, max_bytes)


def _file_checks(path: Path, data: bytes, max_bytes: int) -> tuple[list[RuleResult], tuple[Finding, ...], str | None]:
    """The airlock's size and type checks, the identifier scan of text, and the text itself (None if binary)."""
    results = [_rule(r) for r in check_file(path.name, data, max_bytes=max_bytes) if r.rule != "identifiers"]
    if content_type(data) != "text":
        return results, (), None
    text = data.decode("utf-8")
    findings = tuple(scan_text(text, delimiter=DELIMITERS.get(path.suffix.lower())))
    return [*results, _identifier_result(findings)], findings, text


def _check_file(path: Path, data: bytes, rules: RuleSet, kind: str | None, max_bytes: int) -> FileReport:
    results, findings, text = _file_checks(path, data, max_bytes)
    delimiter = DELIMITERS.get(path.suffix.lower())
    evidence = "not a table"
    cells: tuple[FlaggedCell, ...] = ()
    if text is not None and delimiter is not None:
        evidence, table_results, cells = _check_table(path, text, delimiter, rules, kind)
        results += table_results
    return _report(path, evidence, results, cells=cells, findings=findings)


def _report(
    path: Path,
    evidence: str,
    results: list[RuleResult],
    *,
    cells: tuple[FlaggedCell, ...] = (),
    findings: tuple[Finding, ...] = (),
    files: tuple[FileReport, ...] = (),
) -> FileReport:
    statuses = [r.status for r in results] + [c.status for c in cells] + [f.status for f in files]
    return FileReport(str(path), _worst(statuses), evidence, tuple(results), cells, findings, files)


def _worst(statuses: list[Status]) -> Status:
    return Status.FAIL if Status.FAIL in statuses else Status.REVIEW if Status.REVIEW in statuses else Status.PASS


def _rule(result: CheckResult) -> RuleResult:
    return RuleResult(result.rule, result.status, result.detail)


def _identifier_result(findings: tuple[Finding, ...]) -> RuleResult:
    if not findings:
        return RuleResult("identifiers", Status.PASS, "no identifiers found")
    counts = Counter(finding.kind for finding in findings)
    listed = ", ".join(f"{n} {(PLURALS if n > 1 else KINDS)[kind]}" for kind, n in sorted(counts.items()))
    return RuleResult("identifiers", Status.FAIL, f"{listed} found: outputs must not hold identifiers")


# --- tables ---------------------------------------------------------------------------------------------------------


TableCheck = tuple[str, list[RuleResult], tuple[FlaggedCell, ...]]


def _check_table(path: Path, text: str, delimiter: str, rules: RuleSet, kind: str | None) -> TableCheck:
    """The evidence used, the table-level results and the flagged cells of a CSV/TSV."""
    try:
        table = _parse_table(text, delimiter)
    except csv.Error as error:
        return "none", [RuleResult("table", Status.REVIEW, f"cannot be read as a table: {error}")], ()
    if sidecar_path(path).exists():
        return _check_sidecar(path, table, rules)
    if kind == "frequency":
        return _check_counts(table, rules)
    if any(_number(value) is not None for _, _, value in table.cells()):
        return "none", [RuleResult("evidence", Status.REVIEW, NO_EVIDENCE)], ()
    return "none", [], ()


def _parse_table(text: str, delimiter: str) -> _Table:
    records = [row for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter) if row]
    header, rows = (records[0], records[1:]) if records else ([], [])
    width = max((len(row) for row in rows), default=0)
    labels = 1 if width >= 2 else 0
    while labels < width - 1 and any(_is_text(row[labels]) for row in rows if labels < len(row)):
        labels += 1
    return _Table(header, rows, labels)


def _is_text(cell: str) -> bool:
    return cell.strip().lower() not in MISSING and _number(cell) is None


def _number(text: str) -> float | None:
    try:
        return float(text.strip().replace(",", ""))
    except ValueError:
        return None


def _value(text: str | None) -> Value:
    """A cell's text as the value it shows: a whole number, a number, text, or None when missing."""
    if text is None or text.strip().lower() in MISSING:
        return None
    number = _number(text)
    if number is None or not math.isfinite(number):
        return text
    return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number


def _check_counts(table: _Table, rules: RuleSet) -> TableCheck:
    """Threshold and zeros on every value cell of a declared frequency table."""
    cells: list[FlaggedCell] = []
    checked = 0
    for row, column, text in table.cells():
        checked += 1
        number = _number(text)
        if number is None or not math.isfinite(number) or number < 0 or not number.is_integer():
            cells.append(FlaggedCell(row, column, "count", _value(text), Status.REVIEW, "not a whole count"))
        elif 0 < number < rules.threshold:
            reason = f"fewer than {rules.threshold} contributors"
            cells.append(FlaggedCell(row, column, "threshold", _value(text), Status.FAIL, reason))
        elif number == 0 and rules.zeros_disclosive:
            reason = "no contributors: a zero reveals that nobody is in this group"
            cells.append(FlaggedCell(row, column, "zeros", _value(text), Status.FAIL, reason))
    if not checked:
        return "frequency", [RuleResult("threshold", Status.REVIEW, "declared a frequency table but has no counts")], ()
    results = [
        _summary("threshold", cells, checked, f"below {rules.threshold}"),
        _summary("zeros", cells, checked, "zero" if rules.zeros_disclosive else "zero (zeros allowed by the rules)"),
    ]
    if any(cell.rule == "count" for cell in cells):
        results.append(_summary("count", cells, checked, "not whole counts"))
    return "frequency", results, tuple(cells)


def _summary(rule: str, cells: list[FlaggedCell], total: int, what: str) -> RuleResult:
    """One rule's table-level result: the worst of its cells, and how many of ``total`` cells it flagged."""
    flagged = [cell.status for cell in cells if cell.rule == rule]
    status = _worst(flagged)
    return RuleResult(rule, status, f"{len(flagged)} of {total} cells {what}" if flagged else f"{total} cells pass")


# --- tre.sdc sidecars -----------------------------------------------------------------------------------------------


_WEAKER_WHEN_LOWER = ("threshold", "dominance_n", "p_ratio", "min_dof")


def _check_sidecar(path: Path, table: _Table, rules: RuleSet) -> TableCheck:
    """Use the per-cell outcomes of a verified sidecar; a table changed after its checks fails."""
    sidecar = sidecar_path(path)
    if not verify_saved(path):
        detail = f"does not match {sidecar.name}: changed after its checks, or the sidecar is not tre.sdc's"
        return "sidecar", [RuleResult("sidecar", Status.FAIL, detail)], ()
    document = json.loads(sidecar.read_text(encoding="utf-8"))
    outcomes = document.get("results")
    if not isinstance(outcomes, list) or not all(_is_outcome(item) for item in outcomes):
        return "sidecar", [RuleResult("sidecar", Status.FAIL, f"{sidecar.name} has malformed per-cell results")], ()
    hidden = [cell for cell in document.get("suppressed") or [] if isinstance(cell, dict)]
    suppressed = {(_key(cell.get("row")), _key(cell.get("column"))) for cell in hidden}
    levels = {len(item["row"]) for item in outcomes if isinstance(item.get("row"), list)}
    shown = dataclasses.replace(table, labels=levels.pop()).lookup() if len(levels) == 1 else table.lookup()
    cells = []
    for item in outcomes:
        if item["status"] == "pass":
            continue
        status, reason = Status(item["status"]), str(item.get("reason", ""))
        cell_key = (_key(item.get("row")), _key(item.get("column")))
        if status == Status.FAIL and cell_key in suppressed:
            status, reason = Status.REVIEW, f"{reason} (suppressed: a checker confirms the suppression is enough)"
        value = _value(shown.get((cell_key[0], cell_key[1][0])) if len(cell_key[1]) == 1 else None)
        cells.append(FlaggedCell(item.get("row"), item.get("column"), item["rule"], value, status, reason))
    rule_names = list(dict.fromkeys(str(item["rule"]) for item in outcomes))
    per_rule = Counter(str(item["rule"]) for item in outcomes)
    results = [RuleResult("sidecar", Status.PASS, f"matches {sidecar.name}"), _rules_result(document, rules)]
    results += [_summary(rule, cells, per_rule[rule], "flagged") for rule in rule_names]
    return "sidecar", results, tuple(cells)


def _is_outcome(item: object) -> bool:
    return isinstance(item, dict) and isinstance(item.get("rule"), str) and item.get("status") in set(Status)


def _key(label: object) -> tuple[str, ...]:
    """A label as CSV text parts: a list (several index levels) gives one part per level."""
    return tuple(str(part) for part in label) if isinstance(label, list) else (str(label),)


def _rules_result(document: dict[str, Any], policy: RuleSet) -> RuleResult:
    """Review a table checked under rules weaker than the policy's (stricter ones are fine)."""
    used = document.get("rules")
    if not isinstance(used, dict):
        used = {}
    weaker = []
    for field in (*_WEAKER_WHEN_LOWER, "dominance_k"):
        value, wanted = used.get(field), getattr(policy, field)
        bad = not isinstance(value, int | float) or (value > wanted if field == "dominance_k" else value < wanted)
        if bad:
            weaker.append(f"{field} {value} (policy {wanted})")
    flags = ("zeros_disclosive", "check_missing")
    weaker += [f"{flag} off" for flag in flags if getattr(policy, flag) and used.get(flag) is not True]
    if weaker:
        return RuleResult("rules", Status.REVIEW, f"checked under weaker rules than {policy.name}: {', '.join(weaker)}")
    return RuleResult("rules", Status.PASS, f"checked under rules at least as strict as {policy.name}")


# --- ACRO output folders --------------------------------------------------------------------------------------------


def _check_acro(folder: Path, max_bytes: int) -> FileReport:
    outputs = read_acro_results(folder)
    results = [_acro_result(output) for output in outputs] + [_checksum(folder, RESULTS_FILE)]
    files = tuple(_check_acro_file(folder, name, output, max_bytes) for output in outputs for name in output.files)
    return _report(folder, "acro", results, files=files)


def _acro_result(output: AcroOutput) -> RuleResult:
    detail = f"{output.name}: {output.summary or 'no summary'}"
    if output.exception:
        detail += f"; exception requested: {output.exception}"
    return RuleResult("acro", Status(output.status), detail)


def _check_acro_file(folder: Path, name: str, output: AcroOutput, max_bytes: int) -> FileReport:
    path = folder / name
    try:
        data = path.read_bytes()
    except OSError:
        missing = RuleResult("file", Status.FAIL, f"listed by {output.name} in {RESULTS_FILE} but missing")
        return _report(path, "acro", [missing])
    results, findings, text = _file_checks(path, data, max_bytes)
    results += [_checksum(folder, name), _acro_result(output)]
    cells: tuple[FlaggedCell, ...] = ()
    delimiter = DELIMITERS.get(path.suffix.lower())
    if text is not None and delimiter is not None:
        cells = _acro_cells(output, text, delimiter)
    return _report(path, "acro", results, cells=cells, findings=findings)


def _acro_cells(output: AcroOutput, text: str, delimiter: str) -> tuple[FlaggedCell, ...]:
    try:
        shown = _parse_table(text, delimiter).lookup()
    except csv.Error:
        shown = {}
    status = Status.REVIEW if output.status == "pass" else Status(output.status)
    flagged = []
    for cell in output.cells:
        value = _value(shown.get(((cell.row,), cell.column)))
        flagged += [FlaggedCell(cell.row, cell.column, rule_name(c), value, status, f"ACRO {c}") for c in cell.checks]
    return tuple(flagged)


def _checksum(folder: Path, name: str) -> RuleResult:
    """Compare a file with the SHA-256 ACRO wrote when it finalised the folder (unkeyed: catches accidents)."""
    try:
        recorded = (folder / "checksums" / f"{name}.txt").read_text(encoding="utf-8").strip()
        actual = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    except OSError:
        return RuleResult("checksum", Status.REVIEW, f"{name}: no ACRO checksum to compare with")
    except UnicodeDecodeError:
        return RuleResult("checksum", Status.FAIL, f"{name}: the ACRO checksum file is not text")
    if recorded != actual:
        return RuleResult("checksum", Status.FAIL, f"{name}: changed after ACRO finalised the folder")
    return RuleResult("checksum", Status.PASS, f"{name}: matches ACRO's checksum")
