"""Who may start a workspace for which project, and where its data is: the governance gate for workspaces.

A workspace starts only for a member of the project ("safe people": an accreditation in force today), for a
project with no governance blockers and not suspended ("safe projects"), whose data has been provisioned. The
same rule, checked again while a workspace runs, says when it must stop.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tre import services
from tre.errors import PermissionDeniedError
from tre.services import Clock, timestamp, utcnow
from tre.storage import ObjectStore
from tre.store import Store, Unit


@dataclass(frozen=True)
class WorkspaceGrant:
    """Permission for ``user`` to run a workspace of ``project`` now, with the data it may mount."""

    project: str
    user: str
    data_dir: Path
    extract: str
    cpu: str
    memory: str


class WorkspaceGate(Protocol):
    """What the spawner asks the TRE (pluggable: ``SandboxSpawner.gate``)."""

    def projects_for(self, user: str) -> list[str]:
        """The projects ``user`` is a member of, by name."""
        ...

    def check(self, user: str, project: str) -> WorkspaceGrant:
        """The grant, or PermissionDeniedError with one sentence the hub shows to the user."""
        ...

    def record(self, action: str, user: str, project: str, details: dict[str, str]) -> None:
        """Write an audit entry (``workspace.started``, ``workspace.stopped``)."""
        ...


def workspace_refusal(unit: Unit, user: str, project: str, today: dt.date) -> str | None:
    """Why ``user`` may not run a workspace of ``project`` on ``today``, or None if they may (data aside)."""
    stored = unit.projects.get(project)
    if stored is None or user not in stored.project.spec.all_members:
        return f"{user} is not a member of a project called {project}; ask the project's lead to add them"
    person = unit.users.get(user)
    if person is None:
        return f"{user} is not a registered TRE user; ask an admin to add them"
    if stored.project.spec.suspended:
        return f"project {project} is suspended; its workspaces stay stopped until an admin lifts the suspension"
    if not person.accredited_on(today):
        return _accreditation_refusal(user, [a.expires for a in person.accreditations])
    status = services.project_status(unit, stored, today=today)
    if status.blockers:
        reasons = "; ".join(b.message for b in status.blockers)
        return f"project {project} may not have data now: {reasons}; see 'tre project show {project}'"
    return None


def _accreditation_refusal(user: str, expiries: list[dt.date]) -> str:
    if not expiries:
        return f"{user} holds no accreditation; complete safe researcher training and ask an admin to record it"
    return f"{user}'s accreditation expired on {max(expiries)}; renew it to use a workspace"


def check_user_can_start_workspace(
    unit: Unit, objects: ObjectStore, user: str, project: str, today: dt.date
) -> WorkspaceGrant:
    """The grant for a workspace, or PermissionDeniedError saying why not."""
    refusal = workspace_refusal(unit, user, project, today)
    if refusal is not None:
        raise PermissionDeniedError(refusal)
    extract = unit.extracts.current(project)
    if extract is None:
        raise PermissionDeniedError(f"project {project} has no data provisioned yet; an admin runs 'tre provision'")
    manifest = objects.local_path(extract.manifest_key)
    if manifest is None:
        raise PermissionDeniedError(
            f"project {project}'s data is in a remote object store; local workspaces need TRE_OBJECT_STORE_URL file://"
        )
    spec = services.get_project(unit, project).project.spec
    return WorkspaceGrant(project, user, manifest.parent, extract.id, spec.workspace.cpu, spec.workspace.memory)


def workspaces_to_stop(unit: Unit, running: Iterable[tuple[str, str]], today: dt.date) -> list[tuple[str, str, str]]:
    """Of the running (user, project) workspaces, those that must stop now, each with the reason."""
    stops = []
    for user, project in running:
        refusal = workspace_refusal(unit, user, project, today)
        if refusal is not None:
            stops.append((user, project, refusal))
    return stops


def member_projects(unit: Unit, user: str) -> list[str]:
    return sorted(p.name for p in unit.projects.all() if user in p.project.spec.all_members)


class TreStoreGate:
    """The default gate: the TRE's own store and local object store, as configured by ``TRE_*`` settings."""

    def __init__(self, store: Store, objects: ObjectStore, clock: Clock = utcnow) -> None:
        self.store = store
        self.objects = objects
        self.clock = clock

    @classmethod
    def from_settings(cls) -> TreStoreGate:
        from tre.config import Settings
        from tre.storage import open_object_store

        settings = Settings()
        objects = open_object_store(settings.objects_url, endpoint_url=settings.s3_endpoint_url)
        return cls(Store(settings.store_url), objects)

    def projects_for(self, user: str) -> list[str]:
        with self.store.transaction(write=False) as unit:
            return member_projects(unit, user)

    def check(self, user: str, project: str) -> WorkspaceGrant:
        with self.store.transaction(write=False) as unit:
            return check_user_can_start_workspace(unit, self.objects, user, project, self.clock().date())

    def record(self, action: str, user: str, project: str, details: dict[str, str]) -> None:
        now = timestamp(self.clock())
        with self.store.transaction() as unit:
            unit.audit.append(at=now, actor=user, action=action, project=project, target=project, details=details)
