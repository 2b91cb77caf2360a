"""Disclosure checks of one CSV/TSV table, from its own cells and from the evidence submitted with it.

What the checks take on trust, and what they do not (the threat model is in docs/explanation/airlock.md):

* A table of counts is checked from its own cells: every published count is the number of people it shows, so
  threshold and zeros are recomputed here, under the rules of the caller, whatever any sidecar or ACRO session
  claimed. A blank cell in a table of counts (suppressed, or missing) is a review: whether it can be recovered from
  totals or from other outputs needs a person.
* That a table *is* a table of counts is a declaration: by the author (``kind="frequency"``), by a tre.sdc sidecar
  (``aggfunc`` none or ``count``) or by ACRO (a ``FrequencyTable``). It cannot be proved from the numbers, so it is
  shown to checkers with who made it.
* A table of statistics (means, sums, medians...) cannot be checked from the table: dominance, p% and the counts
  behind each cell need the records. A sidecar's or ACRO's per-cell results for it are the author's claims, made in
  the author's workspace with files the author can edit; they are shown, a claimed failure stays a failure, and
  the table is a review (rule ``evidence``) however many cells the claims pass.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections import Counter
from collections.abc import Iterator
from typing import Any

from tre.airlock._checks import Status
from tre.sdc._acro import AcroOutput, is_frequency_table, rule_name
from tre.sdc._output import read_sidecar, sidecar_path
from tre.sdc._rules import RuleSet

TABLE_KINDS = ("frequency",)
NO_EVIDENCE = "numeric table without evidence: a checker must review"
MISSING = frozenset({"", "nan", "na", "n/a", "null", "none"})
COUNT_AGGFUNCS = (None, "count")
_COUNT_RULES = ("threshold", "zeros")
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
class Evidence:
    """What may be used besides the table's own cells: the declared kind, a sidecar's bytes, an ACRO output."""

    kind: str | None = None
    sidecar: bytes | None = None
    acro: AcroOutput | None = None


TableCheck = tuple[str, list[RuleResult], tuple[FlaggedCell, ...]]


@dataclasses.dataclass(frozen=True)
class _Table:
    """A delimited table: column labels, rows of cell texts, and how many leading columns are row labels."""

    header: list[str]
    rows: list[list[str]]
    labels: int

    def cells(self, *, blanks: bool = False) -> Iterator[tuple[Any, str, str]]:
        """(row label, column label, text) of every value cell; missing ones only when ``blanks``."""
        for row in self.rows:
            label: Any = row[0] if self.labels == 1 else row[: self.labels] if self.labels else None
            for j in range(self.labels, len(row)):
                if blanks or row[j].strip().lower() not in MISSING:
                    yield label, self.header[j] if j < len(self.header) else str(j), row[j]

    def lookup(self) -> dict[tuple[tuple[str, ...], str], str]:
        """Cell text by (row label parts, column label)."""
        return {(key(label), column): text for label, column, text in self.cells()}


def check_table(name: str, data: bytes, text: str, delimiter: str, rules: RuleSet, evidence: Evidence) -> TableCheck:
    """The evidence used, the table-level results and the flagged cells of a CSV/TSV."""
    try:
        table = parse_table(text, delimiter)
    except csv.Error as error:
        return "none", [RuleResult("table", Status.REVIEW, f"cannot be read as a table: {error}")], ()
    if evidence.sidecar is not None:
        return _check_sidecar(name, data, table, rules, evidence)
    if evidence.acro is not None:
        return _check_acro(table, rules, evidence.acro)
    return _check_declared(table, rules, evidence.kind)


def _check_declared(table: _Table, rules: RuleSet, kind: str | None) -> TableCheck:
    if kind == "frequency":
        return "frequency", *check_counts(table, rules)
    if any(number(value) is not None for _, _, value in table.cells()):
        return "none", [RuleResult("evidence", Status.REVIEW, NO_EVIDENCE)], ()
    return "none", [], ()


def parse_table(text: str, delimiter: str) -> _Table:
    records = [row for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter) if row]
    header, rows = (records[0], records[1:]) if records else ([], [])
    width = max((len(row) for row in rows), default=0)
    labels = 1 if width >= 2 else 0
    while labels < width - 1 and any(_is_text(row[labels]) for row in rows if labels < len(row)):
        labels += 1
    return _Table(header, rows, labels)


def _is_text(cell: str) -> bool:
    return cell.strip().lower() not in MISSING and number(cell) is None


def number(text: str) -> float | None:
    try:
        return float(text.strip().replace(",", ""))
    except ValueError:
        return None


def value_of(text: str | None) -> Value:
    """A cell's text as the value it shows: a whole number, a number, text, or None when missing."""
    if text is None or text.strip().lower() in MISSING:
        return None
    parsed = number(text)
    if parsed is None or not math.isfinite(parsed):
        return text
    return int(parsed) if parsed.is_integer() and "." not in text and "e" not in text.lower() else parsed


