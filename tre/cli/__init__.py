"""The ``tre`` command. Every deliberate refusal prints one line on stderr and exits 1; usage errors exit 2."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

import typer
from typer.core import TyperGroup

from tre.cli._airlock import airlock_app
from tre.cli._audit import audit_app
from tre.cli._check import check
from tre.cli._controller import controller_app
from tre.cli._data import data_app, demo_data, optout_app, provision
from tre.cli._datasets import dataset_app
from tre.cli._people import token_app, user_app
from tre.cli._projects import project_app
from tre.cli._register import register_app
from tre.cli._up import up
from tre.errors import TreError, exit_code
from tre.spec import json_schema


class _Group(TyperGroup):
    """Turns a TreError anywhere below into one line on stderr and exit 1."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except TreError as error:
            message = " ".join(str(error).split())
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(exit_code(error)) from None


app = typer.Typer(
    cls=_Group,
    help="Trusted Research Environment orchestrator.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
app.add_typer(dataset_app, name="dataset")
app.add_typer(project_app, name="project")
app.add_typer(audit_app, name="audit")
app.add_typer(register_app, name="register")
app.add_typer(optout_app, name="optout")
app.add_typer(data_app, name="data")
app.add_typer(airlock_app, name="airlock")
app.add_typer(controller_app, name="controller")
app.command("provision")(provision)
app.command("demo-data")(demo_data)
app.command("check")(check)
app.command("up")(up)


class SchemaKind(StrEnum):
    PROJECT = "project"
    DATASET = "dataset"


@app.command("schema")
def schema(kind: SchemaKind) -> None:
    """Print the JSON Schema of a declaration kind."""
    typer.echo(json.dumps(json_schema(kind.value), indent=2, sort_keys=True))


def main() -> None:
    app()
