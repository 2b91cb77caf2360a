"""Disclosure checks on output files, for ``tre check PATH... [--rules FILE] [--kind frequency]`` and for every file
submitted to the airlock (``check_files``: the files of one request, in memory).

Each file gets a ``FileReport``:

* every file: the airlock's size and type checks, and for text the identifier scan (any finding fails the file);
* a CSV/TSV table of counts (declared ``kind="frequency"``, saved by tre.sdc from a count, or an ACRO frequency
  table): threshold and zeros are recomputed from its cells under the caller's rules; a blank cell is a review
  (suppressed or missing: can it be recovered?), a value that is not a count is a review;
* a CSV/TSV with a ``<name>.sdc.json`` sidecar from ``CheckedTable.save``: the sidecar must match the table byte for
  byte (else fail); for a table of statistics its per-cell outcomes are shown as the author's claims (a claimed
  failure fails; cells it suppressed are reviews) and the table is a review (rule ``evidence``), because dominance
  and p% cannot be recomputed from the table; rules weaker than the policy's are a review;
* any other CSV/TSV with numbers: review ("numeric table without evidence: a checker must review");
* a file listed in an ACRO ``results.json`` (an output folder on disk; in the airlock, a file named ``results.json``
  in the same request): ACRO's status (rule ``acro``) and the cells it flagged, as claims; for a folder on disk, the
  SHA-256 ACRO recorded for each file (``checksum``: unkeyed, so it catches accidents, not edits).

A table is read as pandas writes one: the first row holds the column labels; the first column (when there are two
or more) and any further leading columns with text in them hold the row labels; empty and NaN cells are missing.

``FileReport.as_dict()`` (the ``--output json`` shape; statuses are "pass", "review" or "fail")::

    {"path": "out/counts.csv", "status": "fail",
     "evidence": "sidecar" | "frequency" | "acro" | "none" | "not a table",
     "results": [{"rule": "size" | "file-type" | "identifiers" | "sidecar" | "evidence" | "rules" | "threshold"
                          | "zeros" | "suppression" | "count" | "acro" | "checksum" | ...,
                  "status": "pass", "detail": "one line"}],
     "cells": [{"row": "x", "column": "1", "rule": "threshold", "value": 3, "status": "fail", "reason": "..."}],
     "findings": [{"kind": "postcode", "line": 4, "column": 2, "detail": ""}],
     "files": [FileReport, ...]}

``value`` is the cell as the file shows it (None if it cannot be located); findings never hold the matched text;
``files`` lists the files of an ACRO folder (empty otherwise). The status is the worst of the results, cells and
files.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tre.airlock._checks import CheckResult, Status, check_file, content_type
from tre.errors import InputError
from tre.sdc._acro import RESULTS_FILE, AcroOutput, parse_acro_results, read_acro_results
from tre.sdc._check_tables import (
    NO_EVIDENCE,
    TABLE_KINDS,
    Evidence,
    FlaggedCell,
    RuleResult,
    acro_cells,
    check_table,
    worst,
)
from tre.sdc._identifiers import KINDS, PLURALS, Finding, scan_text
from tre.sdc._output import sidecar_path
from tre.sdc._rules import RuleSet

MAX_BYTES = 50 * 1024 * 1024  # the airlock's default limit per file
DELIMITERS = {".csv": ",", ".tsv": "\t"}

__all__ = [
    "MAX_BYTES",
    "NO_EVIDENCE",
    "TABLE_KINDS",
    "FileReport",
    "FlaggedCell",
    "RuleResult",
    "check_files",
    "check_paths",
]


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


def _check_kind(kind: str | None) -> None:
    if kind is not None and kind not in TABLE_KINDS:
        raise InputError(f"Unknown table kind {kind!r}; known: {', '.join(TABLE_KINDS)}.")


def check_paths(paths: list[Path], *, rules: RuleSet, kind: str | None, max_bytes: int = MAX_BYTES) -> list[FileReport]:
    """A report per path: a file, or an ACRO output folder; ``kind="frequency"`` declares tables of counts."""
    _check_kind(kind)
    return [_check_path(Path(path), rules, kind, max_bytes) for path in paths]


def check_files(
    files: Mapping[str, bytes],
    *,
    rules: RuleSet,
    kinds: Mapping[str, str | None] | None = None,
    max_bytes: int = MAX_BYTES,
) -> dict[str, FileReport]:
    """A report per file of a set submitted together (an airlock request), by name.

    A table's evidence is found among the other files: ``<name>.sdc.json`` (a tre.sdc sidecar) and ``results.json``
    (ACRO's results, naming the files of each output); ``kinds`` holds the author's declarations (``"frequency"``).
    """
    kinds = kinds or {}
    for kind in kinds.values():
        _check_kind(kind)
    outputs, acro_problem = _acro_outputs(files)
    reports = {}
    for name, data in files.items():
        evidence = Evidence(kinds.get(name), files.get(sidecar_path(name).name), outputs.get(name))
        extra = [acro_problem] if acro_problem and name == RESULTS_FILE else []
        reports[name] = _check_one(name, name, data, rules, evidence, max_bytes, extra)
    return reports


def _acro_outputs(files: Mapping[str, bytes]) -> tuple[dict[str, AcroOutput], RuleResult | None]:
    """Each file's ACRO output, from a ``results.json`` among ``files``; a malformed one is a review of itself."""
    if RESULTS_FILE not in files:
        return {}, None
    try:
        outputs = parse_acro_results(files[RESULTS_FILE], RESULTS_FILE)
    except InputError as error:
        return {}, RuleResult("acro", Status.REVIEW, f"not read as ACRO results: {error}")
    by_file: dict[str, AcroOutput] = {}
    for output in outputs:
        for name in output.files:
            by_file.setdefault(name, output)
    return by_file, None


def _check_path(path: Path, rules: RuleSet, kind: str | None, max_bytes: int) -> FileReport:
    if path.is_dir():
        if not (path / RESULTS_FILE).is_file():
            raise InputError(f"{path} is a directory but not an ACRO output folder (it has no {RESULTS_FILE}).")
        return _check_acro_folder(path, rules, max_bytes)
    data = _read(path)
    sidecar = sidecar_path(path)
    evidence = Evidence(kind, _read(sidecar) if sidecar.is_file() else None)
    return _check_one(str(path), path.name, data, rules, evidence, max_bytes)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise InputError(f"Cannot read {path}: {error.strerror or error}.") from error


def _file_checks(name: str, data: bytes, max_bytes: int) -> tuple[list[RuleResult], tuple[Finding, ...], str | None]:
    """The airlock's size and type checks, the identifier scan of text, and the text itself (None if binary)."""
    results = [_rule(r) for r in check_file(name, data, max_bytes=max_bytes) if r.rule != "identifiers"]
    if content_type(data) != "text":
        return results, (), None
    text = data.decode("utf-8")
    findings = tuple(scan_text(text, delimiter=DELIMITERS.get(Path(name).suffix.lower())))
    return [*results, _identifier_result(findings)], findings, text


def _check_one(
    label: str,
    name: str,
    data: bytes,
    rules: RuleSet,
    evidence: Evidence,
    max_bytes: int,
    extra: list[RuleResult] | None = None,
) -> FileReport:
    results, findings, text = _file_checks(name, data, max_bytes)
    delimiter = DELIMITERS.get(Path(name).suffix.lower())
    kind = "not a table"
    cells: tuple[FlaggedCell, ...] = ()
    if text is not None and delimiter is not None:
        kind, table_results, cells = check_table(name, data, text, delimiter, rules, evidence)
        results += table_results
    elif evidence.acro is not None:
        kind, cells = "acro", acro_cells(evidence.acro, None)
    results += extra or []
    if evidence.acro is not None:
        results.append(_acro_result(evidence.acro))
    return _report(label, kind, results, cells=cells, findings=findings)


def _report(
    path: str,
    evidence: str,
    results: list[RuleResult],
    *,
    cells: tuple[FlaggedCell, ...] = (),
    findings: tuple[Finding, ...] = (),
    files: tuple[FileReport, ...] = (),
) -> FileReport:
    statuses = [r.status for r in results] + [c.status for c in cells] + [f.status for f in files]
    return FileReport(path, worst(statuses), evidence, tuple(results), cells, findings, files)


def _rule(result: CheckResult) -> RuleResult:
    return RuleResult(result.rule, result.status, result.detail)


def _identifier_result(findings: tuple[Finding, ...]) -> RuleResult:
    if not findings:
        return RuleResult("identifiers", Status.PASS, "no identifiers found")
    counts = Counter(finding.kind for finding in findings)
    listed = ", ".join(f"{n} {(PLURALS if n > 1 else KINDS)[kind]}" for kind, n in sorted(counts.items()))
    return RuleResult("identifiers", Status.FAIL, f"{listed} found: outputs must not hold identifiers")


# --- ACRO output folders --------------------------------------------------------------------------------------------


def _check_acro_folder(folder: Path, rules: RuleSet, max_bytes: int) -> FileReport:
    outputs = read_acro_results(folder)
    results = [_acro_result(output) for output in outputs] + [_checksum(folder, RESULTS_FILE)]
    files = tuple(
        _check_acro_file(folder, name, output, rules, max_bytes) for output in outputs for name in output.files
    )
    return _report(str(folder), "acro", results, files=files)


def _acro_result(output: AcroOutput) -> RuleResult:
    detail = f"{output.name}: {output.summary or 'no summary'}"
    if output.exception:
        detail += f"; exception requested: {output.exception}"
    return RuleResult("acro", Status(output.status), detail)


def _check_acro_file(folder: Path, name: str, output: AcroOutput, rules: RuleSet, max_bytes: int) -> FileReport:
    path = folder / name
    try:
        data = path.read_bytes()
    except OSError:
        missing = RuleResult("file", Status.FAIL, f"listed by {output.name} in {RESULTS_FILE} but missing")
        return _report(str(path), "acro", [missing])
    return _check_one(str(path), name, data, rules, Evidence(acro=output), max_bytes, [_checksum(folder, name)])


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
