"""JSON Schema for the declarations: the one source for docs, editors and the CRD."""

from __future__ import annotations

from typing import Any

from tre.spec._dataset import Dataset
from tre.spec._project import Project

SCHEMA_MODELS = {"project": Project, "dataset": Dataset}


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a declaration kind, with camelCase field names as in files."""
    model = SCHEMA_MODELS[kind]
    schema = model.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
