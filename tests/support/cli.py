"""Helpers for driving the CLI in tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Protocol

from typer.testing import Result


class Tre(Protocol):
    """The ``tre`` fixture: runs the CLI in-process, optionally as a token's user."""

    def __call__(self, *args: str, token: str | None = None) -> Result: ...


EXAMPLE_PROJECT = "diabetes-outcomes"


def ok(tre: Tre, *args: str, token: str | None = None) -> str:
    """Run a command that must succeed; its standard output, stripped."""
    result = tre(*args, token=token)
    assert result.exit_code == 0, (args, result.stdout, result.stderr)
    return result.stdout.strip()


def approve_example(tre: Tre, *, by: str = "carol", expires: str = "2027-01-31") -> str:
    """Record an approval of the example project (approver, reference, expiry, agreement)."""
    return ok(
        tre, "project", "approve", EXAMPLE_PROJECT, "--by", by, "--reference", "R", "--expires", expires,
        "--agreement", "A",
    )  # fmt: skip


def database_dump(home: Path) -> list[str]:
    """Every statement needed to rebuild the embedded SQLite store: equal dumps mean nothing changed."""
    connection = sqlite3.connect(home / "tre.db")
    try:
        return list(connection.iterdump())
    finally:
        connection.close()


def assert_refused(result: Result, *fragments: str) -> None:
    """Exit 1, nothing on stdout, one line on stderr starting 'error:' and containing each fragment."""
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
