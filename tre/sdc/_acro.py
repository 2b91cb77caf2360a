"""Reading the outputs folder ACRO (SACRO project) writes with ``acro.finalise(path, "json")``.

The folder holds ``results.json``, one or more files per output, ``config.json`` (the rules ACRO applied) and
``checksums/<file>.txt`` (the SHA-256 of each file, unkeyed). ``results.json`` (ACRO 1.0.2)::

    {"version": "1.0.2", "tool": {...},
     "results": {"output_0": {"uid": "output_0", "status": "fail", "type": "table", "files": [
                     {"name": "output_0_0.csv", "sdc": {"summary": {...}, "cells": {check: [[row, col], ...]}}}],
                  "outcome": {column label: {row label: "ok" | "MinimumThresholdCheck; ..."}},
                  "summary": "FrequencyTable : ...", "exception": "", "comments": [], "command": "...", ...}}}

Statuses map one to one (pass, fail, review). ACRO also lists its session summaries as outputs with status review
and a name ending DONT_RELEASE: a checker reads them; they are not to be released.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path, PurePosixPath

from tre.errors import InputError

RESULTS_FILE = "results.json"
STATUSES = {"pass": "pass", "fail": "fail", "review": "review"}
CHECK_NAMES = {  # ACRO's check names for the rules tre.sdc also applies
    "MinimumThresholdCheck": "threshold",
    "PresenceOfZeroCheck": "zeros",
    "NKCheck": "dominance",
    "PPercentCheck": "p_percent",
}


@dataclasses.dataclass(frozen=True)
class AcroCell:
    """A table cell ACRO flagged: its row and column labels (as ACRO wrote them) and the checks it failed."""

    row: str
    column: str
    checks: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class AcroOutput:
    """One output of an ACRO session: name, status (pass, fail, review), ACRO's rule summary, its files (names in
    the folder), the cells it flagged, and the exception the researcher asked for ("" if none)."""

    name: str
    status: str
    summary: str
    files: tuple[str, ...]
    cells: tuple[AcroCell, ...] = ()
    exception: str = ""


def read_acro_results(folder: Path) -> list[AcroOutput]:
    """The outputs recorded in ``folder/results.json``, in ACRO's order; a missing or malformed file is an
    InputError."""
    path = Path(folder) / RESULTS_FILE
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(f"Cannot read ACRO results {path}: {error.strerror or error}.") from error
    return parse_acro_results(data, path)


def parse_acro_results(data: bytes, path: Path | str) -> list[AcroOutput]:
    """The outputs recorded in the bytes of a ``results.json`` (``path`` names it in errors); malformed is an
    InputError."""
    try:
        document = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise InputError(f"ACRO results {path} is not valid JSON: {_one_line(str(error))}.") from error
    results = document.get("results") if isinstance(document, dict) else None
    if not isinstance(results, dict):
        raise InputError(f"ACRO results {path} has no 'results' mapping: is it from acro.finalise(..., 'json')?")
    return [_output(path, str(name), record) for name, record in results.items()]


def _output(path: Path | str, name: str, record: object) -> AcroOutput:
    if not isinstance(record, dict):
        raise InputError(f"ACRO results {path}: output {name!r} is not a JSON object.")
    status = record.get("status")
    if status not in STATUSES:
        raise InputError(f"ACRO results {path}: output {name!r} has status {status!r}, not pass, fail or review.")
    summary, exception = record.get("summary", ""), record.get("exception", "")
    if not isinstance(summary, str) or not isinstance(exception, str):
        raise InputError(f"ACRO results {path}: output {name!r} has a summary or exception that is not text.")
    return AcroOutput(
        name=name,
        status=STATUSES[status],
        summary=_one_line(summary),
        files=_files(path, name, record.get("files", [])),
        cells=_cells(path, name, record.get("outcome", {})),
        exception=_one_line(exception),
    )


def _files(path: Path | str, name: str, files: object) -> tuple[str, ...]:
    """The file names of one output; each must name a file in the folder itself (no directories, no ``..``)."""
    if not isinstance(files, list):
        raise InputError(f"ACRO results {path}: output {name!r} has 'files' that is not a list.")
    names = [entry.get("name") if isinstance(entry, dict) else entry for entry in files]
    for file in names:
        if not isinstance(file, str) or PurePosixPath(file).name != file or file in ("", ".", "..") or "\\" in file:
            raise InputError(f"ACRO results {path}: output {name!r} lists {file!r}, not a file name in the folder.")
    return tuple(str(file) for file in names)


def _cells(path: Path | str, name: str, outcome: object) -> tuple[AcroCell, ...]:
    """The cells whose outcome is not "ok", from ACRO's outcome table (column label -> row label -> checks)."""
    if not isinstance(outcome, dict) or not all(isinstance(rows, dict) for rows in outcome.values()):
        raise InputError(f"ACRO results {path}: output {name!r} has an 'outcome' that is not a table.")
    cells = []
    for column, rows in outcome.items():
        for row, text in rows.items():
            checks = tuple(part.strip() for part in str(text).split(";") if part.strip() and part.strip() != "ok")
            if checks:
                cells.append(AcroCell(row=str(row), column=str(column), checks=checks))
    return tuple(cells)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def rule_name(check: str) -> str:
    """Our name for an ACRO check where we apply the same rule (``MinimumThresholdCheck`` -> ``threshold``)."""
    return CHECK_NAMES.get(check, check)


def is_frequency_table(output: AcroOutput) -> bool:
    """Whether ACRO recorded the output as a frequency table (its summary starts ``FrequencyTable``): the author's
    session says so; the airlock then recomputes the counts from the table itself."""
    return output.summary.startswith("FrequencyTable")
