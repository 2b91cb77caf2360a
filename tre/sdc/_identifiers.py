"""Identifiers in text outputs: NHS numbers, postcodes, dates of birth, e-mail addresses and UK phone numbers.

``scan_text`` reports what kind of identifier it found and where (line number, and column index when the text is
CSV or TSV), never the matched value: the findings are shown to people who may not see the data.

What is flagged, and what is deliberately not:

* NHS numbers: ten digits (optionally grouped 3-3-4) with a valid Modulus 11 check digit, but not the ten digits
  after a decimal point (a mean printed in full, "0.0123456789", passes the check digit one time in eleven).
* Postcodes: full UK postcodes ("LS1 4AP", "ls14ap") with a valid outward and inward code, in one case throughout.
  Outward codes alone ("LS1") are the published geography of many outputs and are not flagged; nor is an ICD-10
  code ("E11.9") or a quarter and an ordinal ("Q1 2nd").
* E-mail addresses.
* UK phone numbers: +44 or 0 followed by 9 or 10 digits, in groups of two or more digits separated by single
  spaces. A row of space-separated single digits ("0 1 2 3 4 5 6 7 8 9") or a decimal ("0.0123456789") is not one.
* Dates of birth: a real calendar date written yyyy-mm-dd or dd/mm/yyyy with a year from 1900 to last year, found

  - in a CSV/TSV column whose header mentions birth or DOB ("date_of_birth", "dob", "BirthDate");
  - in a CSV/TSV column where more than half of the non-empty values are full dates: a column of exact dates is
    record-level data about people (births, admissions, deaths), each date a quasi-identifier. The exception is a
    time axis, three or more dates that strictly increase or decrease in even steps (a constant number of days, or
    the same day of the month, or month-ends, a constant number of months apart): counts per week or per month
    describe periods, not people. A time axis with gaps is flagged; the researcher can fill or drop the gaps;
  - in text without columns, on a line that mentions birth, born or DOB.

  Other dates (when an extract was taken, the start of a study period) are not flagged, and a year alone never is.

Counts, decimals, years, percentages and codes are not identifiers; the tests pin each of these.
"""

from __future__ import annotations

import bisect
import csv
import dataclasses
import datetime as dt
import io
import itertools
import re
from collections import Counter
from collections.abc import Iterator

from tre.governance.nhs_number import find_nhs_numbers

KINDS = {
    "nhs_number": "NHS number",
    "postcode": "postcode",
    "date_of_birth": "date of birth",
    "email": "e-mail address",
    "phone": "phone number",
}
PLURALS = {
    "nhs_number": "NHS numbers",
    "postcode": "postcodes",
    "date_of_birth": "dates of birth",
    "email": "e-mail addresses",
    "phone": "phone numbers",
}

_OUTWARD = r"(?:[A-PR-UWYZ][0-9][0-9A-HJKPSTUW]?|[A-PR-UWYZ][A-HK-Y][0-9][0-9ABEHMNPRV-Y]?)"
_POSTCODE = re.compile(rf"(?<![A-Za-z0-9]){_OUTWARD} ?[0-9][ABD-HJLNP-UW-Z]{{2}}(?![A-Za-z0-9])", re.IGNORECASE)
_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
_PHONE = re.compile(r"(?<![\w+.,/-])(?:\+44 ?(?:\(0\) ?)?|0)(\d{2,10}(?: \d{2,10}){0,4})(?![\w]|[.,]\d)")
_ISO_DATE = r"(?P<y1>\d{4})-(?P<m1>\d{2})-(?P<d1>\d{2})"
_UK_DATE = r"(?P<d2>\d{1,2})/(?P<m2>\d{1,2})/(?P<y2>\d{4})"
_DATE = re.compile(rf"(?<![\d/.-])(?:{_ISO_DATE}|{_UK_DATE})(?![\d/]|-\d)")
_TIME = r"(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
_FULL_DATE = re.compile(rf"\s*(?:{_ISO_DATE}|{_UK_DATE}){_TIME}\s*")
_BIRTH_HEADER = re.compile(r"(?i:birth)|(?<![a-z])(?i:dob)(?![a-z])|(?<=[a-z])(?:Dob|DOB)(?![a-z])")
_BIRTH_LINE = re.compile(rf"{_BIRTH_HEADER.pattern}|(?i:\bborn\b)")
_NEWLINE = re.compile(r"\r\n|\r|\n")
_DECIMAL = re.compile(r"\d*\.\d+(?:[eE][+-]?\d+)?")  # masked before the NHS number search: 0.0123456789 is not one
# One pass over a whole text finds the lines worth the exact search: a superset of ``_patterns`` within a line
_HINT = re.compile(rf"(?<!\d)\d{{3}}[ -]?\d{{3}}[ -]?\d{{4}}(?!\d)|(?i:{_POSTCODE.pattern})|{_PHONE.pattern}|@")
_BIRTH_HINT = re.compile("birth|dob|born")  # searched in lower-cased text, then ``_BIRTH_LINE`` decides
_CELL_SEPARATOR = "\x00"  # joins a record's cells for that pass: no pattern crosses it, and it is no \w, digit or dot
_BIRTH_COLUMN = "in a column headed as a date of birth"
_DATE_COLUMN = "in a column of full dates: record-level dates identify people"


