"""The append-only, hash-chained audit log.

Each entry's hash covers its own fields and the previous entry's hash, so editing, deleting, inserting or
reordering entries breaks the chain at the first entry touched. A one-row head records the last entry, so
removing entries from the end is caught too. An attacker who can rewrite the whole database can rebuild
the chain: publish the head (``tre audit head``) somewhere they cannot reach to anchor it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from tre.errors import IntegrityError
from tre.store._tables import AuditHeadRow, AuditRow

GENESIS_HASH = "0" * 64
_HEAD_ID = 1
_HASHED = ("seq", "at", "actor", "action", "project", "target", "details", "prev_hash")  # in this order

# Built once: an append is three statements on the hot path of every audited call (a view is a write).
_HEAD = cast(Table, AuditHeadRow.__table__)
_LOCK_HEAD = select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == _HEAD_ID).with_for_update()
_READ_HEAD = select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == _HEAD_ID)
_INSERT_ENTRY = insert(cast(Table, AuditRow.__table__))
_MOVE_HEAD = update(_HEAD).where(_HEAD.c.id == _HEAD_ID).values(seq=bindparam("new_seq"), hash=bindparam("new_hash"))


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: str
    actor: str
    action: str
    project: str
    target: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "project": self.project,
            "target": self.target,
            "details": self.details,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of checking the chain: ``ok``, how many entries were checked, and the first problem."""

    entries: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(row: AuditRow) -> str:
    """The hash an entry must carry: over every field but the hash itself."""
    return _hash([getattr(row, name) for name in _HASHED])


def _hash(fields: list[Any]) -> str:
    return hashlib.sha256(canonical_json(fields).encode("utf-8")).hexdigest()


def _to_entry(row: AuditRow) -> AuditEntry:
    return AuditEntry(
        seq=row.seq,
        at=row.at,
        actor=row.actor,
        action=row.action,
        project=row.project,
        target=row.target,
        details=json.loads(row.details),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


class AuditLog:
    """Appends and reads entries within the caller's transaction."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def append(
        self,
        *,
        at: str,
        actor: str,
        action: str,
        project: str = "",
        target: str = "",
        details: dict[str, Any],
    ) -> AuditEntry:
        seq, prev_hash = self._locked_head()
        row: dict[str, Any] = {
            "seq": seq + 1,
            "at": at,
            "actor": actor,
            "action": action,
            "project": project,
            "target": target,
            "details": canonical_json(details),
            "prev_hash": prev_hash,
        }
        row["hash"] = _hash([row[name] for name in _HASHED])
        self._session.execute(_INSERT_ENTRY, row)
        self._session.execute(_MOVE_HEAD, {"new_seq": row["seq"], "new_hash": row["hash"]})
        return AuditEntry(**{**row, "details": json.loads(row["details"])})

    def _locked_head(self) -> tuple[int, str]:
        """The head's sequence number and hash, locked until the transaction ends (created by the first migration)."""
        head = self._session.execute(_LOCK_HEAD).one_or_none()
        if head is None:
            raise IntegrityError("the audit log head is missing: the database was altered outside tre")
        return int(head.seq), str(head.hash)

    def entries(self, *, project: str | None = None, since_seq: int = 0) -> Iterator[AuditEntry]:
        query = select(AuditRow).where(AuditRow.seq > since_seq).order_by(AuditRow.seq)
        if project is not None:
            query = query.where(AuditRow.project == project)
        with closing(self._session.scalars(query.execution_options(yield_per=1000))) as rows:
            for row in rows:
                yield _to_entry(row)

    def head(self) -> tuple[int, str]:
        head = self._session.execute(_READ_HEAD).one_or_none()
        return (int(head.seq), str(head.hash)) if head else (0, GENESIS_HASH)

    def verify(self) -> VerifyResult:
        """Walk the chain from the start; report the first entry that breaks it."""
        expected_seq, prev = 1, GENESIS_HASH
        query = select(AuditRow).order_by(AuditRow.seq).execution_options(yield_per=1000)
        with closing(self._session.scalars(query)) as rows:
            for row in rows:
                problem = _first_problem(row, expected_seq, prev)
                if problem:
                    return VerifyResult(expected_seq - 1, prev, first_bad_seq=expected_seq, problem=problem)
                expected_seq, prev = row.seq + 1, row.hash
        return self._verify_head(expected_seq - 1, prev)

    def _verify_head(self, last_seq: int, last_hash: str) -> VerifyResult:
        head_seq, head_hash = self.head()
        if (head_seq, head_hash) == (last_seq, last_hash):
            return VerifyResult(last_seq, last_hash)
        if head_seq > last_seq:
            problem = f"the log ends at entry {last_seq} but the head records entry {head_seq}: entries were removed"
            return VerifyResult(last_seq, last_hash, first_bad_seq=last_seq + 1, problem=problem)
        problem = f"entry {last_seq} is not the recorded head (entry {head_seq}): entries were added or altered"
        return VerifyResult(last_seq, last_hash, first_bad_seq=head_seq + 1, problem=problem)


def _first_problem(row: AuditRow, expected_seq: int, prev_hash: str) -> str | None:
    if row.seq != expected_seq:
        return f"expected entry {expected_seq} but found entry {row.seq}: entries were deleted or inserted"
    if row.prev_hash != prev_hash:
        return f"entry {row.seq} does not follow entry {row.seq - 1}: entries were deleted, inserted or reordered"
    if entry_hash(row) != row.hash:
        return f"entry {row.seq} does not match its hash: it was edited"
    return None
