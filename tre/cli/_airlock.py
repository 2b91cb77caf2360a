"""``tre airlock …``: output requests, acting as the user whose token is in TRE_TOKEN."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tre.airlock import FileKind, TableKind, Vote
from tre.airlock import service as airlock
from tre.cli._context import now, open_store, transaction
from tre.cli._data import object_store
from tre.cli._output import Output, OutputOption, print_json, print_table
from tre.errors import InputError

if TYPE_CHECKING:
    from tre.clients.airlock_http import AirlockClient

airlock_app = typer.Typer(help="Output requests: the only way anything leaves a workspace.", no_args_is_help=True)


def read_regular_file(path: Path, limit: int) -> bytes:
    """The bytes of a regular file (not a symlink, device or directory), refusing it if it is over ``limit``."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read file ({exc.strerror})") from None
    if stat.S_ISLNK(info.st_mode):
        raise InputError(f"{path} is a symbolic link: add the file itself")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{path} is not a regular file")
    if info.st_size > limit:
        raise InputError(f"{path} is {info.st_size} bytes, over the {limit}-byte limit")
    with path.open("rb") as handle:
        return handle.read(limit + 1)


AIRLOCK_URL_VARIABLE = "TRE_AIRLOCK_URL"


def remote_airlock() -> AirlockClient | None:
    """In a workspace: the airlock through the hub (TRE_AIRLOCK_URL) as the server's hub token's owner."""
    url = os.environ.get(AIRLOCK_URL_VARIABLE)
    if not url:
        return None
    from tre.clients.airlock_http import AirlockClient

    token = os.environ.get("TRE_TOKEN") or os.environ.get("JUPYTERHUB_API_TOKEN")
    if not token:
        raise InputError(f"{AIRLOCK_URL_VARIABLE} is set but there is no token: set TRE_TOKEN or JUPYTERHUB_API_TOKEN")
    return AirlockClient(url, token)


def _release_approved() -> list[str]:
    with open_store() as store:
        return airlock.release_approved(store, object_store(), now=now())


@airlock_app.command("create")
def create(
    project: str,
    title: Annotated[str, typer.Option(help="What the outputs are.")],
    context: Annotated[str, typer.Option(help="What the checkers need to know.")] = "",
    controls: Annotated[str, typer.Option(help="Disclosure controls applied (rounding, suppression…).")] = "",
) -> None:
    """Start a request; prints its id."""
    if remote := remote_airlock():
        typer.echo(remote.create(project, title, context, controls)["id"])
        return
    with transaction() as (unit, actor):
        request = airlock.create_request(
            unit, actor, project, title=title, context=context, controls=controls, now=now()
        )
    typer.echo(request.id)


@airlock_app.command("add")
def add(
    request_id: str,
    file: Path,
    kind: Annotated[FileKind, typer.Option(help="output (to release), supporting or code (for the checkers).")],
    name: Annotated[str | None, typer.Option(help="Name in the request (default: the file's name).")] = None,
    table: Annotated[
        TableKind | None, typer.Option(help="Declare a CSV/TSV a table of counts (frequency): checked as counts.")
    ] = None,
) -> None:
    """Add a file (copied into quarantine now; later changes to your copy do not matter)."""
    limits = airlock.Limits()
    data = read_regular_file(file, limits.max_file_bytes)
    if remote := remote_airlock():
        added = remote.add_file(request_id, name or file.name, kind.value, data)
        typer.echo(f"{request_id}: added {added['name']} ({added['kind']}, {added['size']} bytes)")
        return
    with transaction() as (unit, actor):
        item = airlock.add_file(
            unit,
            actor,
            object_store(),
            request_id,
            name=name or file.name,
            kind=kind,
            data=data,
            now=now(),
            limits=limits,
            table=table,
        )
    typer.echo(f"{request_id}: added {item.name} ({item.kind}, {item.size} bytes, sha256 {item.sha256[:12]}…)")


@airlock_app.command("remove")
def remove(request_id: str, name: str) -> None:
    """Remove a file from a draft or returned request."""
    with transaction() as (unit, actor):
        airlock.remove_file(unit, actor, request_id, name, now=now())
    typer.echo(f"{request_id}: removed {name}")


@airlock_app.command("submit")
def submit(request_id: str) -> None:
    """Submit for review; automated checks run first."""
    if remote := remote_airlock():
        typer.echo(f"{request_id}: {remote.submit(request_id)['state']}")
        return
    with transaction() as (unit, actor):
        request = airlock.submit(unit, actor, object_store(), request_id, now=now())
    typer.echo(f"{request_id}: {request.state}")


@airlock_app.command("list")
def list_requests(
    output: OutputOption = Output.TABLE,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 100,
    offset: Annotated[int, typer.Option(min=0, max=10**9)] = 0,
) -> None:
    """Requests you may see, oldest first, a page at a time."""
    if remote := remote_airlock():
        rows = remote.list(limit=limit, offset=offset)
    else:
        with transaction(write=False) as (unit, actor):
            rows = [r.__dict__ for r in airlock.list_requests(unit, actor, limit=limit, offset=offset)]
    if output is Output.JSON:
        print_json(rows)
        return
    print_table(
        "Airlock requests",
        ["id", "project", "author", "state", "title"],
        [(r["id"], r["project"], r["author"], r["state"], r["title"]) for r in rows],
    )


