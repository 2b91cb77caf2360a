"""``tre user …`` and ``tre token …``."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import ValidationError

from tre import services
from tre.cli._context import now, transaction
from tre.cli._output import Output, OutputOption, parse_date, print_json, print_table, split_pair
from tre.errors import InputError
from tre.spec import Accreditation, Role, User, describe_validation_error

user_app = typer.Typer(help="Users, their roles and accreditations.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens: later commands act as the user whose token is in TRE_TOKEN.")

AccreditationOption = Annotated[
    list[str] | None,
    typer.Option("--accreditation", "-a", help="NAME:YYYY-MM-DD (the expiry date); repeat for several."),
]


def _accreditation(value: str) -> Accreditation:
    name, expires = split_pair(value, "--accreditation", "NAME:YYYY-MM-DD")
    return Accreditation(name=name, expires=parse_date(expires, "--accreditation"))


def _user_dict(user: User) -> dict[str, object]:
    return user.model_dump(mode="json", by_alias=True) | {"roles": sorted(user.roles)}


@user_app.command("add")
def add(
    name: str,
    role: Annotated[list[Role], typer.Option("--role", "-r", help="Repeat for several roles.")],
    accreditation: AccreditationOption = None,
) -> None:
    """Add a user with one or more roles."""
    try:
        user = User(name=name, roles=frozenset(role), accreditations=tuple(map(_accreditation, accreditation or [])))
    except ValidationError as exc:
        raise InputError(f"user {name!r}: {describe_validation_error(exc)}") from exc
    with transaction() as (unit, actor):
        services.add_user(unit, actor, user, now=now())
    typer.echo(f"user {name} added")


@user_app.command("accredit")
def accredit(name: str, accreditation: Annotated[str, typer.Option("--accreditation", "-a")]) -> None:
    """Record a new or renewed accreditation (NAME:YYYY-MM-DD) for a user."""
    item = _accreditation(accreditation)
    with transaction() as (unit, actor):
        services.accredit_user(unit, actor, name, item, now=now())
    typer.echo(f"user {name}: {item.name} valid until {item.expires}")


@user_app.command("list")
def list_users(output: OutputOption = Output.TABLE) -> None:
    """List users."""
    with transaction(write=False) as (unit, actor):
        services.check_actor_is_admin(actor, "list users")
        users = unit.users.all()
    if output is Output.JSON:
        print_json([_user_dict(u) for u in users])
        return
    rows = [(u.name, ", ".join(sorted(u.roles)), _accreditation_text(u)) for u in users]
    print_table("Users", ["name", "roles", "accreditations"], rows)


@user_app.command("show")
def show_user(name: str, output: OutputOption = Output.TABLE) -> None:
    """Show one user."""
    with transaction(write=False) as (unit, actor):
        if actor.name != name:
            services.check_actor_is_admin(actor, "see other users")
        user = services.get_user(unit, name)
    if output is Output.JSON:
        print_json(_user_dict(user))
        return
    print_table(
        f"User {name}",
        ["roles", "accreditations"],
        [(", ".join(sorted(user.roles)), _accreditation_text(user))],
    )


def _accreditation_text(user: User) -> str:
    return ", ".join(f"{a.name} until {a.expires}" for a in user.accreditations) or "none"


@token_app.command("create")
def create_token(user: str) -> None:
    """Create an API token for USER and print it (shown once; only its digest is stored)."""
    with transaction() as (unit, actor):
        token = services.create_token(unit, actor, user, now=now())
    typer.echo(token)
