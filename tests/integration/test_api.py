"""The airlock HTTP API: the whole flow over HTTP, status codes for every refusal, metrics, and no 5xx ever."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from tests.conftest import EXAMPLES
from tre import services
from tre.api import PREFIX, create_app
from tre.services import Actor, ApprovalRequest
from tre.spec import Accreditation, Dataset, Project, Role, User, load
from tre.storage import LocalObjectStore
from tre.store import Store, sqlite_url

NOW = dt.datetime(2026, 6, 1, 9, tzinfo=dt.UTC)
TABLE = b"group,count\nA,25\nB,40\n"
PEOPLE = {
    "alice": {Role.RESEARCHER},
    "bob": {Role.RESEARCHER},
    "olive": {Role.OUTPUT_CHECKER},
    "oscar": {Role.OUTPUT_CHECKER},
    "eve": {Role.RESEARCHER},
    "carol": {Role.APPROVER},
}


def seed(store: Store) -> dict[str, str]:
    operator = Actor.operator("test")
    accreditation = (Accreditation(name="safe-researcher", expires=dt.date(2027, 6, 30)),)
    with store.transaction() as unit:
        for name, roles in PEOPLE.items():
            services.add_user(
                unit, operator, User(name=name, roles=frozenset(roles), accreditations=accreditation), now=NOW
            )
        services.register_dataset(unit, operator, load(Dataset, EXAMPLES / "hospital-episodes.dataset.yaml"), now=NOW)
        services.apply_project(unit, operator, load(Project, EXAMPLES / "diabetes-outcomes.project.yaml"), now=NOW)
        services.approve_project(
            unit,
            operator,
            ApprovalRequest("diabetes-outcomes", "carol", "R", dt.date(2027, 1, 31), "A"),
            now=NOW,
        )
        return {name: services.create_token(unit, operator, name, now=NOW) for name in PEOPLE}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    store = Store(sqlite_url(tmp_path / "tre.db"))
    store.migrate()
    tokens = seed(store)
    app = create_app(store, LocalObjectStore(tmp_path / "objects"), clock=lambda: NOW)
    with TestClient(app) as client:
        yield client, tokens
    store.close()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def call(client: TestClient, method: str, path: str, token: str | None, expected: int, **kwargs: Any) -> Any:
    headers = {**(auth(token) if token else {}), **kwargs.pop("headers", {})}
    if "content" in kwargs:
        headers.setdefault("Content-Type", "application/octet-stream")
    response = client.request(method, PREFIX + path, headers=headers, **kwargs)
    assert response.status_code == expected, response.text
    return response.json() if response.content and "json" in response.headers.get("content-type", "") else response


def test_health_and_openapi(api: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = api
    assert client.get("/healthz").text == "ok"
    paths = client.get("/api/openapi.json").json()["paths"]
    assert f"{PREFIX}/requests/{{request_id}}/votes" in paths


def test_the_whole_flow_over_http(api: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = api
    created = call(
        client, "POST", "/requests", tokens["alice"], 201, json={"project": "diabetes-outcomes", "title": "T"}
    )
    rid = created["id"]
    added = call(
        client,
        "PUT",
        f"/requests/{rid}/files/t.csv?kind=output",
        tokens["alice"],
        201,
        content=TABLE,
        headers={**auth(tokens["alice"]), "Content-Type": "application/octet-stream"},
    )
    assert added["size"] == len(TABLE)
    assert call(client, "POST", f"/requests/{rid}/submit", tokens["alice"], 200)["state"] == "in-review"
    assert call(client, "GET", f"/requests/{rid}/files/t.csv", tokens["olive"], 200).content == TABLE
    (item,) = call(client, "GET", f"/requests/{rid}", tokens["olive"], 200)["files"]
    assert (item["status"], item["evidence"]) == ("review", "none")  # not declared a table of counts
    approve = {"file": "t.csv", "vote": "approve"}
    call(client, "POST", f"/requests/{rid}/votes", tokens["olive"], 409, json=approve)  # needs an override first
    reason = {"file": "t.csv", "rule": "evidence", "rationale": "counts by group; code shows n >= 25 per group"}
    for checker in ("olive", "oscar"):
        added = call(client, "POST", f"/requests/{rid}/overrides", tokens[checker], 201, json=reason)
        assert (added["rule"], added["status"]) == ("evidence", "review")
    call(client, "POST", f"/requests/{rid}/votes", tokens["olive"], 200, json=approve)
    assert call(client, "GET", f"/requests/{rid}", tokens["oscar"], 200)["votes"] == []  # blind
    final = call(client, "POST", f"/requests/{rid}/votes", tokens["oscar"], 200, json=approve)
    assert final["state"] == "released"
    assert [r["id"] for r in call(client, "GET", "/requests", tokens["bob"], 200)] == [rid]
    assert call(client, "GET", "/requests", tokens["eve"], 200) == []
    metrics = client.get("/metrics").text
    assert 'tre_airlock_requests{state="released"} 1.0' in metrics
    assert "tre_airlock_decision_seconds_count 1.0" in metrics
    assert 'tre_airlock_overrides_total{rule="evidence"} 2.0' in metrics
    assert 'tre_projects{phase="approved"} 1.0' in metrics


def test_refusals_have_the_right_status(api: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = api
    call(client, "GET", "/requests", None, 401)
    call(client, "GET", "/requests", "tre_forged", 401)
    call(client, "POST", "/requests", tokens["eve"], 403, json={"project": "diabetes-outcomes", "title": "T"})
    call(client, "POST", "/requests", tokens["alice"], 422, json={"project": "diabetes-outcomes"})
    call(client, "POST", "/requests", tokens["alice"], 422, json={"project": "p", "title": "T", "extra": 1})
    rid = call(client, "POST", "/requests", tokens["alice"], 201, json={"project": "diabetes-outcomes", "title": "T"})[
        "id"
    ]
    call(client, "GET", f"/requests/{rid}", tokens["eve"], 404)
    call(client, "GET", "/requests/ar-nope", tokens["alice"], 404)
    call(
        client, "PUT", f"/requests/{rid}/files/..%2Fx.csv?kind=output", tokens["alice"], 404, content=TABLE
    )  # no route
    call(client, "PUT", f"/requests/{rid}/files/..%5Cx.csv?kind=output", tokens["alice"], 422, content=TABLE)
    call(client, "PUT", f"/requests/{rid}/files/.env?kind=output", tokens["alice"], 422, content=TABLE)
    call(client, "PUT", f"/requests/{rid}/files/t.csv?kind=output", tokens["alice"], 422, content=b"")
    call(client, "POST", f"/requests/{rid}/submit", tokens["alice"], 422)  # no output file
    call(client, "PUT", f"/requests/{rid}/files/t.csv?kind=output&table=means", tokens["alice"], 422, content=TABLE)
    added = call(
        client, "PUT", f"/requests/{rid}/files/t.csv?kind=output&table=frequency", tokens["alice"], 201, content=TABLE
    )
    assert added["table"] == "frequency"
    call(client, "POST", f"/requests/{rid}/votes", tokens["olive"], 409, json={"file": "t.csv", "vote": "approve"})
    call(client, "POST", f"/requests/{rid}/submit", tokens["bob"], 403)
    call(client, "POST", f"/requests/{rid}/submit", tokens["alice"], 200)
    call(client, "POST", f"/requests/{rid}/votes", tokens["bob"], 403, json={"file": "t.csv", "vote": "approve"})
    call(client, "POST", f"/requests/{rid}/votes", tokens["olive"], 422, json={"file": "t.csv", "vote": "reject"})
    override = {"file": "t.csv", "rule": "evidence", "rationale": "why"}
    call(client, "POST", f"/requests/{rid}/overrides", tokens["bob"], 403, json=override)
    call(client, "POST", f"/requests/{rid}/overrides", tokens["olive"], 422, json={**override, "rationale": " "})
    call(client, "POST", f"/requests/{rid}/overrides", tokens["olive"], 422, json={**override, "rule": "zeros"})
    call(client, "POST", f"/requests/{rid}/overrides", tokens["olive"], 404, json={**override, "file": "x.csv"})
    call(client, "POST", f"/requests/{rid}/revoke", tokens["olive"], 409, json={"reason": "x"})


@pytest.fixture
def app_for_schemathesis(tmp_path: Path) -> Iterator[FastAPI]:
    store = Store(sqlite_url(tmp_path / "tre.db"))
    store.migrate()
    tokens = seed(store)
    app = create_app(store, LocalObjectStore(tmp_path / "objects"), clock=lambda: NOW)
    app.state.token = tokens["alice"]
    with TestClient(app) as client:  # a real request for generated cases to act on
        created = client.post(
            f"{PREFIX}/requests", json={"project": "diabetes-outcomes", "title": "T"}, headers=auth(tokens["alice"])
        )
        app.state.request_id = created.json()["id"]
    yield app
    store.close()


def test_no_input_makes_the_api_fail_with_a_5xx(app_for_schemathesis: FastAPI) -> None:
    """Schemathesis generates requests for every operation in the OpenAPI document; none may get a 5xx."""
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", app_for_schemathesis)
    token = app_for_schemathesis.state.token
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def no_server_error(case: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
            # Aim generated values at real objects, so they reach the handlers' logic rather than a 404.
            if case.path_parameters and "request_id" in case.path_parameters:
                case.path_parameters["request_id"] = app_for_schemathesis.state.request_id
            if isinstance(case.body, dict) and "project" in case.body:
                case.body["project"] = "diabetes-outcomes"
            response = case.call()
            assert response.status_code < 500, (case.method, case.formatted_path, response.status_code, response.text)

        no_server_error()
