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

_WEIGHTED_SUM = " + ".join(f"TRY_CAST(substr(x, {i}, 1) AS INTEGER) * {11 - i}" for i in range(1, 10))
# The Modulus 11 check digit of a normalised string x: 11 - (weighted sum mod 11); 11 means 0, 10 means no valid number.
NHS_MACROS = (
    f"CREATE OR REPLACE TEMP MACRO nhs_check(x) AS 11 - ({_WEIGHTED_SUM}) % 11",
    "CREATE OR REPLACE TEMP MACRO nhs_valid(x) AS coalesce(regexp_full_match(x, '[0-9]{10}') "
    "AND nhs_check(x) <> 10 AND nhs_check(x) % 11 = TRY_CAST(substr(x, 10, 1) AS INTEGER), false)",
)
HMAC_MACRO = (
    "CREATE OR REPLACE TEMP MACRO tre_hmac(v, ipad, opad) AS left(sha256(opad || unhex(sha256(ipad || encode(v)))), 32)"
)
OUTWARD_CODE = r"nullif(regexp_extract(upper(trim({c})), '^([A-Z]{{1,2}}[0-9][A-Z0-9]?) ?[0-9][A-Z]{{2}}$', 1), '')"


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


def source_sql(plan: ExtractPlan, path_param: str) -> str:
    """The source read with the declared types (CSV) or cast to them (Parquet)."""
    if plan.format == "csv":
        columns = "{" + ", ".join(f"'{name}': '{SQL_TYPES[kind]}'" for name, kind in plan.declared) + "}"
        return (
            f"read_csv({path_param}, header = true, columns = {columns}, auto_detect = false, "
            "strict_mode = true, null_padding = false)"
        )
    casts = ", ".join(f"CAST({quote(n)} AS {SQL_TYPES[k]}) AS {quote(n)}" for n, k in plan.declared)
    return f"(SELECT {casts} FROM read_parquet({path_param}))"


def staged_sql(plan: ExtractPlan, params: Parameters, path_param: str) -> str:
    """One pass over the source keeping only rows that match the filter, with their NHS number checks."""
    keep = filter_sql(plan, params)
    needed = sorted({c.name for c in plan.outputs})
    carried = ", ".join(quote(n) for n in needed) or "NULL AS _none"
    if plan.nhs_number_column:
        nhs = identifier_sql(plan.nhs_number_column, plan)
        flags = f"nhs_valid({nhs}) AS _valid, TRY_CAST({nhs} AS BIGINT) IN (SELECT nhs_number FROM optouts) AS _opted"
    else:
        flags = "true AS _valid, false AS _opted"
    return f"CREATE TEMP TABLE staged AS SELECT {flags}, {carried} FROM {source_sql(plan, path_param)} WHERE {keep}"


def rows_read_sql(plan: ExtractPlan, path_param: str) -> str:
    """Every record in the source, parsed but not converted (no column is projected)."""
    return f"SELECT count(*) FROM {source_sql(plan, path_param)}"


KEPT = "_valid AND NOT coalesce(_opted, false)"
COUNTS_SQL = (
    "SELECT count(*), coalesce(count_if(NOT _valid), 0), coalesce(count_if(_valid AND coalesce(_opted, false)), 0), "
    f"coalesce(count_if({KEPT}), 0) FROM staged"
)


def map_table(column: str) -> str:
    return quote(f"map_{column}")


def identifier_sql(column: str, plan: ExtractPlan, table: str = "") -> str:
    """The value a direct identifier is pseudonymised from: the NHS number normalised (so spacing does not
    change a patient's pseudonym), any other identifier as text."""
    qualified = f"{table}.{quote(column)}" if table else quote(column)
    if column == plan.nhs_number_column:
        return f"regexp_replace(CAST({qualified} AS VARCHAR), '[ -]', '', 'g')"
    return f"CAST({qualified} AS VARCHAR)"


def pseudonym_map_sql(column: str, plan: ExtractPlan) -> str:
    """Distinct values of a direct identifier among kept rows, each hashed once."""
    values = f"SELECT DISTINCT {identifier_sql(column, plan)} AS v FROM staged WHERE {KEPT}"
    return (
        f"CREATE TEMP TABLE {map_table(column)} AS SELECT v, tre_hmac(v, $ipad, $opad) AS p "
        f"FROM ({values} AND {quote(column)} IS NOT NULL)"
    )


def _output_expression(column: OutputColumn) -> str:
    name = quote(column.name)
    match column.transform:
        case Transform.PSEUDONYMISE:
            return f"{map_table(column.name)}.p AS {name}"
        case Transform.YEAR:
            return f"CAST(year(s.{name}) AS INTEGER) AS {name}"
        case Transform.MONTH:
            return f"strftime(s.{name}, '%Y-%m') AS {name}"
        case Transform.OUTWARD_CODE:
            return OUTWARD_CODE.format(c=f"s.{name}") + f" AS {name}"
        case _:
            return f"s.{name}"


def output_sql(plan: ExtractPlan) -> str:
    """The extract: kept rows, approved columns, identifiers replaced by their pseudonyms."""
    selects = ", ".join(_output_expression(c) for c in plan.outputs)
    joins = " ".join(
        f"LEFT JOIN {map_table(c.name)} ON {map_table(c.name)}.v = {identifier_sql(c.name, plan, 's')}"
        for c in plan.outputs
        if c.transform is Transform.PSEUDONYMISE
    )
    return f"SELECT {selects} FROM staged s {joins} WHERE {KEPT}"
