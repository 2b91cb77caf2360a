"""``tre up --demo``: seed a demo once — synthetic data, opt-outs, users, a dataset, an approved project.

Every step checks whether it was already done, so running ``tre up --demo`` again changes nothing.
The demo users' API tokens are created once and kept (0600) in ``run/demo-users.json``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from tre import services
from tre.data import parse_optout_file, write_demo_data
from tre.data.provision import import_optouts
from tre.embedded._layout import Layout, write_private_json
from tre.services import Actor
from tre.spec import Accreditation, Dataset, Project, Role, User, parse
from tre.storage import ObjectStore
from tre.store import Store, Unit

DEMO_ROWS = 20_000
DEMO_PROJECT = "diabetes-outcomes"
DEMO_USERS: dict[str, tuple[Role, ...]] = {
    "alice": (Role.RESEARCHER,),
    "bob": (Role.RESEARCHER,),
    "olive": (Role.OUTPUT_CHECKER,),
    "oscar": (Role.OUTPUT_CHECKER,),
    "carol": (Role.APPROVER,),
    "admin": (Role.ADMIN,),
}
SEEDER = Actor.operator("tre-up-demo")


@dataclass(frozen=True)
class DemoUser:
    name: str
    roles: tuple[str, ...]
    token: str


def _declaration(name: str) -> dict[str, Any]:
    text = resources.files("tre.embedded.demo").joinpath(name).read_text(encoding="utf-8")
    document = yaml.safe_load(text)
    assert isinstance(document, dict), name
    return document


def demo_dataset(data_dir: Path) -> Dataset:
    dataset = parse(Dataset, _declaration("hospital-episodes.dataset.yaml"), source="demo dataset")
    spec = dataset.spec.model_copy(update={"location": str(data_dir / "hospital-episodes.csv")})
    return dataset.model_copy(update={"spec": spec})


def demo_project() -> Project:
    return parse(Project, _declaration("diabetes-outcomes.project.yaml"), source="demo project")


def seed_demo(layout: Layout, store: Store, objects: ObjectStore, *, now: dt.datetime) -> list[DemoUser]:
    """Seed whatever of the demo is missing; returns the demo users with their API tokens."""
    data_dir = layout.home / "demo" / "data"
    if not (data_dir / "hospital-episodes.csv").exists():
        write_demo_data(data_dir, rows=DEMO_ROWS)
    with store.transaction() as unit:
        _add_users(unit, now)
        services.register_dataset(unit, SEEDER, demo_dataset(data_dir), now=now)
        if unit.projects.get(DEMO_PROJECT) is None:
            services.apply_project(unit, SEEDER, demo_project(), now=now)
        if unit.approvals.current(DEMO_PROJECT) is None:
            services.approve_project(unit, SEEDER, _approval(now.date()), now=now)
        if unit.optouts.latest() is None:
            parsed = parse_optout_file(data_dir / "optouts.txt")
            import_optouts(unit, SEEDER, parsed, objects, source="demo optouts.txt", now=now)
        return _tokens(layout, unit, now)


def _add_users(unit: Unit, now: dt.datetime) -> None:
    accredited = Accreditation(name="safe-researcher", expires=now.date() + dt.timedelta(days=730))
    for name, roles in DEMO_USERS.items():
        if unit.users.get(name) is None:
            accreditations = (accredited,) if Role.RESEARCHER in roles else ()
            user = User(name=name, roles=frozenset(roles), accreditations=accreditations)
            services.add_user(unit, SEEDER, user, now=now)


def _approval(today: dt.date) -> services.ApprovalRequest:
    return services.ApprovalRequest(
        project=DEMO_PROJECT,
        approver="carol",
        reference="DEMO/REC/0001",
        expires=today + dt.timedelta(days=365),
        agreement_reference="DEMO-DSA-0001",
        conditions=("Demo data only: synthetic patients",),
    )


def _tokens(layout: Layout, unit: Unit, now: dt.datetime) -> list[DemoUser]:
    path = layout.run / "demo-users.json"
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    tokens = {name: known[name] for name in DEMO_USERS if isinstance(known.get(name), str)}
    for name in DEMO_USERS:
        if name not in tokens or unit.tokens.user_for(tokens[name]) != name:
            tokens[name] = services.create_token(unit, SEEDER, name, now=now)
    write_private_json(path, tokens)
    return [DemoUser(name, tuple(sorted(roles)), tokens[name]) for name, roles in DEMO_USERS.items()]
