"""The Project declaration: who, why, which data (minimum necessary), and what workspace."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import Field, StringConstraints, field_validator, model_validator

from tre.spec._common import (
    ColumnName,
    DatasetName,
    Model,
    ProjectName,
    ShortText,
    Text,
    UserName,
)

Scalar = str | int | float | bool
CPU_PATTERN = r"^([1-9][0-9]*m|[0-9]+(\.[0-9]+)?)$"
BYTES_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"
HOST_PATTERN = r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(:[0-9]{1,5})?$"


class Operator(StrEnum):
    EQ = "=="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    IN = "in"
    NOT_IN = "not in"
    IS_NULL = "is null"
    NOT_NULL = "not null"


_LIST_OPERATORS = {Operator.IN, Operator.NOT_IN}
_NULL_OPERATORS = {Operator.IS_NULL, Operator.NOT_NULL}


class Condition(Model):
    """One row condition; a filter keeps rows that satisfy all of its conditions."""

    column: ColumnName
    op: Operator
    value: Scalar | tuple[Scalar, ...] | None = None

    @model_validator(mode="after")
    def _value_fits_operator(self) -> Self:
        if self.op in _NULL_OPERATORS:
            if self.value is not None:
                raise ValueError(f"condition on {self.column!r}: {self.op.value!r} takes no value")
        elif self.op in _LIST_OPERATORS:
            if not isinstance(self.value, tuple) or not self.value:
                raise ValueError(f"condition on {self.column!r}: {self.op.value!r} needs a non-empty list")
        elif self.value is None or isinstance(self.value, tuple):
            raise ValueError(f"condition on {self.column!r}: {self.op.value!r} needs a single value")
        return self


class DatasetRequest(Model):
    """The part of one dataset a project asks for: only these columns, only rows passing the filter."""

    name: DatasetName
    columns: list[ColumnName] = Field(min_length=1)
    filter: list[Condition] = Field(default_factory=list)

    @field_validator("columns")
    @classmethod
    def _unique(cls, columns: list[str]) -> list[str]:
        duplicates = sorted({c for c in columns if columns.count(c) > 1})
        if duplicates:
            raise ValueError(f"columns listed twice: {', '.join(duplicates)}")
        return columns

    @property
    def referenced_columns(self) -> frozenset[str]:
        """Every column the request touches: the columns it keeps and the columns its filter reads."""
        return frozenset(self.columns) | {c.column for c in self.filter}


class Workspace(Model):
    """Compute for the project's workspace, as Kubernetes quantities."""

    cpu: Annotated[str, StringConstraints(pattern=CPU_PATTERN)] = "1"
    memory: Annotated[str, StringConstraints(pattern=BYTES_PATTERN)] = "4Gi"
    storage: Annotated[str, StringConstraints(pattern=BYTES_PATTERN)] = "10Gi"
    gpu: int = Field(default=0, ge=0, le=16)


EgressHost = Annotated[str, StringConstraints(pattern=HOST_PATTERN, max_length=259, to_lower=True)]


class ProjectSpec(Model):
    """Everything a review committee needs to decide, and the platform needs to provision."""

    title: ShortText
    lay_summary: Text
    organisation: ShortText
    purpose: Text
    public_benefit: Text
    legal_basis: Text
    lead: UserName
    members: list[UserName] = Field(default_factory=list)
    datasets: list[DatasetRequest] = Field(default_factory=list)
    workspace: Workspace = Field(default_factory=Workspace)
    egress_allow_list: list[EgressHost] = Field(
        default_factory=list, description="Hosts (host or host:port) a workspace may reach; none by default."
    )
    suspended: bool = Field(
        default=False, description="Stop workspaces and remove access, keeping the data and the approval."
    )

    @field_validator("datasets")
    @classmethod
    def _unique_datasets(cls, datasets: list[DatasetRequest]) -> list[DatasetRequest]:
        names = [d.name for d in datasets]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"datasets requested twice: {', '.join(duplicates)}")
        return datasets

    @field_validator("members")
    @classmethod
    def _unique_members(cls, members: list[str]) -> list[str]:
        duplicates = sorted({m for m in members if members.count(m) > 1})
        if duplicates:
            raise ValueError(f"members listed twice: {', '.join(duplicates)}")
        return members

    @property
    def all_members(self) -> frozenset[str]:
        """The lead and the members."""
        return frozenset(self.members) | {self.lead}

    def dataset(self, name: str) -> DatasetRequest | None:
        return next((d for d in self.datasets if d.name == name), None)


class ProjectMetadata(Model):
    name: ProjectName


class Project(Model):
    """A Project declaration file: ``kind: Project`` (also the custom resource in cluster mode)."""

    api_version: Literal["tre.dev/v1alpha1"] = "tre.dev/v1alpha1"
    kind: Literal["Project"] = "Project"
    metadata: ProjectMetadata
    spec: ProjectSpec

    @property
    def name(self) -> str:
        return self.metadata.name
