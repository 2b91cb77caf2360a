"""Storage of airlock requests, their files, ballots, check results and overrides, and projects' disclosure rules."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Column, Integer, String, Table, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import NoResultFound
from sqlalchemy.orm import Session

from tre.store._tables import (
    AirlockBallotRow,
    AirlockCheckRow,
    AirlockFileRow,
    AirlockOverrideRow,
    AirlockProjectRulesRow,
    AirlockRequestRow,
)


@dataclass(frozen=True)
class StoredRequest:
    id: str
    project: str
    author: str
    title: str
    context: str
    controls: str
    state: str
    round: int
    created_at: str
    updated_at: str
    submitted_fingerprint: str = ""  # what the files were at the last submission (see airlock.service.submit)
    rules: str = ""  # the disclosure rules (JSON) the last submission was checked under


@dataclass(frozen=True)
class StoredFile:
    name: str
    kind: str
    sha256: str
    size: int
    object_key: str
    added_at: str
    table_kind: str | None = None  # the author's declaration, e.g. "frequency"


@dataclass(frozen=True)
class StoredBallot:
    round: int
    checker: str
    file: str
    vote: str
    comment: str | None
    shared: bool
    at: str


@dataclass(frozen=True)
class StoredCheck:
    round: int
    file: str
    rule: str
    status: str
    detail: str


@dataclass(frozen=True)
class StoredOverride:
    round: int
    file: str
    rule: str
    status: str  # the automated result overridden: fail or review
    checker: str
    rationale: str
    at: str


@dataclass(frozen=True)
class StoredRules:
    project: str
    rules: str  # JSON
    set_by: str
    set_at: str


# Statements built once with bound parameters: the airlock's reads are on the hot path of every API call.
_REQUESTS = cast(Table, AirlockRequestRow.__table__)
_FILES = cast(Table, AirlockFileRow.__table__)
_BALLOTS = cast(Table, AirlockBallotRow.__table__)
_CHECKS = cast(Table, AirlockCheckRow.__table__)
_OVERRIDES = cast(Table, AirlockOverrideRow.__table__)
_REQUEST_COLUMNS = [  # StoredRequest's fields, in order
    _REQUESTS.c.id,
    _REQUESTS.c.project_name.label("project"),
    _REQUESTS.c.author,
    _REQUESTS.c.title,
    _REQUESTS.c.context,
    _REQUESTS.c.controls,
    _REQUESTS.c.state,
    _REQUESTS.c.round,
    _REQUESTS.c.created_at,
    _REQUESTS.c.updated_at,
    _REQUESTS.c.submitted_fingerprint,
    _REQUESTS.c.rules,
]
_LISTING = select(*_REQUEST_COLUMNS).order_by(_REQUESTS.c.created_at, _REQUESTS.c.id)
_GET_REQUEST = select(*_REQUEST_COLUMNS).where(_REQUESTS.c.id == bindparam("request_id"))
_OF_REQUEST = bindparam("request_id", type_=String)
_OF_ROUND = bindparam("round", type_=Integer)


def _columns(table: Table, record: type) -> list[Column[Any]]:
    """The table's columns for the dataclass's fields, in order, to build it from a row."""
    return [table.c[f.name] for f in dataclasses.fields(record)]


_FILES_OF = select(*_columns(_FILES, StoredFile)).where(_FILES.c.request_id == _OF_REQUEST).order_by(_FILES.c.name)
_REMOVE_FILE = delete(_FILES).where(_FILES.c.request_id == _OF_REQUEST, _FILES.c.name == bindparam("file"))
_ALL_BALLOTS_OF = select(*_columns(_BALLOTS, StoredBallot)).where(_BALLOTS.c.request_id == _OF_REQUEST)
_BALLOTS_OF_ROUND = _ALL_BALLOTS_OF.where(_BALLOTS.c.round == _OF_ROUND).order_by(_BALLOTS.c.id)
_ALL_BALLOTS_OF = _ALL_BALLOTS_OF.order_by(_BALLOTS.c.id)
_CHECKS_OF = (
    select(*_columns(_CHECKS, StoredCheck))
    .where(_CHECKS.c.request_id == _OF_REQUEST, _CHECKS.c.round == _OF_ROUND)
    .order_by(_CHECKS.c.id)
)
_OVERRIDES_OF = (
    select(*_columns(_OVERRIDES, StoredOverride))
    .where(_OVERRIDES.c.request_id == _OF_REQUEST, _OVERRIDES.c.round == _OF_ROUND)
    .order_by(_OVERRIDES.c.id)
)


class AirlockRepository:
    """Airlock rows in and out as plain dataclasses, with Core statements (no ORM objects to keep in step)."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def create(self, request: StoredRequest) -> None:
        fields = {k: v for k, v in dataclasses.asdict(request).items() if k != "project"}
        self._session.execute(insert(_REQUESTS), {"project_name": request.project, **fields})

    def get(self, request_id: str) -> StoredRequest | None:
        row = self._session.execute(_GET_REQUEST, {"request_id": request_id}).one_or_none()
        return StoredRequest(*row) if row else None

    def find(
        self,
        projects: Iterable[str] | None = None,
        *,
        state: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[StoredRequest]:
        """Requests, oldest first; only those of ``projects`` or in ``state`` when given; a page when ``limit`` is."""
        query = _LISTING
        if state is not None:
            query = query.where(_REQUESTS.c.state == state)
        if projects is not None:
            query = query.where(_REQUESTS.c.project_name.in_(list(projects)))
        if limit is not None:
            query = query.limit(limit).offset(offset)
        return [StoredRequest(*row) for row in self._session.execute(query).all()]

    def update(
        self,
        request_id: str,
        *,
        now: str,
        state: str | None = None,
        round: int | None = None,
        submitted_fingerprint: str | None = None,
        rules: str | None = None,
    ) -> None:
        changes = {"state": state, "round": round, "submitted_fingerprint": submitted_fingerprint, "rules": rules}
        values = {name: value for name, value in changes.items() if value is not None}
        query = update(_REQUESTS).where(_REQUESTS.c.id == request_id).values(updated_at=now, **values)
        if self._session.execute(query).rowcount != 1:  # type: ignore[attr-defined]
            raise NoResultFound(f"no airlock request {request_id} to update")

    def put_file(self, request_id: str, item: StoredFile) -> None:
        """Add a file, or replace the one with the same name."""
        self.remove_file(request_id, item.name)
        self._session.execute(insert(_FILES), {"request_id": request_id, **dataclasses.asdict(item)})

    def remove_file(self, request_id: str, name: str) -> bool:
        result = self._session.execute(_REMOVE_FILE, {"request_id": request_id, "file": name})
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def files(self, request_id: str) -> list[StoredFile]:
        return [StoredFile(*row) for row in self._session.execute(_FILES_OF, {"request_id": request_id})]

    def add_ballot(self, request_id: str, ballot: StoredBallot) -> None:
        self._session.execute(insert(_BALLOTS), {"request_id": request_id, **dataclasses.asdict(ballot)})

    def ballots(self, request_id: str, round: int | None = None) -> list[StoredBallot]:
        if round is None:
            rows = self._session.execute(_ALL_BALLOTS_OF, {"request_id": request_id})
        else:
            rows = self._session.execute(_BALLOTS_OF_ROUND, {"request_id": request_id, "round": round})
        return [StoredBallot(*row) for row in rows]

    def add_check(self, request_id: str, check: StoredCheck) -> None:
        self._session.execute(insert(_CHECKS), {"request_id": request_id, **dataclasses.asdict(check)})

    def add_override(self, request_id: str, override: StoredOverride) -> None:
        self._session.execute(insert(_OVERRIDES), {"request_id": request_id, **dataclasses.asdict(override)})

    def overrides(self, request_id: str, round: int) -> list[StoredOverride]:
        rows = self._session.execute(_OVERRIDES_OF, {"request_id": request_id, "round": round})
        return [StoredOverride(*row) for row in rows]

    def overrides_by_rule(self) -> dict[str, int]:
        query = select(AirlockOverrideRow.rule, func.count()).group_by(AirlockOverrideRow.rule)
        return {str(rule): int(count) for rule, count in self._session.execute(query)}

    def project_rules(self, project: str) -> StoredRules | None:
        row = self._session.get(AirlockProjectRulesRow, project)
        return StoredRules(row.project_name, row.rules, row.set_by, row.set_at) if row else None

    def set_project_rules(self, project: str, rules: StoredRules | None) -> None:
        """Choose a project's rules, or (None) go back to the default."""
        row = self._session.get(AirlockProjectRulesRow, project)
        if row is not None:
            self._session.delete(row)
            self._session.flush()
        if rules is not None:
            self._session.add(
                AirlockProjectRulesRow(
                    project_name=rules.project, rules=rules.rules, set_by=rules.set_by, set_at=rules.set_at
                )
            )
        self._session.flush()

    def count_by_state(self) -> dict[str, int]:
        return _count_by_state(self._session)

    def failed_checks_by_rule(self) -> dict[str, int]:
        return _failed_checks_by_rule(self._session)

    def checks(self, request_id: str, round: int) -> list[StoredCheck]:
        rows = self._session.execute(_CHECKS_OF, {"request_id": request_id, "round": round})
        return [StoredCheck(*row) for row in rows]


def _count_by_state(session: Session) -> dict[str, int]:
    query = select(AirlockRequestRow.state, func.count()).group_by(AirlockRequestRow.state)
    return {str(state): int(count) for state, count in session.execute(query)}


def _failed_checks_by_rule(session: Session) -> dict[str, int]:
    failed = select(AirlockCheckRow.rule, func.count()).where(AirlockCheckRow.status == "fail")
    query = failed.group_by(AirlockCheckRow.rule)
    return {str(rule): int(count) for rule, count in session.execute(query)}
