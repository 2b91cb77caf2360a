"""Helpers for the controller tests: Kubernetes schema validation on every supported version, valid Projects."""

from __future__ import annotations

import functools
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils
from hypothesis import strategies as st

from tre.spec import Operator

KUBERNETES_VERSIONS = ("1.30", "1.31", "1.32", "1.33", "1.34")

# kubernetes-validate reads and parses the (large) schema files on every call; they never change, so read each once.
kubernetes_validate.utils.schema_contents = functools.lru_cache(maxsize=None)(  # type: ignore[method-assign]
    kubernetes_validate.utils.schema_contents
)


def validate_strictly(obj: dict[str, Any], version: str) -> None:
    """Validate against the official schema of exactly ``version`` in strict mode (unknown fields refused)."""
    used = kubernetes_validate.validate(obj, version, strict=True)
    assert used == version, f"kubernetes-validate used the {used} schemas for {version}"


def kubernetes_errors(obj: dict[str, Any]) -> list[str]:
    """Every version's complaint about ``obj``; empty when it is valid on all of them."""
    errors = []
    for version in KUBERNETES_VERSIONS:
        try:
            validate_strictly(obj, version)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            errors.append(f"{version} {obj['kind']}/{obj['metadata']['name']} {where}: {exc.message}")
    return errors


# Valid Project documents, built to pass every rule pydantic checks (the tests assert that they do).

_user = st.from_regex(r"[a-z][a-z0-9._-]{0,12}", fullmatch=True)
_column = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
_dataset_name = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=40).filter(
    lambda s: s.strip() != ""
)
_scalar = st.one_of(
    st.text(max_size=8), st.integers(-(10**6), 10**6), st.floats(allow_nan=False, allow_infinity=False), st.booleans()
)
_cpu = st.one_of(
    st.integers(0, 64).map(str),
    st.integers(1, 64000).map(lambda n: f"{n}m"),
    st.decimals(min_value=0, max_value=64, places=2).map(str),
)
_bytes = st.builds(
    lambda number, unit: f"{number}{unit}",
    st.one_of(st.integers(1, 2048).map(str), st.just("0.5"), st.just("1.25")),
    st.sampled_from(["Ki", "Mi", "Gi", "Ti", "k", "M", "G", "T", ""]),
)
_host = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?(\.[a-z]{2,6}){0,2}(:[0-9]{1,5})?", fullmatch=True)


@st.composite
def _condition(draw: st.DrawFn) -> dict[str, Any]:
    op = draw(st.sampled_from(list(Operator)))
    condition: dict[str, Any] = {"column": draw(_column), "op": op.value}
    if op in (Operator.IN, Operator.NOT_IN):
        condition["value"] = draw(st.lists(_scalar, min_size=1, max_size=3))
    elif op not in (Operator.IS_NULL, Operator.NOT_NULL):
        condition["value"] = draw(_scalar)
    return condition


_dataset_request = st.fixed_dictionaries(
    {"name": _dataset_name, "columns": st.lists(_column, min_size=1, max_size=4, unique=True)},
    optional={"filter": st.lists(_condition(), max_size=3)},
)
_workspace = st.fixed_dictionaries(
    {}, optional={"cpu": _cpu, "memory": _bytes, "storage": _bytes, "gpu": st.integers(0, 16)}
)


def valid_project_documents() -> st.SearchStrategy[dict[str, Any]]:
    """Project documents (as in a YAML file) that the pydantic model accepts."""
    spec = st.fixed_dictionaries(
        {
            "title": _text,
            "laySummary": _text,
            "organisation": _text,
            "purpose": _text,
            "publicBenefit": _text,
            "legalBasis": _text,
            "lead": _user,
        },
        optional={
            "members": st.lists(_user, unique=True, max_size=4),
            "datasets": st.lists(_dataset_request, max_size=3, unique_by=lambda d: d["name"]),
            "workspace": _workspace,
            "egressAllowList": st.lists(_host, max_size=2),
            "suspended": st.booleans(),
        },
    )
    name = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?", fullmatch=True)
    return st.fixed_dictionaries(
        {
            "apiVersion": st.just("tre.dev/v1alpha1"),
            "kind": st.just("Project"),
            "metadata": st.fixed_dictionaries({"name": name}),
            "spec": spec,
        }
    )
