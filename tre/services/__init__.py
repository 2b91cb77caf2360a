"""Application services: each call checks permissions and rules, changes the store, and audits, atomically."""

from tre.services._actors import Actor, check_actor_is_admin
from tre.services._clock import Clock, timestamp, utcnow
from tre.services._projects import (
    ApplyResult,
    ApprovalRequest,
    ProjectStatus,
    apply_project,
    approve_project,
    check_user_can_view_project,
    get_project,
    project_status,
    refresh_phase,
    refresh_phases,
    register_dataset,
    user_can_view_project,
)
from tre.services._register import transparency_register
from tre.services._users import TOKEN_PREFIX, accredit_user, add_user, authenticate, create_token, get_user

__all__ = [
    "TOKEN_PREFIX",
    "Actor",
    "ApplyResult",
    "ApprovalRequest",
    "Clock",
    "ProjectStatus",
    "accredit_user",
    "add_user",
    "apply_project",
    "approve_project",
    "authenticate",
    "check_actor_is_admin",
    "check_user_can_view_project",
    "create_token",
    "get_project",
    "get_user",
    "project_status",
    "refresh_phase",
    "refresh_phases",
    "register_dataset",
    "timestamp",
    "transparency_register",
    "user_can_view_project",
    "utcnow",
]
