"""Group commit (tre.store._writes) on SQLite and PostgreSQL: writers that wait share one commit, nobody returns
before the commit that holds their work, a failing writer is undone alone, and a failed commit fails everyone."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Connection, event

from tre.errors import TemporaryError
from tre.store import Store

NOW = "2026-06-01T09:00:00.000000Z"


def until(condition: Callable[[], bool]) -> None:
    """Wait for another thread to get somewhere (a synchronisation guard, not a speed check)."""
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, "the other threads never got there"
        time.sleep(0.001)


def append(store: Store, actor: str, *, fail: bool = False) -> None:
    with store.transaction() as unit:
        unit.audit.append(at=NOW, actor=actor, action="x.write", details={})
        if fail:
            raise ValueError(f"{actor} failed")


def actors(store: Store) -> list[str]:
    with store.transaction(write=False) as unit:
        assert unit.audit.verify().ok
        return [e.actor for e in unit.audit.entries()]


@contextmanager
def commits_counted(store: Store, returned: list[str] | None = None) -> Iterator[list[list[str]]]:
    """Each commit, recorded as the writers in ``returned`` that had returned by then."""
    seen: list[list[str]] = []

    def on_commit(_conn: Connection) -> None:
        seen.append(list(returned or []))

    event.listen(store.engine, "commit", on_commit)
    try:
        yield seen
    finally:
        event.remove(store.engine, "commit", on_commit)


class Group:
    """A first writer that holds its turn until others queue behind it, then lets them all go."""

    def __init__(self, store: Store, *, first_fails: bool = False) -> None:
        self.store = store
        self.first_fails = first_fails
        self.inside, self.go = threading.Event(), threading.Event()
        self.returned: list[str] = []
        self.errors: dict[str, BaseException] = {}
        self.threads: list[threading.Thread] = []

    def first(self) -> None:
        try:
            with self.store.transaction() as unit:
                unit.audit.append(at=NOW, actor="first", action="x.write", details={})
                self.inside.set()
                self.go.wait()
                if self.first_fails:
                    raise ValueError("first failed")
            self.returned.append("first")
        except BaseException as error:
            self.errors["first"] = error

    def writer(self, name: str, fail: bool) -> None:
        try:
            append(self.store, name, fail=fail)
            self.returned.append(name)
        except BaseException as error:
            self.errors[name] = error

    def run(self, others: dict[str, bool]) -> None:
        self.start(threading.Thread(target=self.first))
        self.inside.wait()
        for queued, (name, fail) in enumerate(others.items(), start=1):
            self.start(threading.Thread(target=self.writer, args=(name, fail)))
            until(lambda queued=queued: self.store.writes.waiting() == queued)
        assert self.returned == []
        self.go.set()
        for thread in self.threads:
            thread.join()

    def start(self, thread: threading.Thread) -> None:
        self.threads.append(thread)
        thread.start()


def test_a_lone_writer_commits_at_once(store: Store) -> None:
    with commits_counted(store) as commits:
        append(store, "a")
        assert len(commits) == 1
        append(store, "b")
        assert len(commits) == 2
    assert actors(store) == ["a", "b"]


def test_writers_that_wait_share_one_commit_and_return_after_it(store: Store) -> None:
    group = Group(store)
    with commits_counted(store, group.returned) as commits:
        group.run({"second": False, "third": False})
    assert commits == [[]]  # one commit, before any writer returned
    assert group.errors == {}
    assert sorted(group.returned) == ["first", "second", "third"]
    assert actors(store) == ["first", "second", "third"]  # in arrival order, one unbroken chain


def test_a_failing_writer_is_undone_alone(store: Store) -> None:
    group = Group(store)
    with commits_counted(store) as commits:
        group.run({"second": True, "third": False})
    assert len(commits) == 1
    assert str(group.errors["second"]) == "second failed"
    assert actors(store) == ["first", "third"]


def test_a_failing_first_writer_is_undone_alone(store: Store) -> None:
    group = Group(store, first_fails=True)
    with commits_counted(store) as commits:
        group.run({"second": False, "third": False})
    assert len(commits) == 1  # the others make a group of their own
    assert str(group.errors["first"]) == "first failed"
    assert sorted(group.returned) == ["second", "third"]
    assert actors(store) == ["second", "third"]


def test_a_failed_commit_fails_every_writer_and_keeps_nothing(store: Store) -> None:
    def refuse(_conn: Connection) -> None:
        event.remove(store.engine, "commit", refuse)  # the next group commits normally
        raise OSError("disk gone")

    event.listen(store.engine, "commit", refuse)
    group = Group(store)
    group.run({"second": False})
    assert group.returned == []
    assert set(group.errors) == {"first", "second"}
    for error in group.errors.values():
        assert isinstance(error, TemporaryError)
        assert "could not commit" in str(error)
        assert "disk gone" in str(error)
    append(store, "later")
    assert actors(store) == ["later"]


def test_the_first_writer_of_a_failed_group_raises_too(store: Store) -> None:
    def refuse(_conn: Connection) -> None:
        event.remove(store.engine, "commit", refuse)
        raise OSError("disk gone")

    event.listen(store.engine, "commit", refuse)
    with pytest.raises(TemporaryError, match=r"could not commit \(disk gone\)"):
        append(store, "alone")
    assert actors(store) == []


def test_a_read_inside_a_write_sees_the_last_commit(store: Store) -> None:
    append(store, "before")
    with store.transaction() as unit:
        unit.audit.append(at=NOW, actor="inside", action="x.write", details={})
        assert unit.audit.head()[0] == 2  # the writer sees its own append
        with store.transaction(write=False) as other:
            assert other.audit.head()[0] == 1  # another transaction does not, until the commit
    assert actors(store) == ["before", "inside"]
