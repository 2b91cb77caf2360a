"""SQL for the extract, built from a plan. Pure: identifiers are validated names, values are parameters."""

from __future__ import annotations

from typing import Any

from tre.data._plan import ExtractPlan, OutputColumn, Transform
from tre.spec import ColumnType, Condition, Operator

SQL_TYPES = {
    ColumnType.STRING: "VARCHAR",
    ColumnType.INTEGER: "BIGINT",
    ColumnType.FLOAT: "DOUBLE",
    ColumnType.DATE: "DATE",
    ColumnType.BOOLEAN: "BOOLEAN",
}

_COMPARISONS = {
    Operator.EQ: "=",
    Operator.NE: "<>",
    Operator.LT: "<",
    Operator.LE: "<=",
    Operator.GT: ">",
    Operator.GE: ">=",
}

_WEIGHTED_SUM = " + ".join(f"n // {10 ** (10 - i)} % 10 * {11 - i}" for i in range(1, 11))
# Modulus 11: a ten-digit number is valid when the sum of its digits weighted 10, 9, ..., 2 and (the check digit) 1 is
# a multiple of 11. Equivalent to the textbook rule: check digit = 11 - (weighted sum of the first nine mod 11), where
# 11 means 0 and 10 means that no valid number starts with those nine digits.
NHS_MACROS = (
    "CREATE OR REPLACE TEMP MACRO nhs_normalised(x) AS replace(replace(x, ' ', ''), '-', '')",
    "CREATE OR REPLACE TEMP MACRO nhs_ten_digits(x) AS "
    "CASE WHEN regexp_full_match(x, '[0-9]{10}') THEN CAST(x AS BIGINT) END",
    f"CREATE OR REPLACE TEMP MACRO nhs_number_ok(n) AS coalesce(({_WEIGHTED_SUM}) % 11 = 0, false)",
)
HMAC_MACRO = (
    "CREATE OR REPLACE TEMP MACRO tre_hmac(v, ipad, opad) AS left(sha256(opad || unhex(sha256(ipad || encode(v)))), 32)"
)
# A UK postcode is its outward code, an optional space, and a three-character inward code (digit, two letters).
_POSTCODE = "[A-Z]{1,2}[0-9][A-Z0-9]? ?[0-9][A-Z]{2}"
OUTWARD_MACROS = (
    "CREATE OR REPLACE TEMP MACRO outward_of(u) AS "
    f"CASE WHEN regexp_full_match(u, '{_POSTCODE}') THEN rtrim(left(u, length(u) - 3)) END",
    "CREATE OR REPLACE TEMP MACRO outward_code(x) AS outward_of(upper(trim(x)))",
)
MACROS = (*NHS_MACROS, HMAC_MACRO, *OUTWARD_MACROS)


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Parameters:
    """Collects values as named parameters, so no value is ever spliced into SQL text."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def add(self, value: Any) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f"${name}"


def condition_sql(condition: Condition, column_type: ColumnType, params: Parameters) -> str:
    column, sql_type = quote(condition.column), SQL_TYPES[column_type]
    if condition.op is Operator.IS_NULL:
        return f"{column} IS NULL"
    if condition.op is Operator.NOT_NULL:
        return f"{column} IS NOT NULL"
    if condition.op in (Operator.IN, Operator.NOT_IN):
        assert isinstance(condition.value, tuple)
        values = ", ".join(f"CAST({params.add(v)} AS {sql_type})" for v in condition.value)
        negation = "NOT " if condition.op is Operator.NOT_IN else ""
        return f"{column} {negation}IN ({values})"
    return f"{column} {_COMPARISONS[condition.op]} CAST({params.add(condition.value)} AS {sql_type})"


def filter_sql(plan: ExtractPlan, params: Parameters) -> str:
    """A boolean expression that is true only for rows matching every condition (NULL counts as no match)."""
    if not plan.filter:
        return "true"
    parts = [condition_sql(c, plan.declared_type(c.column), params) for c in plan.filter]
    return "coalesce(" + " AND ".join(f"({p})" for p in parts) + ", false)"


def cast_source_sql(plan: ExtractPlan, columns: list[str], table: str) -> str:
    """A batch of a Parquet source with its columns cast to the declared types (a CSV source is parsed as declared)."""
    casts = ", ".join(f"CAST({quote(n)} AS {SQL_TYPES[plan.declared_type(n)]}) AS {quote(n)}" for n in columns)
    return f"(SELECT {casts} FROM {table})"


def parquet_scan_sql(plan: ExtractPlan, columns: list[str], params: Parameters) -> str:
    """``batch_sql`` straight over the Parquet file ``$source``, its columns cast to the declared types: the scan
    reads only those columns and applies the filter as it reads."""
    return batch_sql(plan, params, cast_source_sql(plan, columns, "read_parquet($source)"))


def typed_value_sql(column_type: ColumnType) -> str:
    """The value of parameter ``$v`` as the filter compares it: cast to the column's declared type (NULL for an
    infinite date, which Python cannot hold: it would come back as the largest or smallest finite one)."""
    if column_type is ColumnType.DATE:
        return "SELECT CASE WHEN isfinite(d) THEN d END FROM (SELECT CAST($v AS DATE) AS d)"
    return f"SELECT CAST($v AS {SQL_TYPES[column_type]})"


def source_columns_used(plan: ExtractPlan) -> list[str]:
    """The columns the extract reads, in declared order: the output, the filter and the NHS number columns."""
    used = {c.name for c in plan.outputs} | {c.column for c in plan.filter}
    if plan.nhs_number_column:
        used.add(plan.nhs_number_column)
    return [name for name, _ in plan.declared if name in used]


# The working column of the NHS number. '#' cannot occur in a declared column name, so it never clashes with one.
NUMBER_COLUMN = "#nhs"
NUMBER = quote(NUMBER_COLUMN)


def _by_number(column: str, plan: ExtractPlan) -> bool:
    """The NHS number is pseudonymised from its ten digits (normalised, so spacing never splits a patient in two)."""
    return column == plan.nhs_number_column


def _output_expression(column: OutputColumn, plan: ExtractPlan) -> str | None:
    """A column as it leaves the batch query. Generalised already, except the outward code (worked out once per
    distinct postcode, by ``outward_sql``); a direct identifier as the text its pseudonym is keyed on, except the NHS
    number (its ten digits are the number column)."""
    name = quote(column.name)
    match column.transform:
        case Transform.PSEUDONYMISE if _by_number(column.name, plan):
            return None
        case Transform.PSEUDONYMISE:
            return f"CAST({name} AS VARCHAR) AS {name}"
        case Transform.YEAR:
            return f"CAST(year({name}) AS INTEGER) AS {name}"
        case Transform.MONTH:
            return f"strftime({name}, '%Y-%m') AS {name}"
        case _:
            return name


def batch_sql(plan: ExtractPlan, params: Parameters, source: str) -> str:
    """The rows of one batch that match the filter: the NHS number as a number (-1 unless it has ten digits once
    spaces and hyphens are removed) and the output columns, mostly generalised (see ``_output_expression``)."""
    keep = filter_sql(plan, params)
    outputs = [e for e in (_output_expression(c, plan) for c in plan.outputs) if e is not None]
    if plan.nhs_number_column:
        digits = f"nhs_ten_digits(nhs_normalised(CAST({quote(plan.nhs_number_column)} AS VARCHAR)))"
        number = f"coalesce({digits}, -1) AS {NUMBER}"
    else:
        number = f"CAST(-1 AS BIGINT) AS {NUMBER}"
    return f"SELECT {', '.join([NUMBER, *outputs])} FROM (SELECT {number}, * FROM {source} WHERE {keep})"


def outward_sql(table: str) -> str:
    """The outward code of each value in column ``v`` of ``table``, in the same order."""
    return f"SELECT outward_code(v) FROM {table}"


def pseudonym_sql(table: str, *, nhs_number: bool) -> str:
    """The keyed pseudonym of each value in column ``v`` of ``table``, in the same order: an NHS number is keyed on
    its ten digits, anything else on its text."""
    text = "lpad(CAST(v AS VARCHAR), 10, '0')" if nhs_number else "v"
    return f"SELECT tre_hmac({text}, $ipad, $opad) FROM {table}"
