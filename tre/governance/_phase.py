"""A project's phase, derived from its approval and its blockers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from enum import StrEnum

from tre.governance._blockers import Blocker
from tre.spec import Approval


class Phase(StrEnum):
    """Where a project stands. Later stages (provisioned, ready) are added by the controller."""

    PENDING = "pending"
    APPROVED = "approved"
    EXPIRED = "expired"


def derive_phase(approval: Approval | None, blockers: Sequence[Blocker], today: dt.date) -> Phase:
    """``expired`` once the approval has lapsed; ``approved`` with no blockers; otherwise ``pending``."""
    if approval is not None and today > approval.expires:
        return Phase.EXPIRED
    return Phase.PENDING if blockers else Phase.APPROVED