def key(label: object) -> tuple[str, ...]:
    """A label as CSV text parts: a list (several index levels) gives one part per level."""
    return tuple(str(part) for part in label) if isinstance(label, list) else (str(label),)


# --- tables of counts: recomputed from the cells ------------------------------------------------------------------


def check_counts(
    table: _Table, rules: RuleSet, suppressed: frozenset[tuple[tuple[str, ...], tuple[str, ...]]] = frozenset()
) -> tuple[list[RuleResult], tuple[FlaggedCell, ...]]:
    """Threshold and zeros on every cell of a table of counts; blanks and values that are not counts are reviews."""
    cells: list[FlaggedCell] = []
    checked = 0
    for row, column, text in table.cells(blanks=True):
        checked += 1
        flagged = _count_cell(row, column, text, rules, (key(row), key(column)) in suppressed)
        cells += [flagged] if flagged else []
    if not checked:
        return [RuleResult("threshold", Status.REVIEW, "declared a table of counts but has no counts")], ()
    results = [
        _summary("threshold", cells, checked, f"below {rules.threshold}"),
        _summary("zeros", cells, checked, "zero" if rules.zeros_disclosive else "zero (zeros allowed by the rules)"),
    ]
    for rule, what in (("count", "not whole counts"), ("suppression", "blank (suppressed or missing)")):
        if any(cell.rule == rule for cell in cells):
            results.append(_summary(rule, cells, checked, what))
    return results, tuple(cells)


def _count_cell(row: Any, column: str, text: str, rules: RuleSet, suppressed: bool) -> FlaggedCell | None:
    shown = value_of(text)
    if shown is None:
        reason = "suppressed" if suppressed else "blank: suppressed or missing"
        reason += "; a checker confirms it cannot be recovered from totals or other outputs"
        return FlaggedCell(row, column, "suppression", None, Status.REVIEW, reason)
    parsed = number(text)
    if parsed is None or not math.isfinite(parsed) or parsed < 0 or not parsed.is_integer():
        return FlaggedCell(row, column, "count", shown, Status.REVIEW, "not a whole count")
    if 0 < parsed < rules.threshold:
        return FlaggedCell(row, column, "threshold", shown, Status.FAIL, f"fewer than {rules.threshold} contributors")
    if parsed == 0 and rules.zeros_disclosive:
        reason = "no contributors: a zero reveals that nobody is in this group"
        return FlaggedCell(row, column, "zeros", shown, Status.FAIL, reason)
    return None


def _summary(rule: str, cells: list[FlaggedCell], total: int, what: str) -> RuleResult:
    """One rule's table-level result: the worst of its cells, and how many of ``total`` cells it flagged."""
    flagged = [cell.status for cell in cells if cell.rule == rule]
    status = worst(flagged)
    return RuleResult(rule, status, f"{len(flagged)} of {total} cells {what}" if flagged else f"{total} cells pass")


def worst(statuses: list[Status]) -> Status:
    return Status.FAIL if Status.FAIL in statuses else Status.REVIEW if Status.REVIEW in statuses else Status.PASS


# --- tre.sdc sidecars -----------------------------------------------------------------------------------------------


_WEAKER_WHEN_LOWER = ("threshold", "dominance_n", "p_ratio", "min_dof")


def _check_sidecar(name: str, data: bytes, table: _Table, rules: RuleSet, evidence: Evidence) -> TableCheck:
    """A table saved by tre.sdc: counts are recomputed; a table of statistics keeps the sidecar's claims, reviewed."""
    sidecar_name = sidecar_path(name).name
    document = read_sidecar(name, data, evidence.sidecar or b"")
    outcomes = document.get("results") if document else None
    if document is None or not isinstance(outcomes, list) or not all(_is_outcome(item) for item in outcomes):
        problem = (
            f"does not match {sidecar_name}: changed after its checks, or the sidecar is not tre.sdc's"
            if document is None
            else f"{sidecar_name} has malformed per-cell results"
        )
        _, results, cells = _check_declared(table, rules, evidence.kind)
        return "sidecar", [RuleResult("sidecar", Status.FAIL, problem), *results], cells
    hidden = [cell for cell in document.get("suppressed") or [] if isinstance(cell, dict)]
    suppressed = frozenset((key(cell.get("row")), key(cell.get("column"))) for cell in hidden)
    aggfunc = document.get("aggfunc")
    if aggfunc in COUNT_AGGFUNCS:
        results, cells = check_counts(_relabel(table, outcomes), rules, suppressed)
        detail = f"matches {sidecar_name}; a table of counts, so its cells are checked here, not taken from it"
        return "sidecar", [RuleResult("sidecar", Status.PASS, detail), *results], cells
    return "sidecar", *_sidecar_claims(table, document, outcomes, suppressed, rules, sidecar_name)


