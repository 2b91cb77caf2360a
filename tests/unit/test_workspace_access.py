"""Who may run a workspace, checked against a real (SQLite) store: membership, accreditation, governance
blockers, suspension, provisioned data; and which running workspaces must stop."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES
from tre import services
from tre.errors import PermissionDeniedError
from tre.services import Actor, ApprovalRequest
from tre.spec import Accreditation, Dataset, Project, Role, User, load
from tre.storage import LocalObjectStore
from tre.store import Extract, Store, sqlite_url
from tre.workspaces._access import TreStoreGate, check_user_can_start_workspace, workspaces_to_stop

NOW = dt.datetime(2026, 6, 1, 9, tzinfo=dt.UTC)
TODAY = NOW.date()
OPERATOR = Actor.operator("test")
PROJECT = "diabetes-outcomes"


def _user(name: str, *roles: Role, expires: dt.date = dt.date(2027, 6, 30)) -> User:
    return User(name=name, roles=frozenset(roles), accreditations=(Accreditation(name="safe", expires=expires),))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(sqlite_url(tmp_path / "tre.db"))
    store.migrate()
    with store.transaction() as unit:
        for user in (_user("alice", Role.RESEARCHER), _user("bob", Role.RESEARCHER), _user("mallory", Role.RESEARCHER)):
            services.add_user(unit, OPERATOR, user, now=NOW)
        services.add_user(unit, OPERATOR, User(name="carol", roles=frozenset({Role.APPROVER})), now=NOW)
        services.register_dataset(unit, OPERATOR, load(Dataset, EXAMPLES / "hospital-episodes.dataset.yaml"), now=NOW)
        services.apply_project(unit, OPERATOR, load(Project, EXAMPLES / "diabetes-outcomes.project.yaml"), now=NOW)
        request = ApprovalRequest(PROJECT, "carol", "R", dt.date(2027, 1, 31), "A")
        services.approve_project(unit, OPERATOR, request, now=NOW)
    yield store
    store.close()


@pytest.fixture
def objects(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects")


def _provision(store: Store, objects: LocalObjectStore) -> Path:
    key = f"projects/{PROJECT}/extracts/e1/manifest.json"
    objects.put_bytes(key, json.dumps({"project": PROJECT}).encode())
    with store.transaction() as unit:
        unit.extracts.add(Extract("e1", PROJECT, "2026-06-01T09:00:00.000000Z", 1, 1, key, "{}"))
    local = objects.local_path(key)
    assert local is not None
    return local.parent


def _check(store: Store, objects: LocalObjectStore, user: str, project: str = PROJECT, today: dt.date = TODAY) -> str:
    with store.transaction(write=False) as unit, pytest.raises(PermissionDeniedError) as refused:
        check_user_can_start_workspace(unit, objects, user, project, today)
    return str(refused.value)


def test_a_member_of_an_approved_provisioned_project_gets_its_extract(store: Store, objects: LocalObjectStore) -> None:
    data_dir = _provision(store, objects)
    with store.transaction(write=False) as unit:
        grant = check_user_can_start_workspace(unit, objects, "bob", PROJECT, TODAY)
    assert (grant.project, grant.user, grant.data_dir, grant.extract) == (PROJECT, "bob", data_dir, "e1")
    assert (grant.cpu, grant.memory) == ("2", "8Gi")


def test_no_data_no_workspace(store: Store, objects: LocalObjectStore) -> None:
    assert _check(store, objects, "alice") == (
        f"project {PROJECT} has no data provisioned yet; an admin runs 'tre provision'"
    )


def test_non_members_and_unknown_projects_get_the_same_answer(store: Store, objects: LocalObjectStore) -> None:
    _provision(store, objects)
    assert _check(store, objects, "mallory") == (
        f"mallory is not a member of a project called {PROJECT}; ask the project's lead to add them"
    )
    assert _check(store, objects, "mallory", "no-such-project") == (
        "mallory is not a member of a project called no-such-project; ask the project's lead to add them"
    )


def test_an_expired_approval_stops_everyone(store: Store, objects: LocalObjectStore) -> None:
    _provision(store, objects)
    message = _check(store, objects, "alice", today=dt.date(2027, 2, 1))
    assert message.startswith(f"project {PROJECT} may not have data now: approval R expired on 2027-01-31")


def test_a_lapsed_accreditation_is_named(store: Store, objects: LocalObjectStore) -> None:
    _provision(store, objects)
    with store.transaction() as unit:
        services.accredit_user(unit, OPERATOR, "bob", Accreditation(name="safe", expires=dt.date(2026, 5, 1)), now=NOW)
    assert _check(store, objects, "bob") == "bob's accreditation expired on 2026-05-01; renew it to use a workspace"
    # the project now has a blocker (a member is not accredited), so alice may not work on it either
    assert "bob's accreditation expired on 2026-05-01" in _check(store, objects, "alice")


def test_a_suspended_project_has_no_workspaces(store: Store, objects: LocalObjectStore) -> None:
    _provision(store, objects)
    project = load(Project, EXAMPLES / "diabetes-outcomes.project.yaml")
    suspended = project.model_copy(update={"spec": project.spec.model_copy(update={"suspended": True})})
    with store.transaction() as unit:
        services.apply_project(unit, OPERATOR, suspended, now=NOW)
    assert _check(store, objects, "alice") == (
        f"project {PROJECT} is suspended; its workspaces stay stopped until an admin lifts the suspension"
    )


def test_running_workspaces_that_must_stop_are_listed_with_reasons(store: Store, objects: LocalObjectStore) -> None:
    _provision(store, objects)
    running = [("alice", PROJECT), ("mallory", PROJECT)]
    with store.transaction(write=False) as unit:
        assert [(u, p) for u, p, _ in workspaces_to_stop(unit, running, TODAY)] == [("mallory", PROJECT)]
        expired = workspaces_to_stop(unit, running, dt.date(2027, 2, 1))
    assert [(u, p) for u, p, _ in expired] == running
    assert "expired on 2027-01-31" in expired[0][2]


def test_the_store_gate_lists_projects_checks_and_audits(store: Store, objects: LocalObjectStore) -> None:
    _provision(store, objects)
    gate = TreStoreGate(store, objects, clock=lambda: NOW)
    assert gate.projects_for("alice") == [PROJECT]
    assert gate.projects_for("mallory") == []
    assert gate.check("alice", PROJECT).extract == "e1"
    gate.record("workspace.started", "alice", PROJECT, {"sandbox": f"{PROJECT}.alice"})
    with store.transaction(write=False) as unit:
        last = list(unit.audit.entries(project=PROJECT))[-1]
        assert unit.audit.verify().ok
    assert (last.action, last.actor, last.details) == ("workspace.started", "alice", {"sandbox": f"{PROJECT}.alice"})
