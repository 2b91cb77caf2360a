"""Who may do what to an airlock request. Each rule is a pair: ``user_can_X`` answers, ``check_user_can_X`` raises."""

from __future__ import annotations

from tre.errors import NotFoundError, PermissionDeniedError
from tre.spec import ProjectSpec, Role, User


def user_can_view_request(user: User, project: ProjectSpec) -> bool:
    """Members of the request's project, and output checkers who are independent of it."""
    return user.name in project.all_members or user_can_review_project(user, project)


def check_user_can_view_request(user: User, project: ProjectSpec, request_id: str) -> None:
    if not user_can_view_request(user, project):
        raise NotFoundError(f"no airlock request {request_id}")  # do not reveal that it exists


def user_can_author(user: User, project: ProjectSpec) -> bool:
    return user.name in project.all_members and user.has_role(Role.RESEARCHER)


def check_user_can_author(user: User, project: ProjectSpec, project_name: str) -> None:
    if not user_can_author(user, project):
        raise PermissionDeniedError(f"user {user.name} is not a researcher on project {project_name}")


def user_can_review_project(user: User, project: ProjectSpec) -> bool:
    """Output checkers who are not members of the project (and so never authors of its requests)."""
    return user.has_role(Role.OUTPUT_CHECKER) and user.name not in project.all_members


def check_user_can_review(user: User, project: ProjectSpec, author: str) -> None:
    if not user.has_role(Role.OUTPUT_CHECKER):
        raise PermissionDeniedError(f"user {user.name} does not have the output-checker role")
    if user.name == author:
        raise PermissionDeniedError(f"user {user.name} wrote this request, so cannot review it")
    if user.name in project.all_members:
        raise PermissionDeniedError(f"user {user.name} is a member of the project, so cannot review its requests")


def user_can_revoke(user: User, project: ProjectSpec) -> bool:
    return user_can_review_project(user, project) or user.has_role(Role.ADMIN)


def check_user_can_revoke(user: User, project: ProjectSpec) -> None:
    if not user_can_revoke(user, project):
        raise PermissionDeniedError(f"user {user.name} may not revoke releases: an independent checker or admin may")


def user_can_set_rules(user: User) -> bool:
    """Only admins choose a project's disclosure rules (a researcher must not pick weaker ones)."""
    return user.has_role(Role.ADMIN)


def check_user_can_set_rules(user: User) -> None:
    if not user_can_set_rules(user):
        raise PermissionDeniedError(f"user {user.name} may not choose disclosure rules: an admin may")