@airlock_app.command("show")
def show(request_id: str, output: OutputOption = Output.TABLE) -> None:
    """A request: state, files, check results, and the votes you may see."""
    if remote := remote_airlock():
        document = remote.show(request_id)
    else:
        with transaction() as (unit, actor):
            document = airlock.view(unit, actor, request_id, now=now())
    if output is Output.JSON:
        print_json(document)
        return
    typer.echo(f"{document['id']} ({document['project']}, by {document['author']}): {document['state']}")
    for item in document["files"]:
        flags = ", ".join(f"{c['rule']} {c['status']}" for c in item["checks"] if c["status"] != "pass")
        typer.echo(f"  {item['name']} [{item['kind']}] {item['status'] or 'not checked'}{': ' if flags else ''}{flags}")
    for entry in document["overrides"]:
        typer.echo(f"  override: {entry['checker']} {entry['file']} {entry['rule']}: {entry['rationale']}")
    for ballot in document["votes"]:
        typer.echo(
            f"  vote: {ballot['checker'] or 'a checker'} {ballot['vote']} {ballot['file']}: {ballot['comment'] or ''}"
        )


@airlock_app.command("review")
def review(
    request_id: str,
    file: Annotated[str, typer.Option("--file", help="The file voted on.")],
    vote: Annotated[Vote, typer.Option("--vote")],
    comment: Annotated[str | None, typer.Option(help="Required unless approving.")] = None,
    share: Annotated[bool, typer.Option("--share", help="Show the comment to the author.")] = False,
) -> None:
    """Vote on one file (independent output checkers only)."""
    with transaction() as (unit, actor):
        request = airlock.vote(
            unit, actor, request_id, file=file, choice=vote, comment=comment, shared=share, now=now()
        )
    released = _release_approved() if request.state == "approved" else []
    typer.echo(f"{request_id}: {'released' if request_id in released else request.state}")


@airlock_app.command("override")
def override(
    request_id: str,
    file: Annotated[str, typer.Option("--file", help="The file whose automated result you override.")],
    rule: Annotated[str, typer.Option("--rule", help="The rule that failed or needs review (see 'show').")],
    rationale: Annotated[str, typer.Option(help="Why it is safe to release anyway; kept in the decision record.")],
) -> None:
    """Override one automated fail or review on a file, with a rationale (needed before you approve it)."""
    with transaction() as (unit, actor):
        airlock.override(unit, actor, request_id, file=file, rule=rule, rationale=rationale, now=now())
    typer.echo(f"{request_id}: {file}: {rule} overridden")


@airlock_app.command("rules")
def rules(
    project: str,
    set_: Annotated[Path | None, typer.Option("--set", help="A rule set (YAML) from policies/disclosure/.")] = None,
    default: Annotated[bool, typer.Option("--default", help="Go back to the default rules.")] = False,
    output: OutputOption = Output.TABLE,
) -> None:
    """Show the disclosure rules a project's outputs are checked under; admins choose them (--set or --default)."""
    if set_ is not None and default:
        raise InputError("give --set FILE or --default, not both")
    if set_ is not None or default:
        from tre.sdc import load_rules

        chosen = load_rules(set_) if set_ is not None else None
        with transaction() as (unit, actor):
            airlock.set_project_rules(unit, actor, project, chosen, now=now())
    with transaction(write=False) as (unit, actor):
        document = airlock.show_project_rules(unit, actor, project)
    if output is Output.JSON:
        print_json(document)
        return
    parameters = document["rules"]
    typer.echo(f"{project}: {parameters['name']}" + (f" (set by {document['setBy']})" if document["setBy"] else ""))
    for field, value in parameters.items():
        if field != "name":
            typer.echo(f"  {field}: {value}")


@airlock_app.command("withdraw")
def withdraw(request_id: str) -> None:
    """Withdraw your request."""
    if remote := remote_airlock():
        remote.withdraw(request_id)
        typer.echo(f"{request_id}: withdrawn")
        return
    with transaction() as (unit, actor):
        airlock.withdraw(unit, actor, request_id, now=now())
    typer.echo(f"{request_id}: withdrawn")


@airlock_app.command("revoke")
def revoke(request_id: str, reason: Annotated[str, typer.Option(help="Why, for the record.")]) -> None:
    """Revoke an approved or released request (its released files are removed)."""
    with transaction() as (unit, actor):
        airlock.revoke(unit, actor, object_store(), request_id, reason=reason, now=now())
    typer.echo(f"{request_id}: revoked")


@airlock_app.command("release-pending")
def release_pending() -> None:
    """Finish releasing every approved request (e.g. after an interruption)."""
    released = _release_approved()
    typer.echo(f"released: {', '.join(released)}" if released else "nothing to release")
