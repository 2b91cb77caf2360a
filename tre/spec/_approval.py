"""An approval: the act of an independent review committee, and the data-sharing agreement."""

from __future__ import annotations

import datetime as dt

from pydantic import Field

from tre.spec._common import ColumnName, DatasetName, Model, ProjectName, ShortText, Text, UserName
from tre.spec._project import Condition


class ApprovedDataset(Model):
    """What the committee approved for one dataset; may be narrower than requested."""

    name: DatasetName
    columns: frozenset[ColumnName] = Field(min_length=1)
    filter: tuple[Condition, ...] = ()


class Approval(Model):
    """A review committee's decision, recorded by a user with the approver role."""

    project: ProjectName
    approver: UserName
    reference: ShortText = Field(description="The committee's reference for the decision.")
    decided: dt.date
    expires: dt.date
    conditions: tuple[Text, ...] = ()
    datasets: tuple[ApprovedDataset, ...] = ()
    agreement_reference: ShortText | None = Field(default=None, description="The data-sharing agreement reference.")
    agreement_signed: dt.date | None = None

    def dataset(self, name: str) -> ApprovedDataset | None:
        return next((d for d in self.datasets if d.name == name), None)

    def in_force_on(self, day: dt.date) -> bool:
        return self.decided <= day <= self.expires
