"""``tre optout …``, ``tre provision``, ``tre data manifest``, ``tre demo-data``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tre import services
from tre.cli._context import current_actor, load_settings, now, open_store, transaction
from tre.cli._output import Output, OutputOption, print_json, print_table
from tre.errors import InputError, NotFoundError
from tre.services import Actor, check_actor_is_admin
from tre.storage import ObjectStore, open_object_store
from tre.store import Store

if TYPE_CHECKING:
    from tre.data.provision import DataServices

# The data commands import DuckDB, pyarrow and hvac inside their bodies: every other command starts without them.

optout_app = typer.Typer(help="The national data opt-out list.", no_args_is_help=True)
data_app = typer.Typer(help="Provisioned extracts.", no_args_is_help=True)

_MAX_LINES_SHOWN = 20


def object_store() -> ObjectStore:
    settings = load_settings()
    return open_object_store(settings.objects_url, endpoint_url=settings.s3_endpoint_url)


def data_services() -> DataServices:
    from tre.clients.vault import VaultClient
    from tre.data import EngineLimits
    from tre.data.provision import DataServices

    settings = load_settings()
    url, token = settings.vault_credentials()
    vault = VaultClient(url, token)
    vault.check_ready()
    return DataServices(
        objects=object_store(),
        keys=vault,
        work_root=settings.home / "work",
        open_source_store=lambda bucket: open_object_store(f"s3://{bucket}", endpoint_url=settings.s3_endpoint_url),
        limits=EngineLimits(memory_limit=settings.extract_memory_limit),
    )


@optout_app.command("import")
def import_(
    file: Path,
    column: Annotated[
        str | None, typer.Option(help="Read this column of a CSV file instead of one number a line.")
    ] = None,
) -> None:
    """Import a new version of the opt-out list (one NHS number a line, or a CSV column)."""
    from tre.data import parse_optout_file
    from tre.data.provision import import_optouts

    parsed = parse_optout_file(file, column=column)
    with transaction() as (unit, actor):
        version, stale = import_optouts(unit, actor, parsed, object_store(), source=file.name, now=now())
    typer.echo(f"opt-out list version {version.version}: {version.numbers} NHS numbers")
    if parsed.invalid_lines:
        shown = ", ".join(str(n) for n in parsed.invalid_lines[:_MAX_LINES_SHOWN])
        more = "…" if len(parsed.invalid_lines) > _MAX_LINES_SHOWN else ""
        typer.echo(f"skipped {len(parsed.invalid_lines)} invalid lines (not a valid NHS number): {shown}{more}")
    if stale:
        typer.echo(f"now stale (re-provision with 'tre provision --stale'): {', '.join(stale)}")


@optout_app.command("list")
def list_optouts(output: OutputOption = Output.TABLE) -> None:
    """List opt-out list versions."""
    with transaction(write=False) as (unit, actor):
        check_actor_is_admin(actor, "see opt-out lists")
        versions = unit.optouts.all()
    if output is Output.JSON:
        print_json([v.__dict__ for v in versions])
        return
    rows = [(v.version, v.imported_at, v.numbers, v.invalid_lines) for v in versions]
    print_table("Opt-out lists", ["version", "imported", "NHS numbers", "invalid lines"], rows)


def provision(
    project: Annotated[str | None, typer.Argument(help="The project to provision.")] = None,
    stale: Annotated[bool, typer.Option("--stale", help="Re-provision every project whose extract is stale.")] = False,
    to: Annotated[
        Path | None,
        typer.Option(
            "--to",
            help="Then copy the extract into this directory, checked against its checksums, as DIR/current.",
        ),
    ] = None,
) -> None:
    """Build a project's extract: approved columns and rows, opt-outs removed, identifiers pseudonymised."""
    from tre.data.provision import provision_project, stale_projects

    if (project is None) == (not stale):
        raise InputError("give a PROJECT, or --stale for every stale project (not both)")
    if stale and to is not None:
        raise InputError("--to copies one project's extract; give a PROJECT instead of --stale")
    with open_store() as store:
        with store.transaction(write=False) as unit:
            actor = current_actor(unit)
            names = [project] if project else stale_projects(unit)
        if to is not None:
            from tre.data import check_export_directory

            check_actor_is_admin(actor, "provision data")
            check_export_directory(to)  # before the pipeline runs, not after
        if not names:
            typer.echo("no stale projects")
            return
        data = data_services()
        for name in names:
            manifest = provision_project(store, actor, name, data, now=now())
            for entry in manifest["datasets"]:
                typer.echo(
                    f"{name}/{entry['name']}: {entry['rowsWritten']} of {entry['rowsRead']} rows written, "
                    f"{entry['optOutsRemoved']} opt-outs removed, {entry['invalidNhsNumbers']} invalid NHS numbers"
                )
            typer.echo(f"{name}: extract {manifest['extract']} ready ({manifest['manifest']['uri']})")
            if to is not None:
                export_current(store, actor, name, data.objects, to)


