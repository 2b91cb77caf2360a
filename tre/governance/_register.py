"""The transparency register: what the public may know about how patient data is used."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from tre.governance.nhs_number import find_nhs_numbers
from tre.spec import Approval, ProjectSpec

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_REDACTED = "[redacted]"

REGISTER_FIELDS = (
    "project",
    "title",
    "lay_summary",
    "organisation",
    "datasets",
    "legal_basis",
    "public_benefit",
    "approval_reference",
    "approved_on",
    "expires_on",
    "released_outputs",
)


@dataclass(frozen=True)
class RegisterEntry:
    """One approved project as the public sees it: no people, no patient-level data."""

    project: str
    title: str
    lay_summary: str
    organisation: str
    datasets: str
    legal_basis: str
    public_benefit: str
    approval_reference: str
    approved_on: str
    expires_on: str
    released_outputs: int

    def as_dict(self) -> dict[str, str | int]:
        return asdict(self)


def redact(text: str) -> str:
    """Free text with anything that could identify a person (NHS numbers, e-mail addresses) replaced."""
    for number in find_nhs_numbers(text):
        text = text.replace(number, _REDACTED)
    return _EMAIL.sub(_REDACTED, text)


def register_entry(name: str, spec: ProjectSpec, approval: Approval, released_outputs: int) -> RegisterEntry:
    """The register line for an approved project; free text is redacted of personal identifiers."""
    return RegisterEntry(
        project=name,
        title=redact(spec.title),
        lay_summary=redact(spec.lay_summary),
        organisation=redact(spec.organisation),
        datasets=", ".join(sorted(d.name for d in approval.datasets)),
        legal_basis=redact(spec.legal_basis),
        public_benefit=redact(spec.public_benefit),
        approval_reference=approval.reference,
        approved_on=approval.decided.isoformat(),
        expires_on=approval.expires.isoformat(),
        released_outputs=released_outputs,
    )
