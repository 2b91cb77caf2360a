"""The governance gate: every reason a project may not have data now ("safe people", "safe projects")."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum

from tre.spec import Approval, DatasetRequest, DatasetSpec, ProjectSpec, Role, User


class BlockerCode(StrEnum):
    NO_APPROVAL = "no-approval"
    APPROVAL_NOT_IN_FORCE = "approval-not-in-force"
    APPROVAL_EXPIRED = "approval-expired"
    APPROVER_IS_MEMBER = "approver-is-member"
    NO_AGREEMENT = "no-agreement"
    AGREEMENT_NOT_SIGNED = "agreement-not-signed"
    UNKNOWN_USER = "unknown-user"
    NOT_A_RESEARCHER = "not-a-researcher"
    NOT_ACCREDITED = "not-accredited"
    ACCREDITATION_EXPIRED = "accreditation-expired"
    UNKNOWN_DATASET = "unknown-dataset"
    UNKNOWN_COLUMN = "unknown-column"
    DATASET_NOT_APPROVED = "dataset-not-approved"
    COLUMNS_NOT_APPROVED = "columns-not-approved"
    FILTER_NOT_APPROVED = "filter-not-approved"


@dataclass(frozen=True)
class Blocker:
    """One reason the project may not have data, with the thing it concerns."""

    code: BlockerCode
    subject: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code.value, "subject": self.subject, "message": self.message}


def project_blockers(
    spec: ProjectSpec,
    *,
    approval: Approval | None,
    datasets: Mapping[str, DatasetSpec],
    users: Mapping[str, User],
    today: dt.date,
) -> list[Blocker]:
    """Every reason the project may not have data on ``today``; empty means the gate is open."""
    return [
        *_people_blockers(spec, users, today),
        *_dataset_blockers(spec, datasets),
        *_approval_blockers(spec, approval, today),
    ]


def _people_blockers(spec: ProjectSpec, users: Mapping[str, User], today: dt.date) -> Iterator[Blocker]:
    for name in sorted(spec.all_members):
        user = users.get(name)
        if user is None:
            yield Blocker(BlockerCode.UNKNOWN_USER, name, f"member {name} is not a registered user")
        elif not user.has_role(Role.RESEARCHER):
            yield Blocker(BlockerCode.NOT_A_RESEARCHER, name, f"member {name} does not have the researcher role")
        elif not user.accreditations:
            yield Blocker(BlockerCode.NOT_ACCREDITED, name, f"member {name} holds no accreditation")
        elif not user.accredited_on(today):
            lapsed = max(a.expires for a in user.accreditations)
            yield Blocker(BlockerCode.ACCREDITATION_EXPIRED, name, f"member {name}'s accreditation expired on {lapsed}")


def _dataset_blockers(spec: ProjectSpec, datasets: Mapping[str, DatasetSpec]) -> Iterator[Blocker]:
    for request in spec.datasets:
        declared = datasets.get(request.name)
        if declared is None:
            yield Blocker(BlockerCode.UNKNOWN_DATASET, request.name, f"dataset {request.name} is not registered")
            continue
        unknown = sorted(request.referenced_columns - declared.column_names)
        if unknown:
            yield Blocker(
                BlockerCode.UNKNOWN_COLUMN,
                request.name,
                f"dataset {request.name} has no column {', '.join(unknown)}",
            )


def _approval_blockers(spec: ProjectSpec, approval: Approval | None, today: dt.date) -> Iterator[Blocker]:
    if approval is None:
        yield Blocker(BlockerCode.NO_APPROVAL, "approval", "no review committee approval is recorded")
        return
    if today < approval.decided:
        yield Blocker(
            BlockerCode.APPROVAL_NOT_IN_FORCE,
            approval.reference,
            f"approval is in force from {approval.decided}",
        )
    if today > approval.expires:
        yield Blocker(
            BlockerCode.APPROVAL_EXPIRED,
            approval.reference,
            f"approval {approval.reference} expired on {approval.expires}",
        )
    if approval.approver in spec.all_members:
        yield Blocker(
            BlockerCode.APPROVER_IS_MEMBER,
            approval.approver,
            f"approver {approval.approver} is a member of the project, so the approval is not independent",
        )
    yield from _agreement_blockers(approval, today)
    for request in spec.datasets:
        yield from _request_blockers(request, approval)


def _agreement_blockers(approval: Approval, today: dt.date) -> Iterator[Blocker]:
    if approval.agreement_reference is None or approval.agreement_signed is None:
        yield Blocker(BlockerCode.NO_AGREEMENT, "agreement", "no signed data-sharing agreement is recorded")
    elif approval.agreement_signed > today:
        yield Blocker(
            BlockerCode.AGREEMENT_NOT_SIGNED,
            approval.agreement_reference,
            f"agreement {approval.agreement_reference} is dated {approval.agreement_signed}, in the future",
        )


def _request_blockers(request: DatasetRequest, approval: Approval) -> Iterator[Blocker]:
    approved = approval.dataset(request.name)
    if approved is None:
        yield Blocker(
            BlockerCode.DATASET_NOT_APPROVED,
            request.name,
            f"dataset {request.name} is not covered by the approval",
        )
        return
    beyond = sorted(set(request.columns) - approved.columns)
    if beyond:
        yield Blocker(
            BlockerCode.COLUMNS_NOT_APPROVED,
            request.name,
            f"columns of {request.name} requested beyond the approval: {', '.join(beyond)}",
        )
    if tuple(request.filter) != approved.filter:
        yield Blocker(
            BlockerCode.FILTER_NOT_APPROVED,
            request.name,
            f"the row filter for {request.name} differs from the one approved",
        )
