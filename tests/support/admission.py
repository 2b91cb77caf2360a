"""A ValidatingAdmissionPolicy evaluator on cel-python, for the TRE admission policies in policies/admission/.

It evaluates the way the API server does: the policy's resource rules and its binding's namespace selector decide
whether it applies; then match conditions (any false: it does not apply), the variables in order, and every
validation; a validation that is not true denies with its message (or messageExpression). An expression that
errors fails the test (the API server would deny, as failurePolicy is Fail): the tables should never reach one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import celpy
import yaml
from celpy import celtypes

POLICIES = Path(__file__).resolve().parents[2] / "policies" / "admission"


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def documents(folder: Path = POLICIES) -> list[dict[str, Any]]:
    return [d for path in sorted(folder.glob("*.yaml")) for d in load(path)]


def policies(folder: Path = POLICIES) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents(folder) if d["kind"] == "ValidatingAdmissionPolicy"}


def bindings(folder: Path = POLICIES) -> dict[str, dict[str, Any]]:
    return {d["spec"]["policyName"]: d for d in documents(folder) if d["kind"] == "ValidatingAdmissionPolicyBinding"}


@functools.cache
def program(expression: str) -> celpy.Runner:
    environment = celpy.Environment()
    return environment.program(environment.compile(expression))


def run(expression: str, activation: dict[str, Any]) -> Any:
    result = program(expression).evaluate(activation)
    if isinstance(result, celpy.CELEvalError):
        raise AssertionError(f"CEL error in {expression!r}: {result}")
    return result


@dataclass
class Request:
    """An admission request: who does what to which object, in which namespace."""

    operation: str
    resource: str
    user: str
    object: dict[str, Any] | None = None
    old: dict[str, Any] | None = None
    namespace: dict[str, Any] | None = None
    group: str = ""

    def activation(self) -> dict[str, Any]:
        name = (self.object or self.old or {}).get("metadata", {}).get("name", "")
        request = {
            "operation": self.operation,
            "userInfo": {"username": self.user, "groups": ["system:authenticated"]},
            "resource": {"group": self.group, "version": "v1", "resource": self.resource},
            "name": name,
            "namespace": self.namespace["metadata"]["name"] if self.namespace else "",
        }
        values = {
            "object": self.object,
            "oldObject": self.old,
            "request": request,
            "namespaceObject": self.namespace,
            "params": None,
        }
        return {key: celpy.json_to_cel(value) for key, value in values.items()}


def selected(binding: dict[str, Any], namespace: dict[str, Any] | None) -> bool:
    """The binding's namespaceSelector (only the forms our bindings use: {} and Exists expressions)."""
    selector = binding["spec"]["matchResources"]["namespaceSelector"]
    labels = (namespace or {}).get("metadata", {}).get("labels", {})
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "Exists", "extend _selected for other operators"
        if expression["key"] not in labels:
            return False
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def matches_rules(policy: dict[str, Any], request: Request) -> bool:
    for rule in policy["spec"]["matchConstraints"]["resourceRules"]:
        if request.group in rule["apiGroups"] and request.resource in rule["resources"]:
            return request.operation in rule["operations"]
    return False


def admit(name: str, request: Request) -> list[str] | None:
    """None when the policy does not apply; otherwise the messages of the failed validations ([] = allowed)."""
    policy, binding = policies()[name], bindings()[name]
    if not matches_rules(policy, request):
        return None
    if request.namespace is not None and request.resource != "namespaces" and not selected(binding, request.namespace):
        return None
    activation = request.activation()
    spec = policy["spec"]
    if not all(run(c["expression"], activation) for c in spec.get("matchConditions", [])):
        return None
    variables: dict[celtypes.StringType, Any] = {}
    for variable in spec.get("variables", []):
        activation["variables"] = celtypes.MapType(variables)
        variables[celtypes.StringType(variable["name"])] = run(variable["expression"], activation)
    activation["variables"] = celtypes.MapType(variables)
    failures = []
    for validation in spec["validations"]:
        verdict = run(validation["expression"], activation)
        assert isinstance(verdict, celtypes.BoolType), f"{validation['expression']!r} gave {verdict!r}, not a bool"
        if not verdict:
            message = validation.get("messageExpression")
            failures.append(str(run(message, activation)) if message else validation["message"])
    return failures
