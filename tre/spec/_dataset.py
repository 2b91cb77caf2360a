"""The Dataset declaration: where a source lives and what each column is."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from tre.spec._common import ColumnName, DatasetName, Model, ShortText, Text


class Classification(StrEnum):
    """How identifying a column is; decides what the pipeline must do with it."""

    DIRECT_IDENTIFIER = "direct-identifier"
    QUASI_IDENTIFIER = "quasi-identifier"
    SENSITIVE = "sensitive"
    OTHER = "other"


class Identifiability(StrEnum):
    """The identifiability class of the source as held by the data controller."""

    IDENTIFIABLE = "identifiable"
    PSEUDONYMISED = "pseudonymised"
    ANONYMOUS = "anonymous"


class ColumnType(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    FLOAT = "float"
    DATE = "date"
    BOOLEAN = "boolean"


class Generalisation(StrEnum):
    """How a quasi-identifier is coarsened before it reaches a workspace."""

    NONE = "none"
    YEAR = "year"
    MONTH = "month"
    OUTWARD_CODE = "outward-code"


_DATE_GENERALISATIONS = {Generalisation.YEAR, Generalisation.MONTH}


class Column(Model):
    """One column of a source dataset."""

    name: ColumnName
    classification: Classification
    type: ColumnType = ColumnType.STRING
    nhs_number: bool = Field(default=False, description="This column holds the NHS number used for opt-outs.")
    generalise: Generalisation = Generalisation.NONE
    description: Text | None = None

    @model_validator(mode="after")
    def _check_markers(self) -> Self:
        if self.nhs_number and self.classification is not Classification.DIRECT_IDENTIFIER:
            raise ValueError(f"column {self.name!r}: nhsNumber is only allowed on a direct-identifier column")
        if self.generalise is Generalisation.NONE:
            return self
        if self.classification is not Classification.QUASI_IDENTIFIER:
            raise ValueError(f"column {self.name!r}: generalise is only allowed on a quasi-identifier column")
        if self.generalise in _DATE_GENERALISATIONS and self.type is not ColumnType.DATE:
            raise ValueError(f"column {self.name!r}: generalise {self.generalise.value} needs type date")
        if self.generalise is Generalisation.OUTWARD_CODE and self.type is not ColumnType.STRING:
            raise ValueError(f"column {self.name!r}: generalise outward-code needs type string")
        return self


class DatasetSpec(Model):
    """What a dataset is, who controls it, and how identifying each column is."""

    title: ShortText
    description: Text | None = None
    location: ShortText = Field(description="s3://bucket/key, or a local path (relative to the declaration file).")
    format: Literal["csv", "parquet"]
    owner: ShortText = Field(description="The data controller.")
    identifiability: Identifiability
    columns: list[Column] = Field(min_length=1)

    @field_validator("columns")
    @classmethod
    def _unique_columns(cls, columns: list[Column]) -> list[Column]:
        seen: set[str] = set()
        for column in columns:
            if column.name in seen:
                raise ValueError(f"column {column.name!r} is declared twice")
            seen.add(column.name)
        return columns

    @model_validator(mode="after")
    def _check_identifiers(self) -> Self:
        nhs = [c.name for c in self.columns if c.nhs_number]
        if len(nhs) > 1:
            raise ValueError(f"only one column may be the NHS number, found {', '.join(nhs)}")
        if self.identifiability is Identifiability.IDENTIFIABLE and not nhs:
            raise ValueError("an identifiable dataset needs one column marked nhsNumber: true (for opt-outs)")
        direct = [c.name for c in self.columns if c.classification is Classification.DIRECT_IDENTIFIER]
        if self.identifiability is Identifiability.ANONYMOUS and direct:
            raise ValueError(f"an anonymous dataset cannot have direct identifiers ({', '.join(direct)})")
        return self

    def column(self, name: str) -> Column | None:
        """The column called ``name``, or None."""
        return next((c for c in self.columns if c.name == name), None)

    @property
    def column_names(self) -> frozenset[str]:
        return frozenset(c.name for c in self.columns)

    @property
    def nhs_number_column(self) -> str | None:
        return next((c.name for c in self.columns if c.nhs_number), None)


class DatasetMetadata(Model):
    name: DatasetName


class Dataset(Model):
    """A Dataset declaration file: ``kind: Dataset``."""

    api_version: Literal["tre.dev/v1alpha1"] = "tre.dev/v1alpha1"
    kind: Literal["Dataset"] = "Dataset"
    metadata: DatasetMetadata
    spec: DatasetSpec

    @property
    def name(self) -> str:
        return self.metadata.name
