"""Who may run a workspace for which project, today: the one rule both workspace backends enforce."""

from __future__ import annotations

import datetime as dt

from tre.errors import NotFoundError, PermissionDeniedError
from tre.services._projects import get_project, project_status
from tre.services._users import get_user
from tre.store import Unit


def user_can_use_workspace(unit: Unit, user_name: str, project: str, *, today: dt.date) -> bool:
    try:
        check_user_can_use_workspace(unit, user_name, project, today=today)
    except (PermissionDeniedError, NotFoundError):
        return False
    return True


def check_user_can_use_workspace(unit: Unit, user_name: str, project: str, *, today: dt.date) -> None:
    """PermissionDeniedError unless the user is an accredited member of an open, unsuspended project."""
    user = get_user(unit, user_name)
    stored = get_project(unit, project)
    spec = stored.project.spec
    if user_name not in spec.all_members:
        raise PermissionDeniedError(f"user {user_name} is not a member of project {project}")
    if not user.accredited_on(today):
        raise PermissionDeniedError(f"user {user_name} holds no accreditation in force today")
    if spec.suspended:
        raise PermissionDeniedError(f"project {project} is suspended")
    status = project_status(unit, stored, today=today)
    if status.blockers:
        first = status.blockers[0]
        raise PermissionDeniedError(f"project {project} is not open for work: {first.message}")


def workspace_projects(unit: Unit, user_name: str, *, today: dt.date) -> list[str]:
    """The projects this user may start a workspace for today, by name."""
    return sorted(
        p.name
        for p in unit.projects.all()
        if user_name in p.project.spec.all_members and user_can_use_workspace(unit, user_name, p.name, today=today)
    )
