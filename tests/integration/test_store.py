"""The store on SQLite and on a real PostgreSQL: the same repository and audit tests on both."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from tests.conftest import EXAMPLES
from tre.errors import IntegrityError
from tre.spec import Accreditation, Approval, Dataset, Project, Role, User, load
from tre.store import GENESIS_HASH, Store, head_revision
from tre.store._tables import Base

NOW = "2026-06-01T09:00:00.000000Z"


def test_migrations_build_exactly_the_models(store: Store) -> None:
    with store.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert differences == []


def test_migrate_is_idempotent_and_at_head(store: Store) -> None:
    store.migrate()
    with store.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head_revision()


def test_database_from_a_newer_version_is_refused(store: Store) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(IntegrityError, match="revision 9999, which this version of tre does not know"):
        store.migrate()


def test_users_round_trip(store: Store) -> None:
    user = User(
        name="alice",
        roles=frozenset({Role.RESEARCHER, Role.ADMIN}),
        accreditations=(Accreditation(name="safe-researcher", expires=dt.date(2027, 1, 1)),),
    )
    with store.transaction() as unit:
        unit.users.add(user, now=NOW)
    with store.transaction(write=False) as unit:
        assert unit.users.get("alice") == user
        assert unit.users.get("nobody") is None
        assert [u.name for u in unit.users.all()] == ["alice"]


def test_declarations_round_trip_with_generations(store: Store) -> None:
    dataset = load(Dataset, EXAMPLES / "hospital-episodes.dataset.yaml")
    project = load(Project, EXAMPLES / "diabetes-outcomes.project.yaml")
    with store.transaction() as unit:
        assert unit.datasets.put(dataset, now=NOW) == 1
        assert unit.projects.put(project, phase="pending", now=NOW) == 1
        assert unit.projects.put(project, phase="pending", now=NOW) == 2
        unit.projects.set_phase(project.name, "approved", now=NOW)
    with store.transaction(write=False) as unit:
        stored = unit.projects.get(project.name)
        assert stored is not None
        assert (stored.project, stored.generation, stored.phase) == (project, 2, "approved")
        assert unit.datasets.get(dataset.name).dataset == dataset  # type: ignore[union-attr]
        assert unit.projects.count_by_phase() == {"approved": 1}


def test_latest_approval_is_current(store: Store) -> None:
    project = load(Project, EXAMPLES / "diabetes-outcomes.project.yaml")
    base = {
        "project": project.name,
        "approver": "carol",
        "decided": dt.date(2026, 1, 1),
        "expires": dt.date(2027, 1, 1),
    }
    with store.transaction() as unit:
        unit.projects.put(project, phase="pending", now=NOW)
        assert unit.approvals.current(project.name) is None
        unit.approvals.add(Approval(reference="first", **base), now=NOW)
        unit.approvals.add(Approval(reference="second", **base), now=NOW)
    with store.transaction(write=False) as unit:
        assert unit.approvals.current(project.name).reference == "second"  # type: ignore[union-attr]


def test_tokens_are_stored_as_digests(store: Store) -> None:
    with store.transaction() as unit:
        unit.users.add(User(name="alice", roles=frozenset({Role.RESEARCHER})), now=NOW)
        unit.tokens.add("alice", "tre_secret-value", now=NOW)
    with store.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT digest FROM tokens")).scalar_one()
    assert "secret" not in stored
    with store.transaction(write=False) as unit:
        assert unit.tokens.user_for("tre_secret-value") == "alice"
        assert unit.tokens.user_for("tre_wrong") is None


def test_failed_transaction_leaves_nothing_behind(store: Store) -> None:
    def crash_halfway() -> None:
        with store.transaction() as unit:
            unit.users.add(User(name="alice", roles=frozenset({Role.RESEARCHER})), now=NOW)
            unit.audit.append(at=NOW, actor="test", action="user.added", target="alice", details={})
            raise RuntimeError("crash halfway")

    with pytest.raises(RuntimeError):
        crash_halfway()
    with store.transaction(write=False) as unit:
        assert unit.users.all() == []
        assert list(unit.audit.entries()) == []
        assert unit.audit.head() == (0, GENESIS_HASH)


def test_audit_chain_links_entries(store: Store) -> None:
    with store.transaction() as unit:
        first = unit.audit.append(at=NOW, actor="a", action="x.one", details={"n": 1})
        second = unit.audit.append(at=NOW, actor="a", action="x.two", project="p", details={"n": 2})
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash
    with store.transaction(write=False) as unit:
        result = unit.audit.verify()
        assert result.ok
        assert (result.entries, result.head_hash) == (2, second.hash)
        assert [e.seq for e in unit.audit.entries(project="p")] == [2]
        assert [e.details for e in unit.audit.entries(since_seq=1)] == [{"n": 2}]


def test_concurrent_appends_keep_one_unbroken_chain(store: Store) -> None:
    """Writers in parallel threads, each in its own transaction: the chain stays linear and verifiable."""
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            for i in range(10):
                with store.transaction() as unit:
                    unit.audit.append(at=NOW, actor=name, action="x.write", details={"i": i})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with store.transaction(write=False) as unit:
        result = unit.audit.verify()
        assert result.ok, result.problem
        assert result.entries == 40


@pytest.mark.postgres
def test_cli_walk_through_on_postgresql(tre, postgres_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The same commands, with TRE_DATABASE_URL pointing at a real PostgreSQL."""
    monkeypatch.setenv("TRE_DATABASE_URL", postgres_server.create_database())
    commands = [
        ("user", "add", "alice", "--role", "researcher", "-a", "safe-researcher:2027-06-30"),
        ("user", "add", "bob", "--role", "researcher", "-a", "safe-researcher:2027-06-30"),
        ("user", "add", "carol", "--role", "approver"),
        ("dataset", "register", "-f", str(EXAMPLES / "hospital-episodes.dataset.yaml")),
        ("project", "apply", "-f", str(EXAMPLES / "diabetes-outcomes.project.yaml")),
        (
            "project",
            "approve",
            "diabetes-outcomes",
            "--by",
            "carol",
            "--reference",
            "R",
            "--expires",
            "2027-01-01",
            "--agreement",
            "A",
        ),
    ]
    for command in commands:
        result = tre(*command)
        assert result.exit_code == 0, result.stderr
    shown = tre("project", "show", "diabetes-outcomes", "-o", "json")
    assert '"phase": "approved"' in shown.stdout
    verified = tre("audit", "verify")
    assert verified.exit_code == 0
    assert "7 entries" in verified.stdout  # six actions and the phase change to approved