def export_current(store: Store, actor: Actor, project: str, objects: ObjectStore, directory: Path) -> None:
    """Copy the project's current extract into ``directory`` (``tre.data.export_extract``) and audit it."""
    from tre.data import export_extract

    with store.transaction(write=False) as unit:
        current = unit.extracts.current(project)
    if current is None:
        raise NotFoundError(f"project {project} has no extract yet; run 'tre provision {project}'")
    exported = export_extract(json.loads(current.manifest), objects, directory)
    with store.transaction() as unit:
        unit.audit.append(
            at=services.timestamp(now()),
            actor=actor.name,
            action="data.exported",
            project=project,
            target=exported.extract,
            details={"directory": str(directory), "copied": exported.copied, "removed": list(exported.removed)},
        )
    done = "copied to" if exported.copied else "already in"
    typer.echo(
        f"{project}: extract {exported.extract} {done} {directory / 'current'} "
        f"({len(exported.files)} files, {exported.bytes} bytes)"
    )


@data_app.command("manifest")
def manifest(project: str, output: OutputOption = Output.TABLE) -> None:
    """Show the manifest of a project's current extract: counts, versions, and where each file is."""
    with transaction(write=False) as (unit, actor):
        services.check_user_can_view_project(actor, services.get_project(unit, project).project)
        current = unit.extracts.current(project)
    if current is None:
        raise NotFoundError(f"project {project} has no extract yet; run 'tre provision {project}'")
    document = json.loads(current.manifest)
    if output is Output.JSON:
        print_json(document)
        return
    versions = f"key v{document['keyVersion']}, opt-outs v{document['optOutVersion']}"
    typer.echo(f"extract {document['extract']} of {project}, {versions}")
    rows = [
        (d["name"], d["rowsRead"], d["optOutsRemoved"], d["invalidNhsNumbers"], d["rowsWritten"], d["file"]["uri"])
        for d in document["datasets"]
    ]
    print_table("Datasets", ["dataset", "read", "opt-outs removed", "invalid NHS no.", "written", "file"], rows)


@data_app.command("rotate-key")
def rotate_key(project: str) -> None:
    """Make a new version of the project's pseudonymisation key (after a suspected compromise).

    Every pseudonym changes at the next extract, so pseudonyms no longer link to earlier extracts.
    """
    from tre.clients.vault import VaultClient

    settings = load_settings()
    url, token = settings.vault_credentials()
    with transaction() as (unit, actor):
        check_actor_is_admin(actor, "rotate pseudonymisation keys")
        services.get_project(unit, project)
        vault = VaultClient(url, token)
        key = vault.pseudonymisation_key(project)
        rotated = vault.rotate_pseudonymisation_key(project)
        unit.audit.append(
            at=services.timestamp(now()),
            actor=actor.name,
            action="data.key-rotated",
            project=project,
            target=project,
            details={"from": key.version, "to": rotated.version},
        )
    typer.echo(
        f"{project}: pseudonymisation key now version {rotated.version}; re-provision with 'tre provision {project}'"
    )
    typer.echo("warning: pseudonyms in new extracts will not match those in earlier extracts")


def demo_data(
    out: Annotated[Path, typer.Option(help="Directory for hospital-episodes.csv and optouts.txt.")] = Path("."),
    rows: Annotated[int, typer.Option(min=1, max=100_000_000)] = 20_000,
    seed: Annotated[int, typer.Option()] = 2026,
) -> None:
    """Write synthetic patient data (NHS numbers from the test range only) and a matching opt-out list."""
    from tre.data import write_demo_data

    files = write_demo_data(out, rows=rows, seed=seed)
    typer.echo(f"wrote {files.episodes} ({files.rows} episodes, {files.patients} patients)")
    typer.echo(f"wrote {files.optouts} ({files.opted_out} opted-out patients and 2 invalid lines)")
