"""The Project CRD: generated from the pydantic model, committed without drift, structural, and as strict as the model.

"As strict" is checked against an emulation of what the API server does with a structural schema (strict field
validation as kubectl requests it, nulls pruned from non-nullable fields, list types, RE2 anchors), so that
whatever the API server would store, the controller can parse.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.conftest import EXAMPLES, REPO
from tests.support.cli import Tre
from tests.support.controller import KUBERNETES_VERSIONS, valid_project_documents, validate_strictly
from tre.controller import CONDITION_TYPES, CRD_FILE, LOOSENED_PATHS, crd_yaml, make_crd
from tre.controller._crd import project_schema
from tre.spec import API_GROUP_VERSION, Project, read_yaml

EXAMPLE = EXAMPLES / "diabetes-outcomes.project.yaml"
# Checked only by pydantic (the controller parses every Project with it and reports failures in status):
# the shape of a condition's value, and whether it fits the operator.
PYDANTIC_ONLY = frozenset({*LOOSENED_PATHS, "spec.datasets[].filter[].op"})


# ---- the committed file, and Kubernetes' own checks -------------------------------------------------------------


def test_the_committed_crd_is_generated_from_the_model() -> None:
    committed = (REPO / CRD_FILE).read_text(encoding="utf-8")
    assert committed == crd_yaml(), f"{CRD_FILE} is stale: regenerate it with `tre controller crd > {CRD_FILE}`"
    assert yaml.safe_load(committed) == make_crd()


def test_tre_controller_crd_prints_the_committed_file(tre: Tre) -> None:
    result = tre("controller", "crd")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (REPO / CRD_FILE).read_text(encoding="utf-8")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_crd_is_a_valid_custom_resource_definition(version: str) -> None:
    validate_strictly(make_crd(), version)


def test_crd_names_scope_columns_and_status_subresource() -> None:
    spec = make_crd()["spec"]
    assert (spec["group"], spec["scope"], spec["names"]["shortNames"]) == ("tre.dev", "Cluster", ["proj"])
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Phase": ".status.phase",
        "Approval Expiry": ".status.approvalExpires",
        "Age": ".metadata.creationTimestamp",
    }


def test_status_conditions_have_the_metav1_condition_shape() -> None:
    status = project_schema()["properties"]["status"]["properties"]
    assert set(status) >= {"phase", "approvalExpires", "observedGeneration", "conditions", "blockers"}
    conditions = status["conditions"]
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]
    assert set(item["required"]) == {"type", "status", "lastTransitionTime", "reason", "message"}
    assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert set(CONDITION_TYPES) == {"Approved", "DataProvisioned", "Ready", "Expired"}
    good = {
        "type": "Ready",
        "status": "True",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "reason": "Ok",
        "message": "",
    }
    jsonschema.validate(good, item)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**good, "reason": "not ok"}, item)


# ---- structural schema rules ------------------------------------------------------------------------------------

_NESTED_FORBIDDEN = {"type", "default", "title", "description", "nullable", "additionalProperties"}


def structural_problems(schema: dict[str, Any]) -> list[str]:
    """What Kubernetes' structural-schema check (apiextensions validation.go) would refuse in ``schema``."""
    problems = list(_node_problems(schema, "", root=True))
    metadata = schema.get("properties", {}).get("metadata")
    if metadata is not None and (
        set(metadata) - {"type", "properties"} or set(metadata.get("properties", {})) - {"name", "generateName"}
    ):
        problems.append("metadata: may restrict only name and generateName")
    return problems


def _node_problems(node: dict[str, Any], path: str, *, root: bool = False) -> Iterator[str]:
    where = path or "root"
    yield from (
        f"{where}: {key} is not allowed" for key in ("$ref", "$defs", "$schema", "const", "definitions") if key in node
    )
    untyped_ok = node.get("x-kubernetes-preserve-unknown-fields") or node.get("x-kubernetes-int-or-string")
    if "type" not in node and not untyped_ok:
        yield f"{where}: no type"
    if root and "additionalProperties" in node:
        yield "root: additionalProperties"
    if "properties" in node and "additionalProperties" in node:
        yield f"{where}: both properties and additionalProperties"
    if node.get("uniqueItems"):
        yield f"{where}: uniqueItems"
    if node.get("type") == "array" and "items" not in node:
        yield f"{where}: array without items"
    yield from _list_type_problems(node, where)
    for junctor in ("anyOf", "oneOf", "allOf"):
        if node.get("x-kubernetes-int-or-string") and junctor == "anyOf":
            continue
        for index, branch in enumerate(node.get(junctor, [])):
            yield from (
                f"{where}.{junctor}[{index}]: {key} in a value validation" for key in _NESTED_FORBIDDEN & set(branch)
            )
    for name, child in node.get("properties", {}).items():
        yield from _node_problems(child, f"{path}.{name}" if path else name)
    if "items" in node:
        yield from _node_problems(node["items"], f"{path}[]")


