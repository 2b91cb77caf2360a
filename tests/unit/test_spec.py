"""Declarations: the examples parse; every kind of bad input gets one line naming what is wrong."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import EXAMPLES
from tre.errors import SpecError
from tre.spec import Dataset, Project, json_schema, load, parse, read_yaml
from tre.spec._loading import MAX_DECLARATION_BYTES

DATASET_FILE = EXAMPLES / "hospital-episodes.dataset.yaml"
PROJECT_FILE = EXAMPLES / "diabetes-outcomes.project.yaml"


def dataset_doc() -> dict[str, Any]:
    return read_yaml(DATASET_FILE)


def project_doc() -> dict[str, Any]:
    return read_yaml(PROJECT_FILE)


def test_examples_parse() -> None:
    dataset = load(Dataset, DATASET_FILE)
    project = load(Project, PROJECT_FILE)
    assert dataset.spec.nhs_number_column == "nhs_number"
    assert project.name == "diabetes-outcomes"
    assert project.spec.all_members == {"alice", "bob"}
    assert project.spec.egress_allow_list == []
    assert project.spec.datasets[0].referenced_columns >= {"diagnosis_code", "admission_date"}


def test_round_trip_through_json_is_lossless() -> None:
    project = load(Project, PROJECT_FILE)
    assert Project.model_validate_json(project.model_dump_json(by_alias=True)) == project


def edit(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``doc`` with the dotted ``path`` set to ``value`` (``...`` deletes it)."""
    doc = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    key: Any = int(last) if last.isdigit() else last
    if value is ...:
        del node[key]
    else:
        node[key] = value
    return doc


PROJECT_ERRORS = [
    ("spec.colour", "blue", "unknown field 'spec.colour'"),
    ("spec.datasets.0.colums", ["sex"], "unknown field 'spec.datasets.0.colums'"),
    ("spec.title", ..., "missing field 'spec.title'"),
    ("metadata.name", "Diabetes_Outcomes", "metadata.name: String should match pattern"),
    ("metadata.name", "a" * 41, "metadata.name: String should have at most 40 characters"),
    ("metadata.name", "-leading-hyphen", "metadata.name: String should match pattern"),
    ("spec.members", ["bob", "bob"], "members listed twice: bob"),
    ("spec.lead", 42, "spec.lead: Input should be a valid string"),
    ("spec.workspace.cpu", "lots", "spec.workspace.cpu: String should match pattern"),
    ("spec.workspace.gpu", -1, "spec.workspace.gpu: Input should be greater than or equal to 0"),
    ("spec.egressAllowList", ["http://evil.example/"], "spec.egressAllowList.0: String should match pattern"),
    ("spec.datasets.0.columns", [], "spec.datasets.0.columns: List should have at least 1 item"),
    ("spec.datasets.0.columns", ["sex", "sex"], "columns listed twice: sex"),
    ("spec.datasets.0.filter", [{"column": "sex", "op": "in", "value": "F"}], "'in' needs a non-empty list"),
    ("spec.datasets.0.filter", [{"column": "sex", "op": "==", "value": [1]}], "'==' needs a single value"),
    ("spec.datasets.0.filter", [{"column": "sex", "op": "is null", "value": 1}], "'is null' takes no value"),
    (
        "spec.datasets.0.filter",
        [{"column": "sex", "op": "~", "value": 1}],
        "spec.datasets.0.filter.0.op: Input should be",
    ),
    ("kind", "Dataset", "kind: Input should be 'Project'"),
]


@pytest.mark.parametrize(("path", "value", "expected"), PROJECT_ERRORS)
def test_project_errors_name_the_problem(path: str, value: Any, expected: str) -> None:
    with pytest.raises(SpecError) as error:
        parse(Project, edit(project_doc(), path, value), source="p.yaml")
    message = str(error.value)
    assert expected in message
    assert message.startswith("p.yaml: ")
    assert "\n" not in message


def test_duplicate_datasets_rejected() -> None:
    doc = project_doc()
    doc["spec"]["datasets"].append(copy.deepcopy(doc["spec"]["datasets"][0]))
    with pytest.raises(SpecError, match="datasets requested twice: hospital-episodes"):
        parse(Project, doc, source="p.yaml")


def _column(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, **fields}


