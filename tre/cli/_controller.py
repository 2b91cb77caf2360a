"""``tre controller``: review what the controller would apply, and run it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tre.cli._controller_run import run as run_controller
from tre.controller import ClusterConfig, crd_yaml, load_cluster_config, project_objects, yaml_documents
from tre.spec import Project, load

controller_app = typer.Typer(help="Cluster mode: the Kubernetes controller.", no_args_is_help=True)

_MANIFESTS_HEADER = (
    "# Objects the controller applies for project {name} once it is approved, in apply order.\n"
    "# Members here are the declaration's lead and members; the live controller lists only those whose\n"
    "# accreditation is in force, and none while the project is suspended.\n"
)


@controller_app.command("manifests")
def manifests(
    file: Annotated[Path, typer.Option("--file", "-f", help="The Project declaration (YAML).")],
    values: Annotated[
        Path | None,
        typer.Option("--values", help="Cluster settings (YAML, the chart's cluster.yaml); defaults otherwise."),
    ] = None,
) -> None:
    """Print every object the controller applies for a project, as multi-document YAML (to review a change)."""
    project = load(Project, file)
    config = ClusterConfig() if values is None else load_cluster_config(values)
    objects = project_objects(project, config, members=project.spec.all_members)
    typer.echo(_MANIFESTS_HEADER.format(name=project.name) + yaml_documents(objects), nl=False)


@controller_app.command("crd")
def crd() -> None:
    """Print the Project CustomResourceDefinition (its schema is generated from the declaration model)."""
    typer.echo(crd_yaml(), nl=False)


controller_app.command("run")(run_controller)
