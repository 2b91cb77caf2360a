"""Read declaration files, turning every way they can be wrong into one clear line."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from tre.errors import SpecError

MAX_DECLARATION_BYTES = 1024 * 1024
_MAX_ERRORS_SHOWN = 3

M = TypeVar("M", bound=BaseModel)


def describe_validation_error(error: ValidationError) -> str:
    """One line naming each problem (up to three) by its path in the file."""
    parts = [_describe_one(e) for e in error.errors(include_url=False)]
    shown = "; ".join(parts[:_MAX_ERRORS_SHOWN])
    hidden = len(parts) - _MAX_ERRORS_SHOWN
    return f"{shown} (and {hidden} more)" if hidden > 0 else shown


def _describe_one(error: Any) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "document"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"unknown field '{where}'"
    if kind == "missing":
        return f"missing field '{where}'"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}"


def read_yaml(path: Path) -> dict[str, Any]:
    """The single YAML mapping in ``path``; SpecError if it is missing, too big, or not one mapping."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise SpecError(f"{path}: cannot read file ({exc.strerror})") from exc
    if not path.is_file():
        raise SpecError(f"{path}: not a regular file")
    if size > MAX_DECLARATION_BYTES:
        raise SpecError(f"{path}: file is {size} bytes, over the {MAX_DECLARATION_BYTES}-byte limit")
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML ({_yaml_position(exc)})") from exc
    if len(documents) != 1:
        raise SpecError(f"{path}: expected one YAML document, found {len(documents)}")
    document = documents[0]
    if not isinstance(document, dict):
        raise SpecError(f"{path}: expected a mapping at the top level, found {type(document).__name__}")
    return document


def _yaml_position(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or "syntax error"
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else str(problem)


def parse(model: type[M], data: dict[str, Any], *, source: str) -> M:
    """Validate ``data`` as ``model``; SpecError with one line naming each problem."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"{source}: {describe_validation_error(exc)}") from exc


def load(model: type[M], path: Path) -> M:
    """Read and validate a declaration file of the kind ``model`` describes."""
    data = read_yaml(path)
    expected = model.model_fields["kind"].default
    if data.get("kind") != expected:
        raise SpecError(f"{path}: expected kind: {expected}, found kind: {data.get('kind')!r}")
    return parse(model, data, source=str(path))
