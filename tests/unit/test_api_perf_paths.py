"""The API's fast paths keep their meaning: a caller is looked up on every call (a revoked token or a changed role
applies at once, whatever is cached), and a page of requests is read from an index, not sorted."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.integration.test_api import NOW, PREFIX, auth, seed
from tre.api import create_app
from tre.spec import Role
from tre.storage import LocalObjectStore
from tre.store import Store, sqlite_url


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], Store]]:
    store = Store(sqlite_url(tmp_path / "tre.db"))
    store.migrate()
    tokens = seed(store)
    with TestClient(create_app(store, LocalObjectStore(tmp_path / "objects"), clock=lambda: NOW)) as client:
        yield client, tokens, store
    store.close()


def listing(client: TestClient, token: str) -> Any:
    return client.get(f"{PREFIX}/requests", headers=auth(token))


def test_a_revoked_token_is_refused_on_the_next_call(api: tuple[TestClient, dict[str, str], Store]) -> None:
    client, tokens, store = api
    assert listing(client, tokens["olive"]).status_code == 200
    with store.transaction() as unit:
        unit.session.execute(sa.text("UPDATE tokens SET revoked_at = 'now' WHERE user_name = 'olive'"))
    response = listing(client, tokens["olive"])
    assert response.status_code == 401
    assert "not valid" in response.json()["detail"]


def test_a_changed_role_applies_on_the_next_call(api: tuple[TestClient, dict[str, str], Store]) -> None:
    client, tokens, store = api
    rid = client.post(
        f"{PREFIX}/requests", json={"project": "diabetes-outcomes", "title": "T"}, headers=auth(tokens["alice"])
    ).json()["id"]
    assert client.get(f"{PREFIX}/requests/{rid}", headers=auth(tokens["olive"])).status_code == 200
    with store.transaction() as unit:
        olive = unit.users.get("olive")
        assert olive is not None
        unit.users.update(olive.model_copy(update={"roles": frozenset({Role.APPROVER})}), now="2026-06-02")
    assert client.get(f"{PREFIX}/requests/{rid}", headers=auth(tokens["olive"])).status_code == 404
    assert listing(client, tokens["olive"]).json() == []


def test_every_view_is_still_audited(api: tuple[TestClient, dict[str, str], Store]) -> None:
    client, tokens, store = api
    rid = client.post(
        f"{PREFIX}/requests", json={"project": "diabetes-outcomes", "title": "T"}, headers=auth(tokens["alice"])
    ).json()["id"]
    for _ in range(3):
        assert client.get(f"{PREFIX}/requests/{rid}", headers=auth(tokens["olive"])).status_code == 200
    with store.transaction(write=False) as unit:
        assert unit.audit.verify().ok
        views = [e for e in unit.audit.entries() if e.action == "airlock.viewed"]
    assert [(e.actor, e.target) for e in views] == [("olive", rid)] * 3


@pytest.mark.parametrize("projects", [None, ["diabetes-outcomes"]])
def test_a_page_of_requests_is_read_from_an_index(tmp_path: Path, projects: list[str] | None) -> None:
    store = Store(sqlite_url(tmp_path / "tre.db"))
    store.migrate()
    seed(store)
    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    with store.transaction(write=False) as unit:
        sa.event.listen(store.engine, "before_cursor_execute", capture)
        unit.airlock.find(projects, limit=100, offset=9_000)
        sa.event.remove(store.engine, "before_cursor_execute", capture)
        statement, parameters = statements[-1]
        plan = " | ".join(
            row[-1] for row in unit.session.connection().exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        )
    store.close()
    assert "TEMP B-TREE" not in plan, plan  # no sort of every request for each page
    assert "ix_airlock_requests_" in plan, plan


def test_listing_is_ordered_and_paged(api: tuple[TestClient, dict[str, str], Store]) -> None:
    client, tokens, _ = api
    created = [
        client.post(
            f"{PREFIX}/requests", json={"project": "diabetes-outcomes", "title": f"T{n}"}, headers=auth(tokens["alice"])
        ).json()["id"]
        for n in range(5)
    ]
    every = [r["id"] for r in listing(client, tokens["olive"]).json()]
    assert sorted(every) == sorted(created)  # same timestamp (a fixed clock): ordered by id
    assert every == sorted(every)
    page = client.get(f"{PREFIX}/requests", params={"limit": 2, "offset": 2}, headers=auth(tokens["olive"])).json()
    assert [r["id"] for r in page] == every[2:4]
    assert dt.datetime.fromisoformat(page[0]["createdAt"].replace("Z", "+00:00")) == NOW
