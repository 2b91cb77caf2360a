"""Planning: which of a project's objects to apply or delete, and what to remove when access ends. Pure.

``plan(desired, observed)`` compares the objects the manifests want with the objects the API server holds:

- an object is applied only if it is missing, if a desired field differs from the live one, or if the
  controller's field manager owns a field the desired object no longer has (server-side apply then removes it);
  so a pass over an unchanged cluster plans nothing and makes no writes;
- an object labelled as this project's and managed by the controller, that is no longer desired (the old
  provisioning Job after the approved data request changed), is deleted.

"Differs" is a subset test with four rules: maps must hold every desired key (the server may add defaults);
lists must have the same length and match item by item; an empty desired map or list means "empty" (so a
default-deny ``podSelector: {}`` that someone narrowed, or an ``ingress: []`` someone added rules to, is drift);
and two quantities are equal when their values are (the server writes ``1.5`` back as ``1500m``).

``teardown_plan`` lists what goes when a project loses access (approval expired or withdrawn, a member's
accreditation lapsed, suspension, deletion): the hub entry and anything else that grants access, the
provisioning Jobs and every Pod in the project namespace; with ``Retention.DELETE``, the namespace as well
(and with it the data volume). The isolation objects and the data stay with ``Retention.KEEP``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, NamedTuple

from tre.controller._manifests import MANAGED_BY, MANAGED_BY_LABEL, PROJECT_LABEL
from tre.errors import IntegrityError

# What stays when access is removed but the data is kept: isolation and storage, nothing that grants access.
KEPT_KINDS = frozenset(
    {"Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "ServiceAccount", "PersistentVolumeClaim"}
)
# Deletions run in this order: stop the work first (Jobs, then Pods), remove access, the namespace last.
_DELETE_ORDER = {"Job": 0, "Pod": 1, "ConfigMap": 2, "RoleBinding": 3, "Role": 4, "Namespace": 99}


class ObjectKey(NamedTuple):
    api_version: str
    kind: str
    namespace: str | None
    name: str

    def describe(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


def object_key(obj: Mapping[str, Any]) -> ObjectKey:
    metadata = obj.get("metadata") or {}
    return ObjectKey(str(obj["apiVersion"]), str(obj["kind"]), metadata.get("namespace"), str(metadata["name"]))


def labels_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def managed_labels(project: str) -> dict[str, str]:
    """The labels every object the controller makes for ``project`` carries; also its list selector."""
    return {PROJECT_LABEL: project, MANAGED_BY_LABEL: MANAGED_BY}


def is_managed_for(obj: Mapping[str, Any], project: str) -> bool:
    labels = labels_of(obj)
    return labels.get(PROJECT_LABEL) == project and labels.get(MANAGED_BY_LABEL) == MANAGED_BY


def hub_entry_name(project: str) -> str:
    """The name of a project's entry in the hub namespace (as ``make_hub_entry`` builds it)."""
    return f"tre-workspace-{project}"


@dataclass(frozen=True)
class Scope:
    """Where one project's objects may be: its own namespace (and the Namespace itself), and its one hub entry.

    The hub namespace is shared by every project, so there only the project's own entry is in its scope.
    """

    project: str
    namespace: str
    hub_namespace: str

    def contains(self, obj: Mapping[str, Any]) -> bool:
        key = object_key(obj)
        if key.kind == "Namespace":
            return key.name == self.namespace
        if key.namespace == self.hub_namespace:
            return key.name == hub_entry_name(self.project)
        return key.namespace == self.namespace

    def owns(self, obj: Mapping[str, Any]) -> bool:
        """True for an object labelled as this project's, managed by the controller, and inside the scope."""
        return is_managed_for(obj, self.project) and self.contains(obj)


class Verb(StrEnum):
    APPLY = "apply"
    DELETE = "delete"


@dataclass(frozen=True)
class Action:
    """One write: apply ``obj``, or delete the object at ``key``; ``reason`` says why, for Events."""

    verb: Verb
    key: ObjectKey
    reason: str
    obj: Mapping[str, Any] | None = None


class Retention(StrEnum):
    """What happens to a project's namespace and data volume when its access is removed."""

    KEEP = "keep"
    DELETE = "delete"


# Comparing desired with live objects

_QUANTITY = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?")
_SUFFIXES = {
    "": Decimal(1), "m": Decimal("0.001"), "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18, "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}  # fmt: skip


def quantity(text: str) -> Decimal | None:
    """The value of a Kubernetes quantity (``500m``, ``8Gi``, ``1e3``), or None if ``text`` is not one."""
    match = _QUANTITY.fullmatch(text)
    if match is None:
        return None
    number, suffix = match.group(1), match.group(2) or ""
    try:
        if suffix[:1] in ("e", "E"):
            return Decimal(number) * Decimal(10) ** int(suffix[1:])
        return Decimal(number) * _SUFFIXES[suffix]
    except (InvalidOperation, ValueError):
        return None


def _same_scalar(desired: Any, live: Any) -> bool:
    if desired == live:
        return True
    if isinstance(desired, str) and isinstance(live, str):
        value = quantity(desired)
        return value is not None and value == quantity(live)
    return False


def is_subset(desired: Any, live: Any) -> bool:
    """True if every field of ``desired`` is in ``live`` with the same value (see the module docstring)."""
    if desired == live:
        return True  # the common case, decided in C without walking the tree
    if isinstance(desired, dict):
        if not desired or not isinstance(live, dict):
            return not desired and live is None
        return all(is_subset(value, live.get(name)) for name, value in desired.items())
    if isinstance(desired, list):
        if not desired or not isinstance(live, list) or len(live) != len(desired):
            return not desired and live is None
        return all(map(is_subset, desired, live))
    return _same_scalar(desired, live)


