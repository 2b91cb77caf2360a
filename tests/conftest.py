"""Shared fixtures: isolated settings, the CLI, and stores on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from tests.support import openbao, postgres, radosgw
from tre.cli import _context, app
from tre.store import Store, sqlite_url

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
REQUIRE_POSTGRES = os.environ.get("TRE_TEST_REQUIRE_POSTGRES") == "1"
REQUIRE_OPENBAO = os.environ.get("TRE_TEST_REQUIRE_OPENBAO") == "1"
REQUIRE_RADOSGW = os.environ.get("TRE_TEST_REQUIRE_RADOSGW") == "1"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--cluster", action="store_true", help="run tests/e2e against the current kube context")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--cluster"):
        return
    skip = pytest.mark.skip(reason="needs a live cluster: pass --cluster")
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own TRE_HOME and no ambient identity or database."""
    home = tmp_path / "tre-home"
    monkeypatch.setenv("TRE_HOME", str(home))
    for variable in ("TRE_TOKEN", "TRE_DATABASE_URL", "TRE_ENVIRONMENT"):
        monkeypatch.delenv(variable, raising=False)
    return home


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[postgres.PostgresServer]:
    try:
        server = postgres.start_server()
    except (FileNotFoundError, OSError) as exc:
        if REQUIRE_POSTGRES:
            raise
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def bao() -> Iterator[openbao.OpenBaoServer]:
    """A real OpenBao dev server on a loopback port, shared by the session."""
    try:
        server = openbao.start_server()
    except FileNotFoundError as exc:
        if REQUIRE_OPENBAO:
            pytest.fail(f"TRE_TEST_REQUIRE_OPENBAO=1 but OpenBao is unavailable: {exc}")
        pytest.skip(f"OpenBao is unavailable: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rgw() -> Iterator[radosgw.RadosgwServer]:
    """A real S3 server (Ceph radosgw on a one-node memstore cluster): checks signatures, enforces object lock."""
    try:
        server = radosgw.start_server()
    except FileNotFoundError as exc:
        if REQUIRE_RADOSGW:
            pytest.fail(f"TRE_TEST_REQUIRE_RADOSGW=1 but {exc}")
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "store.db")
    server: postgres.PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    store = Store(store_url)
    store.migrate()
    yield store
    store.close()


class Clock:
    """A settable clock for the CLI."""

    def __init__(self) -> None:
        self.moment = dt.datetime(2026, 6, 1, 9, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.moment

    def advance(self, **delta: float) -> None:
        self.moment += dt.timedelta(**delta)

    @property
    def today(self) -> dt.date:
        return self.moment.date()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(_context, "clock", fake)
    return fake


Tre = Callable[..., Result]


@pytest.fixture
def tre(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> Tre:
    """Run ``tre`` in-process: ``tre("project", "list", token=...)``."""
    runner = CliRunner()

    def invoke(*args: str, token: str | None = None) -> Result:
        if token is None:
            monkeypatch.delenv("TRE_TOKEN", raising=False)
        else:
            monkeypatch.setenv("TRE_TOKEN", token)
        return runner.invoke(app, list(args), catch_exceptions=False)

    return invoke
