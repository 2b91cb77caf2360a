"""What an extract contains: for each approved column, how it is transformed. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from tre.spec import (
    ApprovedDataset,
    Classification,
    ColumnType,
    Condition,
    Dataset,
    DatasetRequest,
    Generalisation,
)


class Transform(StrEnum):
    KEEP = "keep"
    PSEUDONYMISE = "pseudonymise"
    YEAR = "year"
    MONTH = "month"
    OUTWARD_CODE = "outward-code"


_GENERALISATIONS = {
    Generalisation.YEAR: Transform.YEAR,
    Generalisation.MONTH: Transform.MONTH,
    Generalisation.OUTWARD_CODE: Transform.OUTWARD_CODE,
}


@dataclass(frozen=True)
class OutputColumn:
    name: str
    source_type: ColumnType
    transform: Transform


@dataclass(frozen=True)
class ExtractPlan:
    """Everything the pipeline needs to extract one dataset for one project."""

    dataset: str
    location: str
    format: str
    declared: tuple[tuple[str, ColumnType], ...]
    nhs_number_column: str | None
    outputs: tuple[OutputColumn, ...]
    filter: tuple[Condition, ...]

    @property
    def pseudonymised(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.outputs if c.transform is Transform.PSEUDONYMISE)

    def declared_type(self, column: str) -> ColumnType:
        return dict(self.declared)[column]


def transform_for(classification: Classification, generalise: Generalisation) -> Transform:
    """Direct identifiers are always pseudonymised; quasi-identifiers generalised as declared; the rest kept."""
    if classification is Classification.DIRECT_IDENTIFIER:
        return Transform.PSEUDONYMISE
    return _GENERALISATIONS.get(generalise, Transform.KEEP)


def plan_extract(dataset: Dataset, request: DatasetRequest, approved: ApprovedDataset) -> ExtractPlan:
    """The plan for the columns both requested and approved, in the requested order, with the approved filter."""
    columns = [name for name in request.columns if name in approved.columns]
    outputs = []
    for name in columns:
        column = dataset.spec.column(name)
        if column is None:
            raise ValueError(f"dataset {dataset.name} has no column {name}")  # the gate prevents this
        outputs.append(OutputColumn(name, column.type, transform_for(column.classification, column.generalise)))
    return ExtractPlan(
        dataset=dataset.name,
        location=dataset.spec.location,
        format=dataset.spec.format,
        declared=tuple((c.name, c.type) for c in dataset.spec.columns),
        nhs_number_column=dataset.spec.nhs_number_column,
        outputs=tuple(outputs),
        filter=approved.filter,
    )
