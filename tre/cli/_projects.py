"""``tre project …``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tre import services
from tre.cli._context import now, transaction
from tre.cli._output import Output, OutputOption, parse_date, print_json, print_table
from tre.errors import InputError
from tre.services import ProjectStatus
from tre.spec import Project, load

project_app = typer.Typer(help="Research projects: declare, approve, inspect.", no_args_is_help=True)


@project_app.command("apply")
def apply(
    file: Annotated[Path, typer.Option("--file", "-f", help="The Project declaration (YAML).")],
) -> None:
    """Create or update a project from its declaration (idempotent; prints what changed)."""
    project = load(Project, file)
    with transaction() as (unit, actor):
        result = services.apply_project(unit, actor, project, now=now())
    typer.echo(result.describe())


def _statuses(*, name: str | None = None) -> list[ProjectStatus]:
    """Refresh phases (recording any change, e.g. an expiry) and return the statuses the actor may see."""
    moment = now()
    with transaction() as (unit, actor):
        if name is not None:
            stored = services.get_project(unit, name)
            services.check_user_can_view_project(actor, stored.project)
            return [services.refresh_phase(unit, actor, name, now=moment)]
        statuses = services.refresh_phases(unit, actor, now=moment)
        return [s for s in statuses if services.user_can_view_project(actor, s.stored.project)]


def status_dict(status: ProjectStatus) -> dict[str, Any]:
    stored = status.stored
    approval = status.approval.model_dump(mode="json", by_alias=True) if status.approval else None
    return {
        "name": stored.name,
        "phase": status.phase.value,
        "blockers": [b.as_dict() for b in status.blockers],
        "generation": stored.generation,
        "createdAt": stored.created_at,
        "updatedAt": stored.updated_at,
        "spec": stored.project.spec.model_dump(mode="json", by_alias=True),
        "approval": approval,
    }


@project_app.command("list")
def list_projects(output: OutputOption = Output.TABLE) -> None:
    """List the projects you may see, with their phase."""
    statuses = _statuses()
    if output is Output.JSON:
        print_json([status_dict(s) for s in statuses])
        return
    rows = [
        (
            s.stored.name,
            s.phase,
            s.stored.project.spec.title,
            s.approval.expires if s.approval else "",
            len(s.blockers),
        )
        for s in statuses
    ]
    print_table("Projects", ["name", "phase", "title", "approval expires", "blockers"], rows)


@project_app.command("show")
def show(name: str, output: OutputOption = Output.TABLE) -> None:
    """Show a project: its phase and every reason it may not have data now."""
    (status,) = _statuses(name=name)
    if output is Output.JSON:
        print_json(status_dict(status))
        return
    spec = status.stored.project.spec
    typer.echo(f"{name}: {spec.title}\nphase: {status.phase.value}\nlead: {spec.lead}")
    if status.approval:
        typer.echo(f"approval: {status.approval.reference} until {status.approval.expires}")
    for blocker in status.blockers:
        typer.echo(f"blocker [{blocker.code.value}]: {blocker.message}")


def _columns(values: list[str]) -> dict[str, frozenset[str]]:
    narrowed: dict[str, frozenset[str]] = {}
    for value in values:
        dataset, sep, cols = value.partition(":")
        columns = frozenset(c.strip() for c in cols.split(",") if c.strip())
        if not sep or not dataset or not columns:
            raise InputError(f"--columns: {value!r} is not of the form DATASET:col,col")
        if dataset in narrowed:
            raise InputError(f"--columns: dataset {dataset} is given twice")
        narrowed[dataset] = columns
    return narrowed


@project_app.command("approve")
def approve(
    name: str,
    by: Annotated[str, typer.Option("--by", help="The approver (a user with the approver role, not a member).")],
    reference: Annotated[str, typer.Option("--reference", help="The review committee's reference.")],
    expires: Annotated[str, typer.Option("--expires", help="When the approval lapses (YYYY-MM-DD).")],
    agreement: Annotated[str, typer.Option("--agreement", help="The data-sharing agreement reference.")],
    agreement_signed: Annotated[str | None, typer.Option(help="Date the agreement was signed (default today).")] = None,
    decided: Annotated[str | None, typer.Option(help="Date of the committee's decision (default today).")] = None,
    condition: Annotated[
        list[str] | None, typer.Option("--condition", help="A condition of approval; repeatable.")
    ] = None,
    columns: Annotated[
        list[str] | None,
        typer.Option("--columns", help="DATASET:col,col to approve fewer columns than requested."),
    ] = None,
) -> None:
    """Record a review committee's approval and the data-sharing agreement."""
    request = services.ApprovalRequest(
        project=name,
        approver=by,
        reference=reference,
        expires=parse_date(expires, "--expires"),
        agreement_reference=agreement,
        agreement_signed=parse_date(agreement_signed, "--agreement-signed") if agreement_signed else None,
        decided=parse_date(decided, "--decided") if decided else None,
        conditions=tuple(condition or ()),
        columns=_columns(columns or []),
    )
    with transaction() as (unit, actor):
        approval = services.approve_project(unit, actor, request, now=now())
        status = services.project_status(unit, services.get_project(unit, name), today=now().date())
    typer.echo(
        f"project {name} approved under {approval.reference} until {approval.expires}; phase {status.phase.value}"
    )
    for blocker in status.blockers:
        typer.echo(f"blocker [{blocker.code.value}]: {blocker.message}")
