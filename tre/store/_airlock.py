"""Storage of airlock requests, their files, ballots, check results and overrides, and projects' disclosure rules."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import delete, func, select
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


class AirlockRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def create(self, request: StoredRequest) -> None:
        fields = {k: v for k, v in request.__dict__.items() if k != "project"}
        self._session.add(AirlockRequestRow(project_name=request.project, **fields))
        self._session.flush()

    def get(self, request_id: str) -> StoredRequest | None:
        row = self._session.get(AirlockRequestRow, request_id)
        return _request(row) if row else None

    def find(
        self,
        projects: Iterable[str] | None = None,
        *,
        state: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[StoredRequest]:
        """Requests, oldest first; only those of ``projects`` or in ``state`` when given; a page when ``limit`` is."""
        query = select(AirlockRequestRow).order_by(AirlockRequestRow.created_at, AirlockRequestRow.id)
        if state is not None:
            query = query.where(AirlockRequestRow.state == state)
        if projects is not None:
            query = query.where(AirlockRequestRow.project_name.in_(list(projects)))
        if limit is not None:
            query = query.limit(limit).offset(offset)
        return [_request(r) for r in self._session.scalars(query)]

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
        row = self._session.get_one(AirlockRequestRow, request_id)
        row.state = state if state is not None else row.state
        row.round = round if round is not None else row.round
        if submitted_fingerprint is not None:
            row.submitted_fingerprint = submitted_fingerprint
        if rules is not None:
            row.rules = rules
        row.updated_at = now
        self._session.flush()

    def put_file(self, request_id: str, item: StoredFile) -> None:
        """Add a file, or replace the one with the same name."""
        self.remove_file(request_id, item.name)
        self._session.add(AirlockFileRow(request_id=request_id, **item.__dict__))
        self._session.flush()

    def remove_file(self, request_id: str, name: str) -> bool:
        query = delete(AirlockFileRow).where(AirlockFileRow.request_id == request_id, AirlockFileRow.name == name)
        removed = self._session.execute(query).rowcount  # type: ignore[attr-defined]
        self._session.flush()
        return bool(removed)

    def files(self, request_id: str) -> list[StoredFile]:
        query = select(AirlockFileRow).where(AirlockFileRow.request_id == request_id).order_by(AirlockFileRow.name)
        return [
            StoredFile(r.name, r.kind, r.sha256, r.size, r.object_key, r.added_at, r.table_kind)
            for r in self._session.scalars(query)
        ]

    def add_ballot(self, request_id: str, ballot: StoredBallot) -> None:
        self._session.add(AirlockBallotRow(request_id=request_id, **ballot.__dict__))
        self._session.flush()

    def ballots(self, request_id: str, round: int | None = None) -> list[StoredBallot]:
        query = select(AirlockBallotRow).where(AirlockBallotRow.request_id == request_id)
        if round is not None:
            query = query.where(AirlockBallotRow.round == round)
        rows = self._session.scalars(query.order_by(AirlockBallotRow.id))
        return [StoredBallot(r.round, r.checker, r.file, r.vote, r.comment, r.shared, r.at) for r in rows]

    def add_check(self, request_id: str, check: StoredCheck) -> None:
        self._session.add(AirlockCheckRow(request_id=request_id, **check.__dict__))
        self._session.flush()

    def add_override(self, request_id: str, override: StoredOverride) -> None:
        self._session.add(AirlockOverrideRow(request_id=request_id, **override.__dict__))
        self._session.flush()

    def overrides(self, request_id: str, round: int) -> list[StoredOverride]:
        query = select(AirlockOverrideRow).where(
            AirlockOverrideRow.request_id == request_id, AirlockOverrideRow.round == round
        )
        rows = self._session.scalars(query.order_by(AirlockOverrideRow.id))
        return [StoredOverride(r.round, r.file, r.rule, r.status, r.checker, r.rationale, r.at) for r in rows]

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
        query = select(AirlockCheckRow).where(AirlockCheckRow.request_id == request_id, AirlockCheckRow.round == round)
        rows = self._session.scalars(query.order_by(AirlockCheckRow.id))
        return [StoredCheck(r.round, r.file, r.rule, r.status, r.detail) for r in rows]


def _request(row: AirlockRequestRow) -> StoredRequest:
    return StoredRequest(
        row.id,
        row.project_name,
        row.author,
        row.title,
        row.context,
        row.controls,
        row.state,
        row.round,
        row.created_at,
        row.updated_at,
        row.submitted_fingerprint,
        row.rules,
    )


def _count_by_state(session: Session) -> dict[str, int]:
    query = select(AirlockRequestRow.state, func.count()).group_by(AirlockRequestRow.state)
    return {str(state): int(count) for state, count in session.execute(query)}


def _failed_checks_by_rule(session: Session) -> dict[str, int]:
    failed = select(AirlockCheckRow.rule, func.count()).where(AirlockCheckRow.status == "fail")
    query = failed.group_by(AirlockCheckRow.rule)
    return {str(rule): int(count) for rule, count in session.execute(query)}
