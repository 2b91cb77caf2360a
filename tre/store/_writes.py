"""Group commit: this process's write transactions take turns on one connection and share their commits.

Every write appends to the audit log, whose head is one row, so writers are serial anyway (SQLite has one writer;
PostgreSQL locks the head row), and each commit waits for the disk. Here writers take turns in arrival order, each
in its own savepoint on one open transaction, so a writer that fails undoes only its own work. A writer that
finishes while others wait hands them the open transaction and waits; the last of the group, or one that finds the
group full or old, commits for all. Nobody returns before the commit that holds its work, and a failed commit fails
every member: durability is unchanged, but one flush to disk serves a group.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import Connection, Engine, RootTransaction
from sqlalchemy.orm import Session

from tre.errors import TemporaryError

MAX_MEMBERS = 64  # writers sharing one commit
MAX_SECONDS = 0.02  # how long a group may stay open for more writers, from its first


@dataclass
class _Group:
    connection: Connection
    transaction: RootTransaction
    started: float
    members: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class WriteQueue:
    """Write transactions of one engine, one at a time in arrival order, committed in groups."""

    def __init__(self, engine: Engine, *, max_members: int = MAX_MEMBERS, max_seconds: float = MAX_SECONDS) -> None:
        self._engine = engine
        self._max_members = max_members
        self._max_seconds = max_seconds
        self._lock = threading.Lock()
        self._queue: deque[threading.Lock] = deque()
        self._busy = False
        self._holder: int | None = None
        self._group: _Group | None = None

    def waiting(self) -> int:
        """How many writers are waiting for their turn."""
        with self._lock:
            return len(self._queue)

    def holds_turn(self) -> bool:
        """Whether this thread is inside one of the queue's transactions (a nested write cannot join it)."""
        return self._holder == threading.get_ident()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose work is committed, with its group's, before the block exits; undone alone on error."""
        self._take_turn()
        try:
            group = self._group or self._open()
        except BaseException:
            self._pass_turn()
            raise
        # The group's first writer needs no savepoint: if it fails, the whole transaction goes, with nothing else in it.
        mode: Literal["rollback_only", "create_savepoint"] = (
            "rollback_only" if not group.members else "create_savepoint"
        )
        group.members += 1
        session = Session(bind=group.connection, expire_on_commit=False, join_transaction_mode=mode)
        try:
            yield session
            session.commit()  # flushes (and releases a savepoint); the group's transaction stays open
        except BaseException:
            self._undo(group, session)
            self._finish(group, failed=True)
            raise
        session.close()
        self._finish(group, failed=False)

    def _take_turn(self) -> None:
        with self._lock:
            if not self._busy:
                self._busy = True
                self._holder = threading.get_ident()
                return
            ready = threading.Lock()
            ready.acquire()
            self._queue.append(ready)
        ready.acquire()  # blocks until the previous writer hands the turn straight to us: first come, first served
        self._holder = threading.get_ident()

    def _pass_turn(self) -> None:
        with self._lock:
            self._holder = None
            if self._queue:
                self._queue.popleft().release()
            else:
                self._busy = False

    def _open(self) -> _Group:
        connection = self._engine.connect()
        try:
            transaction = connection.begin()
        except BaseException:
            connection.close()
            raise
        self._group = _Group(connection, transaction, time.monotonic())
        return self._group

    def _undo(self, group: _Group, session: Session) -> None:
        """Roll back this writer's savepoint (the first writer's: the transaction); if even that fails, the
        connection is unusable: abort the group."""
        try:
            session.rollback()
            session.close()
        except BaseException as error:
            group.error = error

    def _finish(self, group: _Group, *, failed: bool) -> None:
        """Hand the open group to the next writer, or commit it; then wait for the commit holding this work."""
        with self._lock:
            keep_open = (
                group.error is None
                and group.transaction.is_active
                and bool(self._queue)
                and group.members < self._max_members
                and time.monotonic() - group.started < self._max_seconds
            )
        if not keep_open:
            self._close(group)
        self._pass_turn()
        if failed:
            return
        group.done.wait()
        if group.error is not None:
            raise TemporaryError(f"the database could not commit ({group.error}); try again") from group.error

    def _close(self, group: _Group) -> None:
        try:
            if not group.transaction.is_active:
                pass  # its only writer failed and rolled it back
            elif group.error is None:
                group.transaction.commit()
            else:
                group.transaction.rollback()
        except BaseException as error:
            group.error = group.error or error
            group.connection.invalidate()  # in an unknown state: discard it, and the transaction with it
        finally:
            self._group = None
            try:
                group.connection.close()
            finally:
                group.done.set()