@dataclasses.dataclass(frozen=True)
class Finding:
    """An identifier found in text: its kind (a key of ``KINDS``), 1-based line, 0-based column index in CSV/TSV
    text (None otherwise) and, for dates, why the date counts as one of birth. Never the value itself."""

    kind: str
    line: int
    column: int | None = None
    detail: str = ""

    def describe(self) -> str:
        """One line for a person: what and where, never the value."""
        where = f"line {self.line}" + ("" if self.column is None else f", column index {self.column}")
        return f"{KINDS.get(self.kind, self.kind)} on {where}" + (f" ({self.detail})" if self.detail else "")

    def as_dict(self) -> dict[str, object]:
        """The finding as plain JSON values."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class _Cell:
    line: int
    column: int
    text: str


def scan_text(text: str, *, delimiter: str | None = None) -> list[Finding]:
    """Every identifier in ``text``, ordered by line and column; pass ``delimiter`` ("," or tab) for CSV/TSV text."""
    if delimiter is None:
        findings = _scan_lines(text)
    else:
        try:
            records, starts = _records(text, delimiter)
        except csv.Error:  # not parseable as a table (a NUL byte, a huge field): scan it as plain text
            findings = _scan_lines(text)
        else:
            findings = _scan_records(records, starts) + _date_findings(records, starts)
    return sorted(findings, key=lambda f: (f.line, -1 if f.column is None else f.column, f.kind))


def _patterns(text: str) -> Iterator[str]:
    """The kind of every NHS number, postcode, e-mail address and phone number in one line of text."""
    yield from ("nhs_number" for _ in find_nhs_numbers(_DECIMAL.sub(lambda m: "#" * len(m.group(0)), text)))
    yield from ("postcode" for m in _POSTCODE.finditer(text) if _one_case(m.group(0)))
    yield from ("email" for _ in _EMAIL.finditer(text))
    yield from ("phone" for m in _PHONE.finditer(text) if 9 <= len(m.group(1).replace(" ", "")) <= 10)


def _one_case(postcode: str) -> bool:
    """Whether a postcode's letters are all capitals or all lower case ("Q1 2nd" mixes them: not a postcode)."""
    return postcode.upper() == postcode or postcode.lower() == postcode


def _hits(segments: list[str], pattern: re.Pattern[str]) -> list[int]:
    """The indices of the segments (lines or records) where ``pattern`` matches, found in one pass over them all."""
    starts = list(itertools.accumulate((len(segment) + 1 for segment in segments), initial=0))
    joined = "\n".join(segments)
    return sorted({bisect.bisect_right(starts, match.start()) - 1 for match in pattern.finditer(joined)})


def _scan_lines(text: str) -> list[Finding]:
    lines = text.splitlines()
    findings: list[Finding] = []
    for index in _hits(lines, _HINT):
        findings += [Finding(kind, index + 1) for kind in _patterns(lines[index])]
    for index in _hits([line.lower() for line in lines], _BIRTH_HINT):
        if not _BIRTH_LINE.search(lines[index]):
            continue
        detail = "on a line that mentions birth"
        findings += [Finding("date_of_birth", index + 1, None, detail) for _ in _birth_dates(lines[index])]
    return findings


