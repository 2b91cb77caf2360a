"""Governance: the approval gate, accreditation, phases, the transparency register, the citation. Pure."""

from tre.governance._approval import (
    approved_datasets,
    check_approval,
    check_user_can_approve,
    user_can_approve,
)
from tre.governance._blockers import Blocker, BlockerCode, project_blockers
from tre.governance._phase import Phase, derive_phase
from tre.governance._register import REGISTER_FIELDS, RegisterEntry, redact, register_entry
from tre.governance.citation import PATIENT_DATA_CITATION

__all__ = [
    "PATIENT_DATA_CITATION",
    "REGISTER_FIELDS",
    "Blocker",
    "BlockerCode",
    "Phase",
    "RegisterEntry",
    "approved_datasets",
    "check_approval",
    "check_user_can_approve",
    "derive_phase",
    "project_blockers",
    "redact",
    "register_entry",
    "user_can_approve",
]