def _stale_fields(tree: Mapping[str, Any], wanted: Any) -> bool:
    """True if a managedFields ``fieldsV1`` tree names a map field that ``wanted`` does not have.

    The walk stops at list items (``k:``, ``v:``, ``i:`` keys) and wherever ``wanted`` stops being a map.
    """
    for name, child in tree.items():
        if not name.startswith("f:"):
            continue
        if not isinstance(wanted, dict) or name[2:] not in wanted:
            return True
        value = wanted[name[2:]]
        if isinstance(value, dict) and value and isinstance(child, dict) and _stale_fields(child, value):
            return True
    return False


def owns_stale_fields(live: Mapping[str, Any], wanted: Mapping[str, Any], field_manager: str) -> bool:
    """True if ``field_manager`` owns, through server-side apply of the main resource, a field not in ``wanted``."""
    entries = (live.get("metadata") or {}).get("managedFields") or []
    applied = (field_manager, "Apply")
    ours = [e for e in entries if (e.get("manager"), e.get("operation")) == applied and not e.get("subresource")]
    return any(_stale_fields(entry.get("fieldsV1") or {}, wanted) for entry in ours)


def _comparable(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a desired object that apply sets: not status, and only labels/annotations of metadata."""
    metadata = obj.get("metadata") or {}
    kept = {name: metadata[name] for name in ("labels", "annotations", "finalizers") if name in metadata}
    body = {name: value for name, value in obj.items() if name not in ("apiVersion", "kind", "metadata", "status")}
    return body | ({"metadata": kept} if kept else {})


def apply_reason(desired: Mapping[str, Any], live: Mapping[str, Any] | None, field_manager: str) -> str | None:
    """Why ``desired`` must be applied over ``live`` ("missing", "drifted", "fields removed"), or None."""
    if live is None:
        return "missing"
    wanted = _comparable(desired)
    if not is_subset(wanted, live):
        return "drifted"
    if owns_stale_fields(live, wanted, field_manager):
        return "fields removed"
    return None


# Plans


def plan(
    desired: Sequence[Mapping[str, Any]],
    observed: Iterable[Mapping[str, Any]],
    *,
    scope: Scope,
    field_manager: str,
) -> list[Action]:
    """The writes that bring ``observed`` (the project's labelled objects) to ``desired``; none if equal.

    Only objects inside ``scope`` are ever deleted: a label copied onto another project's object makes it
    look like ours, but it is never touched.
    """
    check_scope(desired, scope)
    live = {object_key(obj): obj for obj in observed}
    wanted = {object_key(obj) for obj in desired}
    actions = []
    for obj in desired:
        key = object_key(obj)
        reason = apply_reason(obj, live.get(key), field_manager)
        if reason is not None:
            actions.append(Action(Verb.APPLY, key, reason, obj))
    stale = [obj for key, obj in live.items() if key not in wanted and scope.owns(obj)]
    return actions + _deletions(stale, "no longer desired")


def _deletions(objects: Iterable[Mapping[str, Any]], reason: str) -> list[Action]:
    keys = sorted({object_key(obj) for obj in objects}, key=lambda k: (_DELETE_ORDER.get(k.kind, 50), k))
    return [Action(Verb.DELETE, key, reason) for key in keys]


def teardown_plan(
    observed: Iterable[Mapping[str, Any]],
    running: Iterable[Mapping[str, Any]],
    *,
    scope: Scope,
    retention: Retention,
) -> list[Action]:
    """The deletions that remove every route to the project's data; with DELETE, the namespace and data too.

    ``observed`` is the project's labelled objects and whatever holds its hub entry's name; ``running`` every Pod
    and Job in its namespace. Everything in the project namespace belongs to the project, and the hub entry's
    name is reserved for it, so those go whatever their labels say: relabelling cannot hide access.
    """
    observed = list(observed)
    ours = [obj for obj in observed if scope.owns(obj)]
    hub = [obj for obj in observed if scope.contains(obj) and object_key(obj).namespace == scope.hub_namespace]
    access = [obj for obj in ours if obj.get("kind") not in KEPT_KINDS]
    work = [obj for obj in running if _inside(obj, scope.namespace) and obj.get("kind") in ("Pod", "Job")]
    actions = _deletions([*access, *hub, *work], "access removed")
    if retention is Retention.DELETE:
        rest = [obj for obj in ours if obj.get("kind") in KEPT_KINDS and not _inside(obj, scope.namespace)]
        actions += _deletions(rest, "data removed")
    return actions


def _inside(obj: Mapping[str, Any], namespace: str) -> bool:
    """True for objects that go when ``namespace`` is deleted (everything in it, not the Namespace itself)."""
    return (obj.get("metadata") or {}).get("namespace") == namespace


def check_scope(desired: Iterable[Mapping[str, Any]], scope: Scope) -> None:
    """Refuse desired objects that are not labelled for the project or that sit outside its scope."""
    for obj in desired:
        if labels_of(obj).get(PROJECT_LABEL) != scope.project or not scope.contains(obj):
            raise IntegrityError(
                f"refusing to write {object_key(obj).describe()} for project {scope.project}: it is outside its "
                f"namespace {scope.namespace} and its hub entry, or not labelled for the project"
            )
