"""The transparency register, from the store."""

from __future__ import annotations

import datetime as dt

from tre.governance import RegisterEntry, register_entry
from tre.services._projects import project_status
from tre.store import Unit


def released_output_count(unit: Unit, project: str) -> int:
    """Output files released from the project's airlock, less those of revoked requests."""
    released = {
        e.target: len(e.details.get("files", []))
        for e in unit.audit.entries(project=project)
        if e.action == "airlock.released"
    }
    revoked = {e.target for e in unit.audit.entries(project=project) if e.action == "airlock.revoked"}
    return sum(count for request, count in released.items() if request not in revoked)


def transparency_register(unit: Unit, *, today: dt.date) -> list[RegisterEntry]:
    """Every project with a recorded approval, current or expired; never-approved projects are not listed."""
    entries = []
    for stored in unit.projects.all():
        status = project_status(unit, stored, today=today)
        if status.approval is None:
            continue
        released = released_output_count(unit, stored.name)
        entries.append(register_entry(stored.name, stored.project.spec, status.approval, released))
    return entries
