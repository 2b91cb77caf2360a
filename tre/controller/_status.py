"""A Project's status as the controller reports it: phase, conditions and blockers. Pure.

Conditions follow ``metav1.Condition``: ``type``, ``status`` ("True"/"False"), a CamelCase ``reason``, a
one-line ``message``, ``observedGeneration``, and ``lastTransitionTime``, which changes only when the
condition's status changes (so a pass that changes nothing writes no status).

========================  ==============================================================================
condition                 True when
========================  ==============================================================================
``Approved``              the governance gate has no blockers (reason: the first blocker's code otherwise)
``DataProvisioned``       the provisioning Job has completed, or the project requests no data
``Ready``                 approved, not suspended, every object applied and the data provisioned
``Expired``               the approval has lapsed
========================  ==============================================================================
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tre.controller._crd import CONDITION_TYPES
from tre.governance import Blocker
from tre.spec import Approval

# Every status field the controller owns; the CRD's status schema has exactly these (the API server prunes others).
STATUS_FIELDS = ("phase", "approvalExpires", "observedGeneration", "provisionedRequest", "conditions", "blockers")


class ProjectPhase(StrEnum):
    """Where a project stands in the cluster (``pending``, ``approved`` and ``expired`` come from governance)."""

    PENDING = "pending"
    INVALID = "invalid"
    PROVISIONING = "provisioning"
    READY = "ready"
    FAILED = "failed"
    SUSPENDED = "suspended"
    EXPIRED = "expired"
    TERMINATING = "terminating"


@dataclass(frozen=True)
class GovernanceView:
    """What the governance gate says about a project today."""

    blockers: tuple[Blocker, ...]
    approval: Approval | None
    members: frozenset[str]
    today: dt.date

    @property
    def expired(self) -> bool:
        return self.approval is not None and self.today > self.approval.expires


@dataclass(frozen=True)
class Observation:
    """What a reconcile pass saw and did, as far as the status is concerned."""

    generation: int
    suspended: bool = False
    deleting: bool = False
    invalid: str | None = None
    wanted_request: str | None = None
    provisioned_request: str | None = None
    job: Mapping[str, Any] | None = None
    failures: tuple[str, ...] = ()

    @property
    def data_state(self) -> str:
        """``complete`` when the data volume holds the wanted request, else the provisioning Job's state."""
        if self.wanted_request is None:
            return "complete"
        if self.provisioned_request == self.wanted_request:
            return "complete"
        return job_state(self.job)


def camel(code: str) -> str:
    """``approval-expired`` as a condition reason: ``ApprovalExpired``."""
    return "".join(part[:1].upper() + part[1:] for part in code.replace("_", "-").split("-") if part)


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def job_state(job: Mapping[str, Any] | None) -> str:
    """``complete``, ``failed``, ``running`` or ``missing`` from a Job's status conditions."""
    if job is None:
        return "missing"
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            return "complete" if condition["type"] == "Complete" else "failed"
    return "running"


# Conditions: (status, reason, message) for each type


def _approved(gov: GovernanceView, obs: Observation) -> tuple[bool, str, str]:
    if obs.invalid is not None:
        return False, "InvalidSpec", obs.invalid
    if gov.blockers:
        return False, camel(gov.blockers[0].code.value), "; ".join(b.message for b in gov.blockers)
    if gov.approval is None:  # the gate always reports a missing approval; never treat its absence as approval
        return False, "NoApproval", "no review committee approval is recorded"
    return True, "Approved", f"approved under {gov.approval.reference} until {gov.approval.expires}"


def _expired(gov: GovernanceView) -> tuple[bool, str, str]:
    if gov.approval is None:
        return False, "NoApproval", "no approval is recorded"
    if gov.expired:
        return True, "ApprovalExpired", f"approval {gov.approval.reference} expired on {gov.approval.expires}"
    return False, "InForce", f"approval {gov.approval.reference} runs until {gov.approval.expires}"


def _provisioned(gov: GovernanceView, obs: Observation, active: bool) -> tuple[bool, str, str]:
    if not active:
        return False, "NotProvisioned", "no data is provisioned while the project has no access"
    state = obs.data_state
    if state == "complete":
        return True, "Provisioned", f"the data volume holds data request {obs.wanted_request}"
    if state == "failed":
        return False, "JobFailed", f"the provisioning Job for data request {obs.wanted_request} failed; see its logs"
    return False, "Provisioning", f"the provisioning Job for data request {obs.wanted_request} is running"