def _records(text: str, delimiter: str) -> tuple[list[list[str]], list[int]]:
    """The records of a delimited text and the line each starts on (quoted fields may span lines)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    records, starts = [], []
    start = 1
    for record in reader:
        records.append(record)
        starts.append(start)
        start = reader.line_num + 1
    return records, starts


def _cell(record: list[str], start: int, column: int) -> _Cell:
    """A cell with the line it starts on (after any line breaks in the cells before it)."""
    return _Cell(start + sum(len(_NEWLINE.findall(value)) for value in record[:column]), column, record[column])


def _cell_lines(cell: _Cell) -> Iterator[tuple[int, str]]:
    for offset, part in enumerate(_NEWLINE.split(cell.text)):
        yield cell.line + offset, part


def _scan_records(records: list[list[str]], starts: list[int]) -> list[Finding]:
    """Identifiers cell by cell, in the records where the one-pass search over all of them found something."""
    findings: list[Finding] = []
    for index in _hits([_CELL_SEPARATOR.join(record) for record in records], _HINT):
        for column in range(len(records[index])):
            cell = _cell(records[index], starts[index], column)
            findings += [Finding(kind, line, column) for line, part in _cell_lines(cell) for kind in _patterns(part)]
    return findings


def _date_findings(records: list[list[str]], starts: list[int]) -> list[Finding]:
    """Dates of birth in columns headed as such, and in columns mostly of full dates that are not a time axis."""
    if not records:
        return []
    birth_columns = {column for column, label in enumerate(records[0]) if _BIRTH_HEADER.search(label)}
    filled: Counter[int] = Counter()  # non-empty cells per column
    in_birth_columns: list[tuple[int, int]] = []
    dated: dict[int, list[tuple[int, dt.date]]] = {}
    for index in range(1, len(records)):
        for column, value in enumerate(records[index]):
            if not value or value.isspace():
                continue
            filled[column] += 1
            if column in birth_columns:
                in_birth_columns.append((index, column))
            elif ("-" in value or "/" in value) and (date := _full_date(value)) is not None:
                dated.setdefault(column, []).append((index, date))
    findings: list[Finding] = []
    for index, column in in_birth_columns:
        for line, part in _cell_lines(_cell(records[index], starts[index], column)):
            findings += [Finding("date_of_birth", line, column, _BIRTH_COLUMN) for _ in _birth_dates(part)]
    for column, cells in dated.items():
        if 2 * len(cells) > filled[column] and not _time_axis([date for _, date in cells]):
            findings += [
                Finding("date_of_birth", _cell(records[index], starts[index], column).line, column, _DATE_COLUMN)
                for index, date in cells
                if _birth_year(date)
            ]
    return findings


def _date(match: re.Match[str]) -> dt.date | None:
    """The calendar date a date pattern matched, or None when there is no such day (31/02/1990)."""
    parts = match.groupdict()
    year, month, day = (
        (parts["y1"], parts["m1"], parts["d1"]) if parts["y1"] else (parts["y2"], parts["m2"], parts["d2"])
    )
    try:
        return dt.date(int(year), int(month), int(day))
    except ValueError:
        return None


def _birth_year(date: dt.date) -> bool:
    return 1900 <= date.year < dt.date.today().year


def _birth_dates(text: str) -> list[dt.date]:
    """The dates in ``text`` that could be dates of birth."""
    dates = (_date(match) for match in _DATE.finditer(text))
    return [date for date in dates if date is not None and _birth_year(date)]


def _full_date(text: str) -> dt.date | None:
    """The date when the whole of ``text`` is one (with an optional time of day), else None."""
    match = _FULL_DATE.fullmatch(text)
    return _date(match) if match else None


def _time_axis(dates: list[dt.date]) -> bool:
    """Three or more dates, strictly monotonic, evenly spaced in days or in months (same day, or month-ends)."""
    if len(dates) < 3:
        return False
    days = [b.toordinal() - a.toordinal() for a, b in itertools.pairwise(dates)]
    if days[0] != 0 and len(set(days)) == 1:
        return True
    months = [(b.year - a.year) * 12 + b.month - a.month for a, b in itertools.pairwise(dates)]
    aligned = len({d.day for d in dates}) == 1 or all(_month_end(d) for d in dates)
    return aligned and months[0] != 0 and len(set(months)) == 1


def _month_end(date: dt.date) -> bool:
    return (date + dt.timedelta(days=1)).day == 1
