"""``tre audit …``: verify the hash chain, print its head, export entries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tre import services
from tre.cli._context import now, transaction
from tre.errors import IntegrityError
from tre.services import timestamp

audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)


@audit_app.command("verify")
def verify() -> None:
    """Check the whole hash chain; exit 1 naming the first bad entry if anything was altered."""
    with transaction(write=False) as (unit, actor):
        services.check_actor_is_admin(actor, "verify the audit log")
        result = unit.audit.verify()
    if not result.ok:
        raise IntegrityError(f"audit log is NOT intact: first bad entry {result.first_bad_seq}: {result.problem}")
    typer.echo(f"audit log intact: {result.entries} entries, head {result.head_hash}")


@audit_app.command("head")
def head() -> None:
    """Print the last entry's number and hash; publish it elsewhere to anchor the log."""
    with transaction(write=False) as (unit, actor):
        services.check_actor_is_admin(actor, "read the audit log")
        seq, digest = unit.audit.head()
    typer.echo(f"{seq} {digest}")


@audit_app.command("export")
def export(
    project: Annotated[str | None, typer.Option(help="Only entries about this project.")] = None,
    since: Annotated[int, typer.Option(help="Only entries after this sequence number.")] = 0,
    out: Annotated[Path | None, typer.Option("--out", help="Write here instead of standard output.")] = None,
) -> None:
    """Write entries as JSON lines (the export itself is recorded in the log)."""
    moment = now()
    with transaction() as (unit, actor):
        services.check_actor_is_admin(actor, "export the audit log")
        lines = [json.dumps(e.as_dict(), sort_keys=True) for e in unit.audit.entries(project=project, since_seq=since)]
        details = {"project": project, "since": since, "entries": len(lines)}
        unit.audit.append(at=timestamp(moment), actor=actor.name, action="audit.exported", details=details)
    text = "".join(f"{line}\n" for line in lines)
    if out is None:
        typer.echo(text, nl=False)
    else:
        _write_atomically(out, text)


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)
