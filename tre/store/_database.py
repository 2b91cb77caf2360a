"""Opening the store: the engine, migrations to the current schema, and transactions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import ResolutionError
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from tre.errors import IntegrityError, TemporaryError
from tre.store._airlock import AirlockRepository
from tre.store._audit import AuditLog
from tre.store._repositories import (
    ApprovalRepository,
    DatasetRepository,
    ExtractRepository,
    OptOutRepository,
    ProjectRepository,
    TokenRepository,
    UserRepository,
)
from tre.store._writes import WriteQueue

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_S = 30


@dataclass
class Unit:
    """The repositories and audit log of one transaction."""

    session: Session
    users: UserRepository
    tokens: TokenRepository
    datasets: DatasetRepository
    projects: ProjectRepository
    approvals: ApprovalRepository
    optouts: OptOutRepository
    extracts: ExtractRepository
    airlock: AirlockRepository
    audit: AuditLog


def _make_unit(session: Session) -> Unit:
    return Unit(
        session=session,
        users=UserRepository(session),
        tokens=TokenRepository(session),
        datasets=DatasetRepository(session),
        projects=ProjectRepository(session),
        approvals=ApprovalRepository(session),
        optouts=OptOutRepository(session),
        extracts=ExtractRepository(session),
        airlock=AirlockRepository(session),
        audit=AuditLog(session),
    )


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front, so two writers never both read the audit head.
        immediate = conn.get_execution_options().get("tre_write", True)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    return create_engine(url, pool_pre_ping=True)


def sqlite_url(path: Path) -> str:
    return f"sqlite+pysqlite:///{path}"


class Store:
    """The TRE's state: open it with a URL, then do all work inside ``transaction()``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.writes = WriteQueue(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def migrate(self) -> None:
        """Bring the schema to this version's head; refuse a database from a newer version."""
        with _translated_errors(self.url), self.engine.begin() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
            script = ScriptDirectory.from_config(_alembic_config())
            if current is not None and not _known(script, current):
                raise IntegrityError(_newer_message(current, script.get_current_head()))
            config = _alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Unit]:
        """One atomic unit of work: committed on success (before the block exits), rolled back on any error.

        This process's writers take turns and share commits (see _writes); a write inside a write stands alone."""
        if write and not self.writes.holds_turn():
            with _translated_errors(self.url), self.writes.session() as session:
                yield _make_unit(session)
                session.flush()
            return
        with _translated_errors(self.url), self.engine.connect() as conn:
            conn.execution_options(tre_write=write)
            with conn.begin(), Session(bind=conn, expire_on_commit=False) as session:
                yield _make_unit(session)
                session.flush()


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _known(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except (ResolutionError, CommandError):
        return False


def _newer_message(current: str, head: str | None) -> str:
    return (
        f"the database schema is at revision {current}, which this version of tre does not know "
        f"(its newest is {head}); it was written by a newer tre: upgrade tre to use it"
    )


@contextmanager
def _translated_errors(url: str) -> Iterator[None]:
    try:
        yield
    except OperationalError as exc:
        if "database is locked" in str(exc) or "could not connect" in str(exc) or "Connection refused" in str(exc):
            raise TemporaryError(f"the database at {_redact(url)} is unavailable ({exc.orig}); try again") from exc
        raise


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()
