"""Datasets, projects and approvals: each action checks, writes, and records an audit entry atomically."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from tre.errors import InputError, NotFoundError, PermissionDeniedError
from tre.governance import (
    Blocker,
    Phase,
    approved_datasets,
    check_approval,
    derive_phase,
    project_blockers,
)
from tre.services._actors import Actor, check_actor_is_admin
from tre.services._clock import timestamp
from tre.services._users import get_user
from tre.spec import Approval, Dataset, DatasetSpec, Project, Role, describe_validation_error
from tre.store import StoredProject, Unit


@dataclass(frozen=True)
class ApplyResult:
    """What ``apply`` did: ``created``, ``configured`` (with the fields that changed) or ``unchanged``."""

    kind: str
    name: str
    outcome: str
    changed: tuple[str, ...] = ()

    def describe(self) -> str:
        suffix = f" ({', '.join(self.changed)})" if self.changed else ""
        return f"{self.kind.lower()} {self.name} {self.outcome}{suffix}"


@dataclass(frozen=True)
class ProjectStatus:
    stored: StoredProject
    approval: Approval | None
    blockers: list[Blocker]
    phase: Phase


def changed_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[str, ...]:
    """The top-level keys whose values differ between two mappings."""
    return tuple(sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k)))


def register_dataset(unit: Unit, actor: Actor, dataset: Dataset, *, now: dt.datetime) -> ApplyResult:
    check_actor_is_admin(actor, "register datasets")
    existing = unit.datasets.get(dataset.name)
    if existing is not None and existing.dataset == dataset:
        return ApplyResult("Dataset", dataset.name, "unchanged")
    old = existing.dataset.spec.model_dump(by_alias=True) if existing else {}
    changes = changed_fields(old, dataset.spec.model_dump(by_alias=True)) if existing else ()
    generation = unit.datasets.put(dataset, now=timestamp(now))
    action = "dataset.updated" if existing else "dataset.registered"
    details = {"generation": generation, "changed": list(changes), "location": dataset.spec.location}
    unit.audit.append(at=timestamp(now), actor=actor.name, action=action, target=dataset.name, details=details)
    refresh_phases(unit, actor, now=now)
    return ApplyResult("Dataset", dataset.name, "configured" if existing else "registered", changes)


def check_actor_can_apply(actor: Actor, project: Project, existing: StoredProject | None) -> None:
    """Admins may apply any project; a researcher may apply a project they lead (and stay its lead)."""
    if actor.is_admin():
        return
    leads = {project.spec.lead} | ({existing.project.spec.lead} if existing else set())
    if actor.has_role(Role.RESEARCHER) and leads == {actor.name}:
        return
    raise PermissionDeniedError(f"user {actor.name} may not apply project {project.name}: only its lead or an admin")


def apply_project(unit: Unit, actor: Actor, project: Project, *, now: dt.datetime) -> ApplyResult:
    """Create or update a project declaration; idempotent."""
    existing = unit.projects.get(project.name)
    check_actor_can_apply(actor, project, existing)
    if existing is not None and existing.project == project:
        return ApplyResult("Project", project.name, "unchanged")
    old = existing.project.spec.model_dump(by_alias=True) if existing else {}
    changes = changed_fields(old, project.spec.model_dump(by_alias=True)) if existing else ()
    generation = unit.projects.put(project, phase=Phase.PENDING.value, now=timestamp(now))
    action = "project.updated" if existing else "project.created"
    details = {"generation": generation, "changed": list(changes)}
    unit.audit.append(
        at=timestamp(now),
        actor=actor.name,
        action=action,
        project=project.name,
        target=project.name,
        details=details,
    )
    refresh_phase(unit, actor, project.name, now=now)
    return ApplyResult("Project", project.name, "configured" if existing else "created", changes)


@dataclass(frozen=True)
class ApprovalRequest:
    """What an approver states when recording a committee decision."""

    project: str
    approver: str
    reference: str
    expires: dt.date
    agreement_reference: str
    agreement_signed: dt.date | None = None
    decided: dt.date | None = None
    conditions: tuple[str, ...] = ()
    columns: Mapping[str, frozenset[str]] | None = None


def approve_project(unit: Unit, actor: Actor, request: ApprovalRequest, *, now: dt.datetime) -> Approval:
    if not actor.is_operator and actor.name != request.approver:
        raise PermissionDeniedError(f"user {actor.name} cannot record an approval on behalf of {request.approver}")
    stored = get_project(unit, request.project)
    approver = get_user(unit, request.approver)
    today = now.date()
    approval = _build_approval(request, stored, today)
    check_approval(approval, spec=stored.project.spec, approver=approver, datasets=_dataset_specs(unit), today=today)
    approval_id = unit.approvals.add(approval, now=timestamp(now))
    details = {"approval_id": approval_id, **approval.model_dump(mode="json", exclude={"project"})}
    unit.audit.append(
        at=timestamp(now),
        actor=actor.name,
        action="project.approved",
        project=request.project,
        target=request.reference,
        details=details,
    )
    refresh_phase(unit, actor, request.project, now=now)
    return approval


def _build_approval(request: ApprovalRequest, stored: StoredProject, today: dt.date) -> Approval:
    try:
        return Approval(
            project=request.project,
            approver=request.approver,
            reference=request.reference,
            decided=request.decided or today,
            expires=request.expires,
            conditions=request.conditions,
            datasets=approved_datasets(stored.project.spec, request.columns or {}),
            agreement_reference=request.agreement_reference,
            agreement_signed=request.agreement_signed or today,
        )
    except ValidationError as exc:
        raise InputError(f"approval of {request.project}: {describe_validation_error(exc)}") from exc


def get_project(unit: Unit, name: str) -> StoredProject:
    stored = unit.projects.get(name)
    if stored is None:
        raise NotFoundError(f"no project called {name}; see 'tre project list'")
    return stored


def user_can_view_project(actor: Actor, project: Project) -> bool:
    """Members see their own projects; admins, approvers and output checkers see every project."""
    if actor.is_admin() or actor.has_role(Role.APPROVER) or actor.has_role(Role.OUTPUT_CHECKER):
        return True
    return actor.name in project.spec.all_members


def check_user_can_view_project(actor: Actor, project: Project) -> None:
    if not user_can_view_project(actor, project):
        raise NotFoundError(f"no project called {project.name}; see 'tre project list'")


def _dataset_specs(unit: Unit) -> dict[str, DatasetSpec]:
    return {d.dataset.name: d.dataset.spec for d in unit.datasets.all()}


def project_status(unit: Unit, stored: StoredProject, *, today: dt.date) -> ProjectStatus:
    """The project's blockers and phase as of ``today``."""
    approval = unit.approvals.current(stored.name)
    users = {u.name: u for u in unit.users.all()}
    blockers = project_blockers(
        stored.project.spec, approval=approval, datasets=_dataset_specs(unit), users=users, today=today
    )
    return ProjectStatus(stored, approval, blockers, derive_phase(approval, blockers, today))


def refresh_phase(unit: Unit, actor: Actor, name: str, *, now: dt.datetime) -> ProjectStatus:
    """Record the project's phase if it changed (e.g. its approval expired), with an audit entry."""
    status = project_status(unit, get_project(unit, name), today=now.date())
    if status.phase.value != status.stored.phase:
        unit.projects.set_phase(name, status.phase.value, now=timestamp(now))
        details: dict[str, Any] = {"from": status.stored.phase, "to": status.phase.value}
        details["blockers"] = [b.code.value for b in status.blockers]
        unit.audit.append(
            at=timestamp(now),
            actor=actor.name,
            action="project.phase-changed",
            project=name,
            target=name,
            details=details,
        )
    return status


def refresh_phases(unit: Unit, actor: Actor, *, now: dt.datetime) -> list[ProjectStatus]:
    return [refresh_phase(unit, actor, p.name, now=now) for p in unit.projects.all()]
