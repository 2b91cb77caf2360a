"""``tre audit verify`` catches an entry edited, deleted, inserted or reordered directly in the database."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import EXAMPLES, Tre
from tests.support.cli import assert_refused
from tre.store import Store, canonical_json, entry_hash
from tre.store._tables import AuditRow

NOW = "2026-06-01T09:00:00.000000Z"
Tamper = Callable[[Callable[[str], object]], None]


def _forged_row(seq: int, prev_hash: str) -> dict[str, object]:
    """A row whose own hash is right: only its place in the chain can give it away."""
    row = AuditRow(
        seq=seq,
        at=NOW,
        actor="mallory",
        action="user.added",
        project="",
        target="mallory",
        details="{}",
        prev_hash=prev_hash,
    )
    row.hash = entry_hash(row)
    return {
        c: getattr(row, c)
        for c in ("seq", "at", "actor", "action", "project", "target", "details", "prev_hash", "hash")
    }


def _insert(execute: Callable[[str], object], row: dict[str, object]) -> None:
    columns = ", ".join(row)
    values = ", ".join(f"{v}" if isinstance(v, int) else "'" + str(v).replace("'", "''") + "'" for v in row.values())
    execute(f"INSERT INTO audit_log ({columns}) VALUES ({values})")


def edit(execute: Callable[[str], object]) -> None:
    details = canonical_json({"roles": ["admin"]}).replace("'", "''")
    execute(f"UPDATE audit_log SET details = '{details}' WHERE seq = 3")


def edit_actor(execute: Callable[[str], object]) -> None:
    execute("UPDATE audit_log SET actor = 'someone-else' WHERE seq = 3")


def delete(execute: Callable[[str], object]) -> None:
    execute("DELETE FROM audit_log WHERE seq = 3")


def delete_and_renumber(execute: Callable[[str], object]) -> None:
    execute("DELETE FROM audit_log WHERE seq = 3")
    execute("UPDATE audit_log SET seq = seq + 1000 WHERE seq > 3")
    execute("UPDATE audit_log SET seq = seq - 1001 WHERE seq > 1000")


def truncate(execute: Callable[[str], object]) -> None:
    execute("DELETE FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log)")


def reorder(execute: Callable[[str], object]) -> None:
    execute("UPDATE audit_log SET seq = -3 WHERE seq = 3")
    execute("UPDATE audit_log SET seq = 3 WHERE seq = 4")
    execute("UPDATE audit_log SET seq = 4 WHERE seq = -3")


def append_forged(execute: Callable[[str], object]) -> None:
    last_seq, last_hash = execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")  # type: ignore[misc]
    _insert(execute, _forged_row(last_seq + 1, last_hash))


def insert_in_the_middle(execute: Callable[[str], object]) -> None:
    (prev_hash,) = execute("SELECT hash FROM audit_log WHERE seq = 2")  # type: ignore[misc]
    execute("UPDATE audit_log SET seq = seq + 1000 WHERE seq >= 3")
    execute("UPDATE audit_log SET seq = seq - 999 WHERE seq > 1000")
    _insert(execute, _forged_row(3, prev_hash))


# (tampering, first bad entry, words in the message)
CASES = [
    (edit, 3, "entry 3 does not match its hash: it was edited"),
    (edit_actor, 3, "it was edited"),
    (delete, 3, "expected entry 3 but found entry 4"),
    (delete_and_renumber, 3, "entry 3 does not follow entry 2"),
    (truncate, 5, "the log ends at entry 4 but the head records entry 5"),
    (reorder, 3, "entry 3 does not follow entry 2"),
    (append_forged, 6, "entries were added or altered"),
    (insert_in_the_middle, 4, "entry 4 does not follow entry 3"),
]


@pytest.fixture
def logged_store(store: Store) -> Store:
    """A store whose audit log has five entries."""
    for n in range(5):
        with store.transaction() as unit:
            unit.audit.append(at=NOW, actor="admin", action="user.added", target=f"user{n}", details={"n": n})
    return store


@pytest.mark.parametrize(("tamper", "first_bad", "words"), CASES, ids=[c[0].__name__ for c in CASES])
def test_verify_names_the_first_bad_entry(logged_store: Store, tamper: Tamper, first_bad: int, words: str) -> None:
    with logged_store.transaction(write=False) as unit:
        assert unit.audit.verify().ok

    with logged_store.engine.begin() as conn:

        def execute(sql: str) -> object:
            result = conn.execute(sa.text(sql))
            return result.one() if result.returns_rows else None

        tamper(execute)

    with logged_store.transaction(write=False) as unit:
        result = unit.audit.verify()
    assert not result.ok
    assert result.first_bad_seq == first_bad
    assert words in (result.problem or "")


# ---- the same through the command line, with the sqlite3 module on the embedded store ----------------------------


@pytest.fixture
def home_with_log(tre: Tre, isolated_environment: Path) -> Path:
    for name in ("alice", "bob", "carol"):
        assert tre("user", "add", name, "--role", "researcher").exit_code == 0
    assert tre("dataset", "register", "-f", str(EXAMPLES / "hospital-episodes.dataset.yaml")).exit_code == 0
    assert tre("project", "apply", "-f", str(EXAMPLES / "diabetes-outcomes.project.yaml")).exit_code == 0
    return isolated_environment


@pytest.mark.parametrize(("tamper", "first_bad", "words"), CASES, ids=[c[0].__name__ for c in CASES])
def test_cli_verify_fails_after_sqlite3_tampering(
    tre: Tre, home_with_log: Path, tamper: Tamper, first_bad: int, words: str
) -> None:
    intact = tre("audit", "verify")
    assert intact.exit_code == 0
    assert "5 entries" in intact.stdout

    connection = sqlite3.connect(home_with_log / "tre.db")
    with connection:
        tamper(lambda sql: connection.execute(sql).fetchone())
    connection.close()

    assert_refused(tre("audit", "verify"), f"first bad entry {first_bad}", words)
