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


def parquet_source_sql(plan: ExtractPlan, path_param: str) -> str:
    """A Parquet source with its columns cast to the declared types."""
    casts = ", ".join(f"CAST({quote(n)} AS {SQL_TYPES[k]}) AS {quote(n)}" for n, k in plan.declared)
    return f"(SELECT {casts} FROM read_parquet({path_param}))"


def source_columns_used(plan: ExtractPlan) -> list[str]:
    """The columns the extract reads, in declared order: the output, the filter and the NHS number columns."""
    used = {c.name for c in plan.outputs} | {c.column for c in plan.filter}
    if plan.nhs_number_column:
        used.add(plan.nhs_number_column)
    return [name for name, _ in plan.declared if name in used]


# Working columns of the staged table. '#' cannot occur in a declared column name, so these never clash with one.
VALID, OPTED, NUMBER = quote("#valid"), quote("#opted"), quote("#nhs")
KEPT = f"{VALID} AND NOT coalesce({OPTED}, false)"
COUNTS_SQL = (
    f"SELECT count(*), coalesce(count_if(NOT {VALID}), 0), "
    f"coalesce(count_if({VALID} AND coalesce({OPTED}, false)), 0), coalesce(count_if({KEPT}), 0) FROM staged"
)


def _by_number(column: str, plan: ExtractPlan) -> bool:
    """The NHS number is pseudonymised from its ten digits, kept in the staged table as a number."""
    return column == plan.nhs_number_column


def _staged_expression(column: OutputColumn, plan: ExtractPlan) -> str | None:
    """A column as it is staged: generalised already; a direct identifier as it is (the NHS number not at all: its
    normalised number is staged instead)."""
    name = quote(column.name)
    match column.transform:
        case Transform.PSEUDONYMISE:
            return None if _by_number(column.name, plan) else name
        case Transform.YEAR:
            return f"CAST(year({name}) AS INTEGER) AS {name}"
        case Transform.MONTH:
            return f"strftime({name}, '%Y-%m') AS {name}"
        case Transform.OUTWARD_CODE:
            return f"outward_code({name}) AS {name}"
        case _:
            return name


def staged_sql(plan: ExtractPlan, params: Parameters, source: str) -> str:
    """One pass over the source keeping only rows that match the filter, with their NHS number checks, and their
    quasi-identifiers generalised."""
    keep = filter_sql(plan, params)
    carried = [e for e in (_staged_expression(c, plan) for c in plan.outputs) if e is not None]
    if plan.nhs_number_column:
        nhs = f"nhs_normalised(CAST({quote(plan.nhs_number_column)} AS VARCHAR))"
        # computed once in the inner query: the check refers to the number ten times
        number = f"nhs_ten_digits({nhs}) AS {NUMBER}"
        flags = f"nhs_number_ok({NUMBER}) AS {VALID}, {NUMBER} IN (SELECT nhs_number FROM optouts) AS {OPTED}"
    else:
        number, flags = f"NULL::BIGINT AS {NUMBER}", f"true AS {VALID}, false AS {OPTED}"
    matching = f"SELECT {number}, * FROM {source} WHERE {keep}"
    return f"CREATE TEMP TABLE staged AS SELECT {', '.join([flags, NUMBER, *carried])} FROM ({matching})"


def map_table(column: str) -> str:
    return quote(f"map_{column}")


def _identifier(column: str, plan: ExtractPlan, table: str) -> str:
    """The staged value a direct identifier's pseudonym is keyed on."""
    return f"{table}.{NUMBER}" if _by_number(column, plan) else f"CAST({table}.{quote(column)} AS VARCHAR)"


def pseudonym_map_sql(column: str, plan: ExtractPlan) -> str:
    """Distinct values of a direct identifier among kept rows, each hashed once.

    The NHS number is hashed in its normalised form, its ten digits (so spacing never changes a patient's
    pseudonym); any other identifier as text."""
    value = _identifier(column, plan, "s")
    text = "lpad(CAST(v AS VARCHAR), 10, '0')" if _by_number(column, plan) else "v"
    values = f"SELECT DISTINCT {value} AS v FROM staged s WHERE {KEPT} AND {value} IS NOT NULL"
    return f"CREATE TEMP TABLE {map_table(column)} AS SELECT v, tre_hmac({text}, $ipad, $opad) AS p FROM ({values})"


def output_sql(plan: ExtractPlan) -> str:
    """The extract: kept rows, approved columns, identifiers replaced by their pseudonyms."""
    selects = ", ".join(
        f"{map_table(c.name)}.p AS {quote(c.name)}" if c.transform is Transform.PSEUDONYMISE else f"s.{quote(c.name)}"
        for c in plan.outputs
    )
    joins = " ".join(
        f"LEFT JOIN {map_table(c.name)} ON {map_table(c.name)}.v = {_identifier(c.name, plan, 's')}"
        for c in plan.outputs
        if c.transform is Transform.PSEUDONYMISE
    )
    return f"SELECT {selects} FROM staged s {joins} WHERE {KEPT}"
