"""Declarations: Dataset, Project, User and Approval models, their loading and JSON Schema."""

from tre.spec._approval import Approval, ApprovedDataset
from tre.spec._common import API_GROUP, API_GROUP_VERSION, API_VERSION
from tre.spec._dataset import (
    Classification,
    Column,
    ColumnType,
    Dataset,
    DatasetSpec,
    Generalisation,
    Identifiability,
)
from tre.spec._loading import describe_validation_error, load, parse, read_yaml
from tre.spec._project import Condition, DatasetRequest, Operator, Project, ProjectSpec, Workspace
from tre.spec._schema import SCHEMA_MODELS, json_schema
from tre.spec._user import Accreditation, Role, User

__all__ = [
    "API_GROUP",
    "API_GROUP_VERSION",
    "API_VERSION",
    "SCHEMA_MODELS",
    "Accreditation",
    "Approval",
    "ApprovedDataset",
    "Classification",
    "Column",
    "ColumnType",
    "Condition",
    "Dataset",
    "DatasetRequest",
    "DatasetSpec",
    "Generalisation",
    "Identifiability",
    "Operator",
    "Project",
    "ProjectSpec",
    "Role",
    "User",
    "Workspace",
    "describe_validation_error",
    "json_schema",
    "load",
    "parse",
    "read_yaml",
]
