"""Helpers for driving the CLI in tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from typer.testing import Result


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
