"""The relational schema. Declarations are kept as their canonical JSON; the audit log is a hash chain."""

from __future__ import annotations

from sqlalchemy import Boolean, ForeignKey, Index, Integer, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UserRow(Base):
    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    record: Mapped[str] = mapped_column(Text)
    created_at: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[str] = mapped_column(String(32))


class TokenRow(Base):
    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_name: Mapped[str] = mapped_column(ForeignKey("users.name"), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[str] = mapped_column(String(32))
    revoked_at: Mapped[str | None] = mapped_column(String(32), nullable=True)


class DatasetRow(Base):
    __tablename__ = "datasets"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    spec: Mapped[str] = mapped_column(Text)
    generation: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[str] = mapped_column(String(32))


class ProjectRow(Base):
    __tablename__ = "projects"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    spec: Mapped[str] = mapped_column(Text)
    generation: Mapped[int] = mapped_column(Integer)
    phase: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[str] = mapped_column(String(32))


class ApprovalRow(Base):
    __tablename__ = "approvals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project_name: Mapped[str] = mapped_column(ForeignKey("projects.name"), index=True)
    record: Mapped[str] = mapped_column(Text)
    recorded_at: Mapped[str] = mapped_column(String(32))


class AuditRow(Base):
    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    project: Mapped[str] = mapped_column(String(40))
    target: Mapped[str] = mapped_column(String(256))
    details: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (Index("ix_audit_log_project_seq", "project", "seq"),)


class AuditHeadRow(Base):
    """One row: the last entry's sequence number and hash. Locked while appending, so appends are serial."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


class OptOutVersionRow(Base):
    """One imported version of the national data opt-out list; the numbers live in the object store."""

    __tablename__ = "optout_versions"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    imported_at: Mapped[str] = mapped_column(String(32))
    numbers: Mapped[int] = mapped_column(Integer)
    invalid_lines: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    object_key: Mapped[str] = mapped_column(String(256))


class ExtractRow(Base):
    """A completed provisioning of a project's datasets; the newest one per project is served."""

    __tablename__ = "extracts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, unique=True)
    project_name: Mapped[str] = mapped_column(ForeignKey("projects.name"), index=True)
    created_at: Mapped[str] = mapped_column(String(32))
    optout_version: Mapped[int] = mapped_column(Integer)
    key_version: Mapped[int] = mapped_column(Integer)
    manifest_key: Mapped[str] = mapped_column(String(256))
    manifest: Mapped[str] = mapped_column(Text)


class AirlockRequestRow(Base):
    __tablename__ = "airlock_requests"
    __table_args__ = (
        Index("ix_airlock_requests_created_at_id", "created_at", "id"),  # the listing order
        Index("ix_airlock_requests_project_created_at_id", "project_name", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project_name: Mapped[str] = mapped_column(ForeignKey("projects.name"), index=True)
    author: Mapped[str] = mapped_column(String(64), index=True)
    title: Mapped[str] = mapped_column(String(200))
    context: Mapped[str] = mapped_column(Text)
    controls: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), index=True)
    round: Mapped[int] = mapped_column(Integer)
    submitted_fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[str] = mapped_column(String(32))
    rules: Mapped[str] = mapped_column(Text, server_default="")  # the disclosure rules of the last submission (JSON)


class AirlockFileRow(Base):
    __tablename__ = "airlock_files"
    __table_args__ = (UniqueConstraint("request_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("airlock_requests.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    object_key: Mapped[str] = mapped_column(String(512))
    added_at: Mapped[str] = mapped_column(String(32))
    table_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)  # the author's declaration


class AirlockBallotRow(Base):
    __tablename__ = "airlock_ballots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("airlock_requests.id"), index=True)
    round: Mapped[int] = mapped_column(Integer)
    checker: Mapped[str] = mapped_column(String(64))
    file: Mapped[str] = mapped_column(String(200))
    vote: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    shared: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[str] = mapped_column(String(32))


class AirlockCheckRow(Base):
    """The result of one automated check on one file in one round."""

    __tablename__ = "airlock_checks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("airlock_requests.id"), index=True)
    round: Mapped[int] = mapped_column(Integer)
    file: Mapped[str] = mapped_column(String(200))
    rule: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text)


class AirlockOverrideRow(Base):
    """A checker's override, with a rationale, of one automated result (fail or review) on one file in one round."""

    __tablename__ = "airlock_overrides"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("airlock_requests.id"), index=True)
    round: Mapped[int] = mapped_column(Integer)
    file: Mapped[str] = mapped_column(String(200))
    rule: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    checker: Mapped[str] = mapped_column(String(64))
    rationale: Mapped[str] = mapped_column(Text)
    at: Mapped[str] = mapped_column(String(32))


class AirlockProjectRulesRow(Base):
    """The disclosure rule set an admin chose for a project's outputs (absent: the default rules)."""

    __tablename__ = "airlock_project_rules"

    project_name: Mapped[str] = mapped_column(ForeignKey("projects.name"), primary_key=True)
    rules: Mapped[str] = mapped_column(Text)
    set_by: Mapped[str] = mapped_column(String(64))
    set_at: Mapped[str] = mapped_column(String(32))
