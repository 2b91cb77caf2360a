"""``tre register export``: the public transparency register."""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from tre import services
from tre.cli._audit import _write_atomically
from tre.cli._context import now, transaction
from tre.governance import PATIENT_DATA_CITATION, REGISTER_FIELDS, RegisterEntry

register_app = typer.Typer(help="The transparency register of approved projects.", no_args_is_help=True)


class Format(StrEnum):
    JSON = "json"
    CSV = "csv"
    HTML = "html"


def render_json(entries: Sequence[RegisterEntry]) -> str:
    return json.dumps([e.as_dict() for e in entries], indent=2, sort_keys=True) + "\n"


def render_csv(entries: Sequence[RegisterEntry]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=REGISTER_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(e.as_dict() for e in entries)
    return buffer.getvalue()


def render_html(entries: Sequence[RegisterEntry]) -> str:
    header = "".join(f"<th>{html.escape(f.replace('_', ' '))}</th>" for f in REGISTER_FIELDS)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(e.as_dict()[f]))}</td>" for f in REGISTER_FIELDS) + "</tr>\n"
        for e in entries
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>Data use register</title></head>\n'
        "<body><h1>How patient data is used: approved projects</h1>\n"
        f"<table>\n<thead><tr>{header}</tr></thead>\n<tbody>\n{rows}</tbody>\n</table>\n"
        f"<p>{html.escape(PATIENT_DATA_CITATION)}</p>\n</body></html>\n"
    )


RENDERERS = {Format.JSON: render_json, Format.CSV: render_csv, Format.HTML: render_html}


@register_app.command("export")
def export(
    format: Annotated[Format, typer.Option("--format", help="json, csv or html.")] = Format.JSON,
    out: Annotated[Path | None, typer.Option("--out", help="Write here instead of standard output.")] = None,
) -> None:
    """List approved projects for the public: what, who (organisation), which data, why, until when."""
    with transaction(write=False) as (unit, _actor):
        entries = services.transparency_register(unit, today=now().date())
    text = RENDERERS[format](entries)
    if out is None:
        typer.echo(text, nl=False)
    else:
        _write_atomically(out, text)
