"""``tre check PATH…``: the disclosure checks a researcher can run before submitting outputs."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from tre.cli._output import Output, OutputOption, print_json, print_table


class TableKind(StrEnum):
    FREQUENCY = "frequency"


def check(
    paths: Annotated[list[Path], typer.Argument(help="Files, or ACRO output folders.")],
    rules: Annotated[
        Path | None, typer.Option(help="A rule set (YAML); default: policies/disclosure/default.yaml.")
    ] = None,
    kind: Annotated[TableKind | None, typer.Option(help="Declare tables without evidence as frequency tables.")] = None,
    output: OutputOption = Output.TABLE,
) -> None:
    """Check outputs for disclosure risk: pass, review or fail per file (exit 1 if any file fails)."""
    from tre.sdc import DEFAULT_RULES, check_paths, load_rules  # pandas: loaded only for this command

    rule_set = load_rules(rules) if rules else DEFAULT_RULES
    reports = check_paths(list(paths), rules=rule_set, kind=kind.value if kind else None)
    if output is Output.JSON:
        print_json([r.as_dict() for r in reports])
    else:
        rows = [
            (r.path, r.status, "; ".join(f"{x.rule} {x.status}" for x in r.results if x.status != "pass"))
            for r in reports
        ]
        print_table("Disclosure checks", ["path", "status", "not passing"], rows)
    if any(r.status == "fail" for r in reports):
        raise typer.Exit(1)