DATASET_ERRORS = [
    ("spec.format", "xlsx", "spec.format: Input should be 'csv' or 'parquet'"),
    ("spec.identifiability", "secret", "spec.identifiability: Input should be"),
    ("spec.columns", [], "spec.columns: List should have at least 1 item"),
    ("spec.columns.1.nhsNumber", True, "only one column may be the NHS number, found nhs_number, patient_name"),
    ("spec.columns.0.nhsNumber", False, "an identifiable dataset needs one column marked nhsNumber"),
    ("spec.columns.4", _column("sex", classification="other", nhsNumber=True), "nhsNumber is only allowed on a direct"),
    ("spec.columns.4", _column("sex", classification="other", generalise="year"), "only allowed on a quasi-identifier"),
    ("spec.columns.4", _column("sex", classification="quasi-identifier", generalise="year"), "needs type date"),
    ("spec.columns.2.type", "string", "generalise year needs type date"),
    ("spec.columns.3.type", "integer", "generalise outward-code needs type string"),
    ("spec.columns.4.name", "nhs_number", "column 'nhs_number' is declared twice"),
    ("spec.columns.4.name", "drop table;", "spec.columns.4.name: String should match pattern"),
    ("spec.columns.4.classification", "secret", "spec.columns.4.classification: Input should be"),
]


@pytest.mark.parametrize(("path", "value", "expected"), DATASET_ERRORS)
def test_dataset_errors_name_the_problem(path: str, value: Any, expected: str) -> None:
    with pytest.raises(SpecError) as error:
        parse(Dataset, edit(dataset_doc(), path, value), source="d.yaml")
    assert expected in str(error.value)
    assert "\n" not in str(error.value)


def test_anonymous_dataset_cannot_hold_direct_identifiers() -> None:
    doc = edit(dataset_doc(), "spec.identifiability", "anonymous")
    with pytest.raises(SpecError, match="anonymous dataset cannot have direct identifiers"):
        parse(Dataset, doc, source="d.yaml")


def test_many_errors_are_summarised_on_one_line() -> None:
    doc = {"apiVersion": "tre.dev/v1alpha1", "kind": "Project", "metadata": {"name": "x"}, "spec": {"a": 1, "b": 2}}
    with pytest.raises(SpecError) as error:
        parse(Project, doc, source="p.yaml")
    assert "more)" in str(error.value)
    assert "\n" not in str(error.value)


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "decl.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("kind: Project\nspec: [unclosed\n", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping at the top level, found list"),
        ("kind: Project\n---\nkind: Project\n", "expected one YAML document, found 2"),
        ("", "expected one YAML document, found 0"),
        (b"kind: \xff\xfe\n", "not UTF-8 text"),
        ("kind: Dataset\n", "expected kind: Project, found kind: 'Dataset'"),
    ],
)
def test_unreadable_files(tmp_path: Path, content: str | bytes, expected: str) -> None:
    with pytest.raises(SpecError, match=expected):
        load(Project, write(tmp_path, content))


def test_yaml_error_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"at line 4, column 4"):
        load(Project, write(tmp_path, "kind: Project\nspec:\n  title: [a\n  x: }\n"))


def test_missing_and_oversized_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read file"):
        load(Project, tmp_path / "absent.yaml")
    with pytest.raises(SpecError, match="not a regular file"):
        load(Project, tmp_path)
    big = write(tmp_path, "# " + "x" * MAX_DECLARATION_BYTES)
    with pytest.raises(SpecError, match="over the 1048576-byte limit"):
        load(Project, big)


def test_yaml_tags_cannot_construct_objects(tmp_path: Path) -> None:
    path = write(tmp_path, "!!python/object/apply:os.system ['true']\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load(Project, path)


@pytest.mark.parametrize("kind", ["project", "dataset"])
def test_json_schema_forbids_unknown_fields_and_uses_file_names(kind: str) -> None:
    schema = json_schema(kind)
    assert schema["additionalProperties"] is False
    spec = schema["$defs"][f"{kind.capitalize()}Spec"]
    assert spec["additionalProperties"] is False
    if kind == "project":
        assert {"laySummary", "publicBenefit", "legalBasis", "egressAllowList"} <= set(spec["properties"])
        name = schema["$defs"]["ProjectMetadata"]["properties"]["name"]
        assert name["maxLength"] == 40


def test_example_files_are_plain_yaml_mappings() -> None:
    for path in EXAMPLES.glob("*.yaml"):
        assert isinstance(yaml.safe_load(path.read_text()), dict)
