"""Repositories: load and save domain objects inside one transaction. No business rules here."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from tre.spec import Approval, Dataset, Project, User
from tre.store._tables import (
    ApprovalRow,
    DatasetRow,
    ExtractRow,
    OptOutVersionRow,
    ProjectRow,
    TokenRow,
    UserRow,
)


@dataclass(frozen=True)
class StoredProject:
    """A project declaration with what the store knows about it."""

    project: Project
    generation: int
    phase: str
    created_at: str
    updated_at: str

    @property
    def name(self) -> str:
        return self.project.name


@dataclass(frozen=True)
class StoredDataset:
    dataset: Dataset
    generation: int
    created_at: str
    updated_at: str


# Parsed declarations, by their stored JSON: the models are frozen, so one parse serves every caller until the
# record changes (a changed record is a new key). Every API call reads its caller and a project.
_user = lru_cache(maxsize=1024)(User.model_validate_json)
_project = lru_cache(maxsize=1024)(Project.model_validate_json)
_USER_OF_TOKEN = (
    select(UserRow.record)
    .join(TokenRow, TokenRow.user_name == UserRow.name)
    .where(TokenRow.digest == bindparam("digest"), TokenRow.revoked_at.is_(None))
)


class UserRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def get(self, name: str) -> User | None:
        record = self._session.scalar(select(UserRow.record).where(UserRow.name == name))
        return _user(record) if record is not None else None

    def for_token(self, token: str) -> User | None:
        """The user a live (unrevoked) token belongs to, or None: one query."""
        record = self._session.scalar(_USER_OF_TOKEN, {"digest": TokenRepository.digest(token)})
        return _user(record) if record is not None else None

    def all(self) -> list[User]:
        return [_user(record) for record in self._session.scalars(select(UserRow.record).order_by(UserRow.name))]

    def add(self, user: User, *, now: str) -> None:
        record = user.model_dump_json(by_alias=True)
        self._session.add(UserRow(name=user.name, record=record, created_at=now, updated_at=now))
        self._session.flush()

    def update(self, user: User, *, now: str) -> None:
        row = self._session.get_one(UserRow, user.name)
        row.record = user.model_dump_json(by_alias=True)
        row.updated_at = now


class TokenRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    @staticmethod
    def digest(token: str) -> str:
        return hashlib.sha256(token.encode("utf-8")).hexdigest()

    def add(self, user_name: str, token: str, *, now: str) -> int:
        row = TokenRow(user_name=user_name, digest=self.digest(token), created_at=now)
        self._session.add(row)
        self._session.flush()
        return row.id

    def user_for(self, token: str) -> str | None:
        """The name of the user a live token belongs to, or None."""
        query = select(TokenRow.user_name).where(TokenRow.digest == self.digest(token), TokenRow.revoked_at.is_(None))
        return self._session.scalars(query).one_or_none()


class DatasetRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def get(self, name: str) -> StoredDataset | None:
        row = self._session.get(DatasetRow, name)
        return _stored_dataset(row) if row else None

    def all(self) -> list[StoredDataset]:
        return [_stored_dataset(r) for r in self._session.scalars(select(DatasetRow).order_by(DatasetRow.name))]

    def put(self, dataset: Dataset, *, now: str) -> int:
        """Insert or replace; returns the new generation."""
        spec = dataset.model_dump_json(by_alias=True)
        row = self._session.get(DatasetRow, dataset.name)
        if row is None:
            row = DatasetRow(name=dataset.name, spec=spec, generation=1, created_at=now, updated_at=now)
            self._session.add(row)
        else:
            row.spec, row.generation, row.updated_at = spec, row.generation + 1, now
        self._session.flush()
        return row.generation


class ProjectRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def get(self, name: str) -> StoredProject | None:
        row = self._session.get(ProjectRow, name)
        return _stored_project(row) if row else None

    def all(self) -> list[StoredProject]:
        return [_stored_project(r) for r in self._session.scalars(select(ProjectRow).order_by(ProjectRow.name))]

    def put(self, project: Project, *, phase: str, now: str) -> int:
        """Insert or replace the declaration; returns the new generation."""
        spec = project.model_dump_json(by_alias=True)
        row = self._session.get(ProjectRow, project.name)
        if row is None:
            row = ProjectRow(name=project.name, spec=spec, generation=1, phase=phase, created_at=now, updated_at=now)
            self._session.add(row)
        else:
            row.spec, row.generation, row.updated_at = spec, row.generation + 1, now
        self._session.flush()
        return row.generation

    def set_phase(self, name: str, phase: str, *, now: str) -> None:
        row = self._session.get_one(ProjectRow, name)
        row.phase, row.updated_at = phase, now

    def count_by_phase(self) -> dict[str, int]:
        query = select(ProjectRow.phase, func.count()).group_by(ProjectRow.phase)
        return {str(phase): int(count) for phase, count in self._session.execute(query)}


class ApprovalRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, approval: Approval, *, now: str) -> int:
        row = ApprovalRow(project_name=approval.project, record=approval.model_dump_json(), recorded_at=now)
        self._session.add(row)
        self._session.flush()
        return row.id

    def current(self, project: str) -> Approval | None:
        """The most recent approval recorded for the project."""
        query = select(ApprovalRow).where(ApprovalRow.project_name == project).order_by(ApprovalRow.id.desc())
        row = self._session.scalars(query.limit(1)).one_or_none()
        return Approval.model_validate_json(row.record) if row else None


def _stored_dataset(row: DatasetRow) -> StoredDataset:
    return StoredDataset(Dataset.model_validate_json(row.spec), row.generation, row.created_at, row.updated_at)


def _stored_project(row: ProjectRow) -> StoredProject:
    return StoredProject(_project(row.spec), row.generation, row.phase, row.created_at, row.updated_at)


@dataclass(frozen=True)
class OptOutVersion:
    version: int
    imported_at: str
    numbers: int
    invalid_lines: int
    sha256: str
    object_key: str


@dataclass(frozen=True)
class Extract:
    id: str
    project: str
    created_at: str
    optout_version: int
    key_version: int
    manifest_key: str
    manifest: str


class OptOutRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, item: OptOutVersion) -> None:
        self._session.add(OptOutVersionRow(**item.__dict__))
        self._session.flush()

    def latest(self) -> OptOutVersion | None:
        query = select(OptOutVersionRow).order_by(OptOutVersionRow.version.desc()).limit(1)
        row = self._session.scalars(query).one_or_none()
        return _optout(row) if row else None

    def all(self) -> list[OptOutVersion]:
        return [_optout(r) for r in self._session.scalars(select(OptOutVersionRow).order_by(OptOutVersionRow.version))]


class ExtractRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, item: Extract) -> None:
        """Record an extract; it becomes the project's current one (extracts are numbered in order)."""
        last = self._session.scalar(select(func.max(ExtractRow.seq)))
        row = ExtractRow(
            id=item.id,
            seq=(last or 0) + 1,
            project_name=item.project,
            created_at=item.created_at,
            optout_version=item.optout_version,
            key_version=item.key_version,
            manifest_key=item.manifest_key,
            manifest=item.manifest,
        )
        self._session.add(row)
        self._session.flush()

    def for_project(self, project: str) -> list[Extract]:
        """The project's extracts, newest first."""
        query = select(ExtractRow).where(ExtractRow.project_name == project)
        rows = self._session.scalars(query.order_by(ExtractRow.seq.desc()))
        return [_extract(r) for r in rows]

    def current(self, project: str) -> Extract | None:
        extracts = self.for_project(project)
        return extracts[0] if extracts else None

    def delete(self, extract_id: str) -> None:
        row = self._session.get(ExtractRow, extract_id)
        if row is not None:
            self._session.delete(row)
            self._session.flush()


def _optout(row: OptOutVersionRow) -> OptOutVersion:
    return OptOutVersion(row.version, row.imported_at, row.numbers, row.invalid_lines, row.sha256, row.object_key)


def _extract(row: ExtractRow) -> Extract:
    return Extract(
        row.id, row.project_name, row.created_at, row.optout_version, row.key_version, row.manifest_key, row.manifest
    )
