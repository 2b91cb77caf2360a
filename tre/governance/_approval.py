"""Checking an approval before it is recorded: an independent approver, sane dates, no more than requested."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from tre.errors import InputError, PermissionDeniedError
from tre.spec import Approval, ApprovedDataset, DatasetSpec, ProjectSpec, Role, User


def user_can_approve(user: User, spec: ProjectSpec) -> bool:
    """True if ``user`` may approve the project: an approver who is not one of its members."""
    return user.has_role(Role.APPROVER) and user.name not in spec.all_members


def check_user_can_approve(user: User, spec: ProjectSpec) -> None:
    """Raise PermissionDeniedError unless ``user`` may approve the project."""
    if not user.has_role(Role.APPROVER):
        raise PermissionDeniedError(f"user {user.name} does not have the approver role, so cannot approve projects")
    if user.name in spec.all_members:
        raise PermissionDeniedError(
            f"user {user.name} is a member of this project, so cannot approve it (approval must be independent)"
        )


def approved_datasets(spec: ProjectSpec, narrowed: Mapping[str, frozenset[str]]) -> tuple[ApprovedDataset, ...]:
    """The datasets an approval covers: every request as asked, except where ``narrowed`` lists fewer columns."""
    unknown = sorted(set(narrowed) - {r.name for r in spec.datasets})
    if unknown:
        raise InputError(f"--columns names dataset {', '.join(unknown)}, which the project does not request")
    return tuple(
        ApprovedDataset(
            name=request.name,
            columns=narrowed.get(request.name, frozenset(request.columns)),
            filter=tuple(request.filter),
        )
        for request in spec.datasets
    )


def check_approval(
    approval: Approval,
    *,
    spec: ProjectSpec,
    approver: User,
    datasets: Mapping[str, DatasetSpec],
    today: dt.date,
) -> None:
    """Raise unless ``approval`` may be recorded for the project on ``today``."""
    check_user_can_approve(approver, spec)
    _check_dates(approval, today)
    for item in approval.datasets:
        _check_approved_dataset(item, spec, datasets)


def _check_dates(approval: Approval, today: dt.date) -> None:
    if approval.decided > today:
        raise InputError(f"decision date {approval.decided} is in the future; give the date the committee decided")
    if approval.expires < today:
        raise InputError(f"expiry date {approval.expires} is in the past; give a future --expires date")
    if approval.agreement_signed is not None and approval.agreement_signed > today:
        raise InputError(f"agreement signed date {approval.agreement_signed} is in the future")


def _check_approved_dataset(item: ApprovedDataset, spec: ProjectSpec, datasets: Mapping[str, DatasetSpec]) -> None:
    declared = datasets.get(item.name)
    if declared is None:
        raise InputError(f"dataset {item.name} is not registered; register it before approving")
    request = spec.dataset(item.name)
    requested = frozenset(request.columns) if request else frozenset()
    beyond_request = sorted(item.columns - requested)
    if beyond_request:
        raise InputError(
            f"cannot approve columns of {item.name} the project did not request: {', '.join(beyond_request)}"
        )
    unknown = sorted(item.columns - declared.column_names)
    if unknown:
        raise InputError(f"dataset {item.name} has no column {', '.join(unknown)}")