def _list_type_problems(node: dict[str, Any], where: str) -> Iterator[str]:
    list_type = node.get("x-kubernetes-list-type")
    if list_type == "set" and node["items"].get("type") not in ("string", "integer", "number", "boolean"):
        yield f"{where}: a set of non-scalars"
    if list_type == "map":
        keys = node.get("x-kubernetes-list-map-keys", [])
        item = node["items"]
        if not keys or any(
            k not in item.get("required", []) and "default" not in item["properties"].get(k, {}) for k in keys
        ):
            yield f"{where}: map keys must be required or defaulted"


def test_the_generated_schema_is_structural() -> None:
    assert structural_problems(project_schema()) == []


@pytest.mark.parametrize(
    ("mutation", "problem"),
    [
        (lambda s: s["properties"]["spec"].__setitem__("$ref", "#/$defs/X"), "spec: $ref"),
        (lambda s: s["properties"]["spec"]["properties"]["title"].pop("type"), "spec.title: no type"),
        (lambda s: s.__setitem__("additionalProperties", False), "root: additionalProperties"),
        (
            lambda s: s["properties"]["spec"]["properties"]["lead"].__setitem__("anyOf", [{"type": "string"}]),
            "spec.lead.anyOf[0]: type",
        ),
        (lambda s: s["properties"]["metadata"]["properties"].__setitem__("labels", {"type": "object"}), "metadata"),
        (lambda s: s["properties"]["spec"]["properties"]["members"].__setitem__("uniqueItems", True), "uniqueItems"),
    ],
)
def test_the_structural_check_notices_what_kubernetes_refuses(mutation: Any, problem: str) -> None:
    schema = project_schema()
    mutation(schema)
    assert any(problem in p for p in structural_problems(schema)), structural_problems(schema)


# ---- an emulation of the API server validating a Project against the CRD schema ------------------------------


def _re2_pattern(pattern: str) -> str:
    """Go's RE2 reads a final ``$`` as the end of the text; Python's ``re`` also matches before a final newline."""
    return pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith(r"\$") else pattern


def _server_schema(node: dict[str, Any], *, is_metadata: bool = False) -> dict[str, Any]:
    """``node`` as plain JSON Schema with the API server's behaviour spelled out."""
    out = copy.deepcopy(node)
    if out.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "pattern" in out:
        out["pattern"] = _re2_pattern(out["pattern"])
    if "properties" in out:
        out["properties"] = {
            k: _server_schema(v, is_metadata=(k == "metadata" and is_metadata)) for k, v in out["properties"].items()
        }
        if not out.get("x-kubernetes-preserve-unknown-fields") and not is_metadata:
            out["additionalProperties"] = False  # strict field validation (kubectl's default since 1.27)
    if "items" in out:
        out["items"] = _server_schema(out["items"])
    if out.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    return out


def _unique_map_keys(
    validator: Any, keys: list[str], instance: Any, schema: Any
) -> Iterator[jsonschema.ValidationError]:
    if not validator.is_type(instance, "array"):
        return
    seen = [json.dumps([item.get(k) for k in keys]) for item in instance if isinstance(item, dict)]
    if len(seen) != len(set(seen)):
        yield jsonschema.ValidationError(f"duplicate entries for keys {keys}")


_ServerValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, {"x-kubernetes-list-map-keys": _unique_map_keys}
)


def _prune_nulls(value: Any, schema: dict[str, Any]) -> Any:
    """The API server drops a null given for a field that is not nullable (before defaulting and validation)."""
    if isinstance(value, dict) and "properties" in schema:
        known = schema["properties"]
        return {
            k: _prune_nulls(v, known.get(k, {}))
            for k, v in value.items()
            if not (v is None and k in known and not known[k].get("nullable"))
        }
    if isinstance(value, list) and "items" in schema:
        return [_prune_nulls(item, schema["items"]) for item in value]
    return value


_ENVELOPE = {"apiVersion": API_GROUP_VERSION, "kind": "Project"}


