"""``tre dataset …``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tre import services
from tre.cli._context import now, transaction
from tre.cli._output import Output, OutputOption, print_json, print_table
from tre.errors import NotFoundError
from tre.spec import Dataset, load

dataset_app = typer.Typer(help="Source datasets and how identifying each column is.", no_args_is_help=True)

FileOption = Annotated[Path, typer.Option("--file", "-f", help="The declaration (YAML).")]


def resolve_location(dataset: Dataset, base: Path) -> Dataset:
    """A local, relative location made absolute against the declaration file's directory."""
    location = dataset.spec.location
    if "://" in location or Path(location).is_absolute():
        return dataset
    spec = dataset.spec.model_copy(update={"location": str((base / location).resolve())})
    return dataset.model_copy(update={"spec": spec})


@dataset_app.command("register")
def register(file: FileOption) -> None:
    """Register or update a dataset from its declaration (idempotent)."""
    dataset = resolve_location(load(Dataset, file), file.parent)
    with transaction() as (unit, actor):
        result = services.register_dataset(unit, actor, dataset, now=now())
    typer.echo(result.describe())


@dataset_app.command("list")
def list_datasets(output: OutputOption = Output.TABLE) -> None:
    """List registered datasets."""
    with transaction(write=False) as (unit, _actor):
        stored = unit.datasets.all()
    if output is Output.JSON:
        print_json([s.dataset.model_dump(mode="json", by_alias=True) for s in stored])
        return
    rows = [
        (s.dataset.name, s.dataset.spec.title, s.dataset.spec.owner, s.dataset.spec.identifiability) for s in stored
    ]
    print_table("Datasets", ["name", "title", "owner", "identifiability"], rows)


@dataset_app.command("show")
def show_dataset(name: str, output: OutputOption = Output.TABLE) -> None:
    """Show a dataset declaration."""
    with transaction(write=False) as (unit, _actor):
        stored = unit.datasets.get(name)
    if stored is None:
        raise NotFoundError(f"no dataset called {name}; see 'tre dataset list'")
    if output is Output.JSON:
        print_json(stored.dataset.model_dump(mode="json", by_alias=True) | {"generation": stored.generation})
        return
    spec = stored.dataset.spec
    rows = [(c.name, c.classification, c.type, "yes" if c.nhs_number else "", c.generalise) for c in spec.columns]
    print_table(
        f"Dataset {name}: {spec.title} ({spec.location})",
        ["column", "class", "type", "NHS no.", "generalise"],
        rows,
    )
