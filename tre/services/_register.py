"""The transparency register, from the store."""

from __future__ import annotations

import datetime as dt

from tre.governance import RegisterEntry, register_entry
from tre.services._projects import project_status
from tre.store import Unit


def released_output_count(unit: Unit, project: str) -> int:
    """Output files of the project's released requests (revoked requests no longer count)."""
    released = unit.airlock.find([project], state="released")
    return sum(1 for r in released for f in unit.airlock.files(r.id) if f.kind == "output")


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