def _ready(phase: ProjectPhase, message: str) -> tuple[bool, str, str]:
    if phase is ProjectPhase.READY:
        return True, "WorkspaceAvailable", message
    return False, camel(phase.value), message


def _active(gov: GovernanceView, obs: Observation) -> bool:
    return not (obs.deleting or obs.invalid is not None or gov.blockers or gov.approval is None or obs.suspended)


def phase_of(gov: GovernanceView, obs: Observation) -> tuple[ProjectPhase, str]:
    """The phase, with a one-line message that says why."""
    if obs.deleting:
        return ProjectPhase.TERMINATING, "the project is being deleted; access is being removed"
    if obs.invalid is not None:
        return ProjectPhase.INVALID, obs.invalid
    if gov.expired:
        return ProjectPhase.EXPIRED, _expired(gov)[2] + "; access removed"
    if gov.blockers:
        return ProjectPhase.PENDING, f"blocked: {'; '.join(b.message for b in gov.blockers)}"
    if gov.approval is None:
        return ProjectPhase.PENDING, "blocked: no review committee approval is recorded"
    if obs.suspended:
        return ProjectPhase.SUSPENDED, "suspended: workspaces stopped and access removed; data kept"
    if obs.failures:
        return ProjectPhase.FAILED, f"the API server refused: {'; '.join(obs.failures)}"
    if obs.data_state == "failed":
        return ProjectPhase.FAILED, _provisioned(gov, obs, True)[2]
    if obs.data_state != "complete":
        return ProjectPhase.PROVISIONING, "the project's data is being provisioned"
    return ProjectPhase.READY, "members can start workspaces from the hub"


def conditions(
    gov: GovernanceView,
    obs: Observation,
    previous: Sequence[Mapping[str, Any]],
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """The four conditions, keeping each one's ``lastTransitionTime`` unless its status changed."""
    phase, message = phase_of(gov, obs)
    values = {
        "Approved": _approved(gov, obs),
        "DataProvisioned": _provisioned(gov, obs, _active(gov, obs)),
        "Ready": _ready(phase, message),
        "Expired": _expired(gov),
    }
    before = {str(c.get("type")): c for c in previous}
    return [_condition(kind, *values[kind], before.get(kind), obs.generation, now) for kind in CONDITION_TYPES]


def _condition(
    kind: str,
    status: bool,
    reason: str,
    message: str,
    previous: Mapping[str, Any] | None,
    generation: int,
    now: dt.datetime,
) -> dict[str, Any]:
    text = "True" if status else "False"
    unchanged = previous is not None and previous.get("status") == text and previous.get("lastTransitionTime")
    since = str(previous["lastTransitionTime"]) if unchanged and previous else rfc3339(now)
    return {
        "type": kind,
        "status": text,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": since,
    }


def project_status(
    gov: GovernanceView, obs: Observation, previous: Mapping[str, Any] | None, now: dt.datetime
) -> dict[str, Any]:
    """The whole ``status`` the controller writes for a project (the one-line explanation is Ready's message)."""
    previous = previous or {}
    status: dict[str, Any] = {
        "phase": phase_of(gov, obs)[0].value,
        "observedGeneration": obs.generation,
        "conditions": conditions(gov, obs, previous.get("conditions") or [], now),
        "blockers": [b.as_dict() for b in gov.blockers],
    }
    if gov.approval is not None:
        status["approvalExpires"] = gov.approval.expires.isoformat()
    provisioned = obs.provisioned_request
    if obs.wanted_request is not None and obs.data_state == "complete":
        provisioned = obs.wanted_request
    if provisioned is not None:
        status["provisionedRequest"] = provisioned
    return status


def status_differs(desired: Mapping[str, Any], observed: Mapping[str, Any] | None) -> bool:
    """True if writing ``desired`` would change any status field the controller owns."""
    observed = observed or {}
    return any(desired.get(name) != observed.get(name) for name in STATUS_FIELDS)