class ApiServer:
    """Validates Project documents the way the API server would with the generated CRD schema."""

    def __init__(self) -> None:
        self.schema = project_schema()
        self._validator = _ServerValidator(_server_schema(self.schema, is_metadata=True))

    def admit(self, document: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The document as stored, and every reason to refuse it (empty if admitted)."""
        stored = _prune_nulls(document, self.schema)
        errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in self._validator.iter_errors(stored)]
        return stored, errors + self._envelope_errors(stored)

    @staticmethod
    def _envelope_errors(stored: dict[str, Any]) -> list[str]:
        """What the API server guarantees before any schema: the resource the request is for, and a name."""
        errors = [f"{key}: not this resource" for key, value in _ENVELOPE.items() if stored.get(key) != value]
        metadata = stored.get("metadata")
        if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
            errors.append("metadata.name: required")
        return errors


API_SERVER = ApiServer()


def pydantic_accepts(document: dict[str, Any]) -> bool:
    try:
        Project.model_validate(document)
    except ValidationError:
        return False
    return True


def test_the_example_project_is_admitted() -> None:
    _, errors = API_SERVER.admit(read_yaml(EXAMPLE))
    assert errors == []


def _edit(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy with the dotted ``path`` set to ``value`` (``...`` deletes it)."""
    document = copy.deepcopy(document)
    *parents, last = path.split(".")
    node: Any = document
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is ...:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return document


KNOWN_BAD = [
    ("spec.colour", "blue"),
    ("spec.workspace.disk", "1Gi"),
    ("spec.datasets.0.rows", 10),
    ("spec.datasets.0.filter.0.negate", True),
    ("metadata.name", "Diabetes"),
    ("metadata.name", "x" * 41),
    ("metadata.name", "-diabetes"),
    ("metadata.name", "dia_betes"),
    ("spec.datasets.0.filter.0.op", "like"),
    ("spec.datasets.0.filter.0.op", ...),
    ("spec.lead", ...),
    ("spec.lead", "Alice"),
    ("spec.members", ["bob", "bob"]),
    ("spec.members", "bob"),
    ("spec.datasets.0.columns", []),
    ("spec.datasets.0.columns", ["sex", "sex"]),
    ("spec.datasets", [{"name": "a", "columns": ["x"]}, {"name": "a", "columns": ["y"]}]),
    ("spec.datasets.0.name", "Hospital"),
    ("spec.workspace.gpu", 17),
    ("spec.workspace.gpu", -1),
    ("spec.workspace.cpu", "two"),
    ("spec.workspace.memory", "8GB"),
    ("spec.title", ""),
    ("spec.title", "   "),
    ("spec.title", "x" * 201),
    ("spec.egressAllowList", ["https://pypi.org"]),
    ("spec.suspended", "sometimes"),
    ("spec", ...),
]


@pytest.mark.parametrize(("path", "value"), KNOWN_BAD, ids=[f"{p}={v!r}"[:50] for p, v in KNOWN_BAD])
def test_known_bad_projects_are_refused_by_both(path: str, value: Any) -> None:
    document = _edit(read_yaml(EXAMPLE), path, value)
    assert not pydantic_accepts(document)
    _, errors = API_SERVER.admit(document)
    assert errors, f"the CRD schema admits {path}={value!r}, which pydantic refuses"


def test_only_pydantic_checks_that_a_condition_value_fits_its_operator() -> None:
    """The documented gap: a structural schema cannot say 'scalar or list', nor relate one field to another."""
    document = _edit(read_yaml(EXAMPLE), "spec.datasets.0.filter.0.value", "E11")  # 'in' needs a list
    assert not pydantic_accepts(document)
    assert API_SERVER.admit(document)[1] == []
    assert LOOSENED_PATHS == ("spec.datasets[].filter[].value",)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_project_documents())
def test_every_valid_project_is_admitted(document: dict[str, Any]) -> None:
    project = Project.model_validate(document)
    for form in (document, project.model_dump(mode="json", by_alias=True)):
        stored, errors = API_SERVER.admit(form)
        assert errors == [], (form, errors)
        assert Project.model_validate(stored) == project


def _paths(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every (dotted path, schema path) in a document, e.g. ('spec.datasets.0.name', 'spec.datasets[].name')."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, f"{path}.{index}")
    if path:
        yield path, re.sub(r"\.\d+(?=\.|$)", "[]", path)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 100) | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=2),
    max_leaves=4,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_project_documents(), st.data())
def test_whatever_the_api_server_admits_the_controller_can_parse(document: dict[str, Any], data: st.DataObject) -> None:
    """Replace any field (or add an unknown one) with any JSON: if the API server would store it, pydantic parses
    what it stored, except where the CRD documents that only pydantic checks (``PYDANTIC_ONLY``)."""
    paths = sorted(_paths(document))
    path, schema_path = data.draw(st.sampled_from([*paths, ("spec.unknownField", "spec.unknownField")]))
    edited = _edit(document, path, data.draw(_json))
    stored, errors = API_SERVER.admit(edited)
    if errors or any(schema_path.startswith(p) for p in PYDANTIC_ONLY):
        return
    assert pydantic_accepts(stored), f"the API server would store this, which pydantic refuses: {stored!r}"


def test_the_generated_schema_differs_from_pydantic_only_in_kubernetes_terms() -> None:
    """Guard the converter: every pydantic property is present, with the same required fields."""
    source = Project.model_json_schema(by_alias=True)
    generated = project_schema()
    spec_source = source["$defs"]["ProjectSpec"]
    spec = generated["properties"]["spec"]
    assert list(spec["properties"]) == list(spec_source["properties"])
    assert spec["required"] == spec_source["required"]
    assert not {"$ref", "$defs", "$schema", "const", "title", "additionalProperties"} & _keywords(generated)


def _keywords(node: dict[str, Any]) -> set[str]:
    """Every schema keyword used anywhere in ``node`` (property names are not keywords)."""
    keywords = set(node)
    for key, value in node.items():
        if key == "properties":
            for child in value.values():
                keywords |= _keywords(child)
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            keywords |= _keywords(value)
        elif key in ("anyOf", "oneOf", "allOf"):
            for branch in value:
                keywords |= _keywords(branch)
    return keywords
