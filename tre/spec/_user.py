"""Users, their roles, and their accreditations ("safe people")."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from pydantic import Field, field_validator

from tre.spec._common import Model, ShortText, UserName


class Role(StrEnum):
    RESEARCHER = "researcher"
    OUTPUT_CHECKER = "output-checker"
    APPROVER = "approver"
    ADMIN = "admin"


class Accreditation(Model):
    """Training a person holds (e.g. safe researcher training) and when it lapses."""

    name: ShortText
    expires: dt.date

    def valid_on(self, day: dt.date) -> bool:
        """True if the accreditation is still in force on ``day`` (it lapses the day after ``expires``)."""
        return day <= self.expires


class User(Model):
    name: UserName
    roles: frozenset[Role] = Field(min_length=1)
    accreditations: tuple[Accreditation, ...] = ()

    @field_validator("accreditations")
    @classmethod
    def _unique(cls, items: tuple[Accreditation, ...]) -> tuple[Accreditation, ...]:
        names = [a.name for a in items]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"accreditations listed twice: {', '.join(duplicates)}")
        return items

    def has_role(self, role: Role) -> bool:
        return role in self.roles

    def accredited_on(self, day: dt.date) -> bool:
        """True if at least one accreditation is in force on ``day``."""
        return any(a.valid_on(day) for a in self.accreditations)
