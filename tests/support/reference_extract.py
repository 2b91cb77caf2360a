"""A deliberately plain, row-by-row extract: the specification the DuckDB pipeline must agree with."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import Any

from tre.data import ExtractPlan, Transform, pseudonym
from tre.governance.nhs_number import is_valid_nhs_number
from tre.spec import ColumnType, Condition, Operator

OUTWARD = re.compile(r"^([A-Z]{1,2}[0-9][A-Z0-9]?) ?[0-9][A-Z]{2}$")
_PARSE = {
    ColumnType.STRING: str,
    ColumnType.INTEGER: int,
    ColumnType.FLOAT: float,
    ColumnType.DATE: dt.date.fromisoformat,
    ColumnType.BOOLEAN: lambda v: v.lower() == "true",
}


def typed(value: str | None, kind: ColumnType) -> Any:
    return None if value in (None, "") else _PARSE[kind](value)


def _holds(condition: Condition, value: Any, kind: ColumnType) -> bool:
    if condition.op is Operator.IS_NULL:
        return value is None
    if condition.op is Operator.NOT_NULL:
        return value is not None
    if value is None:
        return False  # SQL: any comparison with NULL is not true
    if condition.op in (Operator.IN, Operator.NOT_IN):
        assert isinstance(condition.value, tuple)
        inside = value in [typed(str(v), kind) for v in condition.value]
        return inside if condition.op is Operator.IN else not inside
    other = typed(str(condition.value), kind)
    return {
        Operator.EQ: value == other,
        Operator.NE: value != other,
        Operator.LT: value < other,
        Operator.LE: value <= other,
        Operator.GT: value > other,
        Operator.GE: value >= other,
    }[condition.op]


def _transform(transform: Transform, value: Any, key: bytes, *, nhs: bool) -> Any:
    if value is None:
        return None
    match transform:
        case Transform.PSEUDONYMISE:
            return pseudonym(key, re.sub(r"[ -]", "", str(value)) if nhs else str(value))
        case Transform.YEAR:
            return value.year
        case Transform.MONTH:
            return f"{value.year:04d}-{value.month:02d}"
        case Transform.OUTWARD_CODE:
            match = OUTWARD.match(value.strip().upper())
            return match.group(1) if match else None
        case _:
            return value


def reference_extract(
    rows: Iterable[dict[str, str | None]], plan: ExtractPlan, optouts: set[int], key: bytes
) -> tuple[list[tuple[Any, ...]], dict[str, int]]:
    """The rows the extract must contain (as tuples in output column order) and its counts."""
    kinds = dict(plan.declared)
    counts = dict.fromkeys(("read", "matching", "invalid", "opted", "written"), 0)
    out = []
    for raw in rows:
        counts["read"] += 1
        row = {name: typed(raw[name], kinds[name]) for name in kinds}
        if not all(_holds(c, row[c.column], kinds[c.column]) for c in plan.filter):
            continue
        counts["matching"] += 1
        if plan.nhs_number_column:
            number = re.sub(r"[ -]", "", str(row[plan.nhs_number_column] or ""))
            if not (number.isdigit() and is_valid_nhs_number(number)):
                counts["invalid"] += 1
                continue
            if int(number) in optouts:
                counts["opted"] += 1
                continue
        counts["written"] += 1
        out.append(
            tuple(_transform(c.transform, row[c.name], key, nhs=c.name == plan.nhs_number_column) for c in plan.outputs)
        )
    return out, counts