def _relabel(table: _Table, outcomes: list[dict[str, Any]]) -> _Table:
    """The table with as many row-label columns as the sidecar's rows have levels (a label may look numeric)."""
    levels = {len(item["row"]) for item in outcomes if isinstance(item.get("row"), list)}
    return dataclasses.replace(table, labels=levels.pop()) if len(levels) == 1 else table


def _sidecar_claims(
    table: _Table,
    document: dict[str, Any],
    outcomes: list[dict[str, Any]],
    suppressed: frozenset[tuple[tuple[str, ...], tuple[str, ...]]],
    rules: RuleSet,
    sidecar_name: str,
) -> tuple[list[RuleResult], tuple[FlaggedCell, ...]]:
    shown = _relabel(table, outcomes).lookup()
    cells = []
    for item in outcomes:
        if item["status"] == "pass":
            continue
        status, reason = Status(item["status"]), f"claimed by {sidecar_name}: {item.get('reason', '')}"
        cell_key = (key(item.get("row")), key(item.get("column")))
        if status == Status.FAIL and cell_key in suppressed:
            status, reason = Status.REVIEW, f"{reason} (suppressed: a checker confirms the suppression is enough)"
        value = value_of(shown.get((cell_key[0], cell_key[1][0])) if len(cell_key[1]) == 1 else None)
        cells.append(FlaggedCell(item.get("row"), item.get("column"), item["rule"], value, status, reason))
    per_rule = Counter(str(item["rule"]) for item in outcomes)
    aggfunc = document.get("aggfunc")
    results = [
        RuleResult("sidecar", Status.PASS, f"matches {sidecar_name}"),
        RuleResult("evidence", Status.REVIEW, _claims_detail(f"a table of {aggfunc} values", f"{sidecar_name}'s")),
        _rules_result(document, rules),
    ]
    results += [_summary(rule, cells, per_rule[rule], "flagged (claimed)") for rule in per_rule]
    return results, tuple(cells)


def _claims_detail(what: str, whose: str) -> str:
    return (
        f"{what}: {whose} per-cell results were made in the author's workspace and cannot be recomputed from the"
        " table (dominance, p% and the counts behind each cell need the records): a checker must review"
    )


def _is_outcome(item: object) -> bool:
    return isinstance(item, dict) and isinstance(item.get("rule"), str) and item.get("status") in set(Status)


def _rules_result(document: dict[str, Any], policy: RuleSet) -> RuleResult:
    """Review claims made under rules weaker than the policy's (stricter ones are fine)."""
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


# --- ACRO outputs -------------------------------------------------------------------------------------------------


def _check_acro(table: _Table, rules: RuleSet, output: AcroOutput) -> TableCheck:
    """An ACRO output: a frequency table is recomputed (ACRO's other flags kept); anything else is ACRO's claim."""
    claimed = acro_cells(output, table)
    if is_frequency_table(output):
        results, cells = check_counts(table, rules)
        others = tuple(cell for cell in claimed if cell.rule not in _COUNT_RULES)
        return "acro", results, cells + others
    detail = _claims_detail(f"ACRO's {output.name}, not a frequency table", "ACRO's")
    return "acro", [RuleResult("evidence", Status.REVIEW, detail)], claimed


def acro_cells(output: AcroOutput, table: _Table | None) -> tuple[FlaggedCell, ...]:
    """The cells ACRO flagged, as claims: failures stay failures, anything else a review."""
    shown = table.lookup() if table is not None else {}
    status = Status.REVIEW if output.status == "pass" else Status(output.status)
    flagged = []
    for cell in output.cells:
        value = value_of(shown.get(((cell.row,), cell.column)))
        flagged += [
            FlaggedCell(cell.row, cell.column, rule_name(c), value, status, f"claimed by ACRO: {c}")
            for c in cell.checks
        ]
    return tuple(flagged)
