"""Printing results: rich tables for people, JSON for programs, one-line errors."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tre.errors import InputError


class Output(StrEnum):
    TABLE = "table"
    JSON = "json"


OutputOption = Annotated[Output, typer.Option("--output", "-o", help="table for people, json for programs.")]

console = Console(soft_wrap=True)


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        table.add_column(column, no_wrap=index == 0)
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    console.print(table)


def parse_date(value: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InputError(f"{option}: {value!r} is not a date; use YYYY-MM-DD") from None


def split_pair(value: str, option: str, example: str) -> tuple[str, str]:
    """Split ``NAME:VALUE`` at the last colon."""
    name, sep, rest = value.rpartition(":")
    if not sep or not name or not rest:
        raise InputError(f"{option}: {value!r} is not of the form {example}")
    return name, rest
