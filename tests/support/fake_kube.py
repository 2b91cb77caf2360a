"""An in-memory Kubernetes API behind our ``KubeClient`` protocol, with the semantics the controller relies on.

What it models, as the API server does:

- server-side apply per field manager: fields a manager applies become its own (``managedFields``); fields it
  applied before and no longer applies are removed unless another manager also owns them; applying a different
  value for a field another manager owns is a 409 conflict unless ``force`` (which takes the field over);
- updates (merge patches, and :meth:`FakeKube.edit` standing in for ``kubectl edit``) take over the fields they
  change without conflicts;
- ``resourceVersion`` changes only when the object (or who owns what) changes; ``generation`` only when
  something other than metadata and status changes; a ``resourceVersion`` in an apply or patch is a precondition;
- the ``status`` subresource: an apply there touches only ``status``, an apply of the main resource ignores it;
- 404 for objects in a namespace that does not exist; deleting a namespace deletes everything in it; deleting
  an object with finalizers only marks it (``deletionTimestamp``) until the last finalizer is removed;
- label-selector lists, watch events with resource versions, and ``generateName``.

Simplifications: every list is atomic (owned and replaced as a whole; the real server merges some lists by
key), conflicts are found only between identical field paths, and there is no admission or schema validation.

For tests: injectable faults (:meth:`fail_next`, :meth:`chaos`), a write counter (every write request that
succeeded, changed anything or not), a log of writes, and :meth:`edit` / :meth:`remove` to make drift.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped]

from tre.clients.kube import KNOWN_RESOURCES, WatchEvent, _mapped_error

Key = tuple[str, str, str, str]  # apiVersion, kind, namespace ("" when cluster-scoped), name
FieldPath = tuple[str, ...]
Owner = tuple[str, str, str]  # manager, operation ("Apply" or "Update"), subresource ("" or "status")

WRITE_VERBS = frozenset({"apply", "patch", "create", "delete"})
_SERVER_METADATA = frozenset(
    {"name", "namespace", "resourceVersion", "uid", "generation", "creationTimestamp", "managedFields",
     "deletionTimestamp", "generateName", "selfLink"}
)  # fmt: skip
_NOT_SPEC = frozenset({"apiVersion", "kind", "metadata", "status"})


def copy(value: Any) -> Any:
    """A deep copy of JSON-like data (faster than copy.deepcopy)."""
    return json.loads(json.dumps(value))


def key_of(obj: Mapping[str, Any]) -> Key:
    metadata = obj.get("metadata") or {}
    return (str(obj["apiVersion"]), str(obj["kind"]), str(metadata.get("namespace") or ""), str(metadata["name"]))


def leaf_paths(value: Any, prefix: FieldPath = ()) -> set[FieldPath]:
    """Every field path of JSON-like data, down to scalars, lists (atomic here) and empty maps."""
    if isinstance(value, dict) and value:
        paths: set[FieldPath] = set()
        for name, child in value.items():
            paths |= leaf_paths(child, (*prefix, name))
        return paths
    return {prefix} if prefix else set()


def value_at(obj: Any, path: FieldPath) -> tuple[bool, Any]:
    node = obj
    for name in path:
        if not isinstance(node, dict) or name not in node:
            return False, None
        node = node[name]
    return True, node


def _set_at(obj: dict[str, Any], path: FieldPath, value: Any) -> None:
    node = obj
    for name in path[:-1]:
        if not isinstance(node.get(name), dict):
            node[name] = {}
        node = node[name]
    node[path[-1]] = copy(value)


def _delete_at(obj: dict[str, Any], path: FieldPath) -> None:
    """Remove a field, then any map it leaves empty (but never a top-level section such as ``spec``)."""
    parents: list[tuple[dict[str, Any], str]] = []
    node: Any = obj
    for name in path:
        if not isinstance(node, dict) or name not in node:
            return
        parents.append((node, name))
        node = node[name]
    parent, name = parents.pop()
    del parent[name]
    for parent, name in reversed(parents[1:]):
        if parent[name] != {}:
            break
        del parent[name]


def _related(a: FieldPath, b: FieldPath) -> bool:
    shorter = min(len(a), len(b))
    return a[:shorter] == b[:shorter]


def _fields_tree(paths: set[FieldPath]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for name in path:
            node = node.setdefault(f"f:{name}", {})
    return tree


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result


@dataclass
class Stored:
    obj: dict[str, Any]
    owners: dict[Owner, set[FieldPath]] = field(default_factory=dict)


@dataclass
class Fault:
    status: int
    verbs: frozenset[str] | None
    kinds: frozenset[str] | None
    remaining: int

    def matches(self, verb: str, kind: str) -> bool:
        wanted = (self.verbs is None or verb in self.verbs) and (self.kinds is None or kind in self.kinds)
        return self.remaining > 0 and wanted


@dataclass(frozen=True)
class Write:
    verb: str
    key: Key
    manager: str


class FakeKube:
    """The in-memory API server. Construct with the namespaces that exist from the start."""

    def __init__(
        self,
        field_manager: str = "tre-controller",
        *,
        namespaces: tuple[str, ...] = ("default", "kube-system"),
        history: bool = True,
    ) -> None:
        self._field_manager = field_manager
        self._keep_history = history  # what watch replays; off for benchmarks that never watch
        self.objects: dict[Key, Stored] = {}
        self._labels: dict[tuple[str, str, str, str], set[Key]] = {}
        self._kinds: dict[tuple[str, str], set[Key]] = {}
        self._history: list[tuple[int, str, Key, dict[str, Any]]] = []
        self._rv = 0
        self._uid = 0
        self._faults: list[Fault] = []
        self._chaos: tuple[float, random.Random, int, tuple[int, ...]] | None = None
        self._consecutive = 0
        self.requests: Counter[str] = Counter()
        self.writes = 0
        self.changes = 0
        self.write_log: list[Write] = []
        for namespace in namespaces:
            self.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})

    @property
    def field_manager(self) -> str:
        return self._field_manager

    # Faults

    def fail_next(
        self, count: int = 1, *, status: int = 503, verbs: set[str] | None = None, kinds: set[str] | None = None
    ) -> None:
        """Make the next ``count`` requests (of ``verbs`` on ``kinds``, default any) fail with ``status``."""
        self._faults.append(Fault(status, frozenset(verbs or ()) or None, frozenset(kinds or ()) or None, count))

    @contextmanager
    def calm(self) -> Iterator[None]:
        """No injected faults inside the block (for a test's own requests), then as before."""
        faults, chaos = self._faults, self._chaos
        self._faults, self._chaos = [], None
        try:
            yield
        finally:
            self._faults, self._chaos = faults, chaos

    def clear_faults(self) -> None:
        self._faults.clear()
        self._chaos = None

    def chaos(
        self, rate: float, *, seed: int = 0, max_consecutive: int = 2, statuses: tuple[int, ...] = (409, 429, 503)
    ) -> None:
        """Fail requests at random (never more than ``max_consecutive`` in a row); rate 0 turns it off."""
        self._chaos = (rate, random.Random(seed), max_consecutive, statuses) if rate > 0 else None

    def _inject(self, verb: str, kind: str, what: str) -> None:
        self.requests[verb] += 1
        for fault in self._faults:
            if fault.matches(verb, kind):
                fault.remaining -= 1
                raise self._error(fault.status, what, "injected fault")
        if self._chaos is not None:
            rate, rng, most, statuses = self._chaos
            if self._consecutive < most and rng.random() < rate:
                self._consecutive += 1
                raise self._error(rng.choice(statuses), what, "injected chaos")
        self._consecutive = 0

    @staticmethod
    def _error(status: int, what: str, message: str) -> Exception:
        exc = ApiException(status=status, reason=message)
        exc.body = json.dumps({"kind": "Status", "code": status, "message": message})
        exc.headers = {"Retry-After": "0"}
        return _mapped_error(exc, what)

    def reset_counters(self) -> None:
        self.requests.clear()
        self.writes = 0
        self.changes = 0
        self.write_log.clear()

    # Storage, indexes, history

    def _namespaced(self, api_version: str, kind: str) -> bool:
        info = KNOWN_RESOURCES.get((api_version, kind))
        return info.namespaced if info else True

    def _check_namespace(self, key: Key) -> None:
        api_version, kind, namespace, name = key
        if not self._namespaced(api_version, kind):
            return
        if not namespace:
            raise self._error(422, f"{kind} {name}", "a namespaced object needs a namespace")
        if ("v1", "Namespace", "", namespace) not in self.objects:
            raise self._error(404, f"{kind} {namespace}/{name}", f'namespaces "{namespace}" not found')

    def _index(self, key: Key, obj: Mapping[str, Any], add: bool) -> None:
        kind_keys = self._kinds.setdefault((key[0], key[1]), set())
        labels = (obj.get("metadata") or {}).get("labels") or {}
        buckets = [kind_keys] + [self._labels.setdefault((key[0], key[1], k, v), set()) for k, v in labels.items()]
        for bucket in buckets:
            (bucket.add if add else bucket.discard)(key)

    def _store(self, key: Key, stored: Stored, event: str) -> dict[str, Any]:
        old = self.objects.get(key)
        if old is not None:
            self._index(key, old.obj, add=False)
        self._rv += 1
        stored.obj["metadata"]["resourceVersion"] = str(self._rv)
        self.objects[key] = stored
        self._index(key, stored.obj, add=True)
        self.changes += 1
        rendered = self._render(stored)
        if self._keep_history:
            self._history.append((self._rv, event, key, rendered))
        return copy(rendered)

    def _drop(self, key: Key) -> None:
        stored = self.objects.pop(key)
        self._index(key, stored.obj, add=False)
        self._rv += 1
        stored.obj["metadata"]["resourceVersion"] = str(self._rv)
        self.changes += 1
        if self._keep_history:
            self._history.append((self._rv, "DELETED", key, self._render(stored)))
        if key[:2] == ("v1", "Namespace"):
            for inner in [k for k in self.objects if k[2] == key[3] and self._namespaced(k[0], k[1])]:
                self._drop(inner)

    def _render(self, stored: Stored) -> dict[str, Any]:
        obj = copy(stored.obj)
        managed = []
        for (manager, operation, subresource), paths in sorted(stored.owners.items()):
            entry = {"manager": manager, "operation": operation, "apiVersion": obj["apiVersion"]}
            entry |= {"fieldsType": "FieldsV1", "fieldsV1": _fields_tree(paths)}
            managed.append(entry | ({"subresource": subresource} if subresource else {}))
        obj["metadata"]["managedFields"] = managed
        return obj

    def _new(self, key: Key) -> Stored:
        self._uid += 1
        metadata: dict[str, Any] = {"name": key[3], "uid": f"uid-{self._uid}", "generation": 1}
        metadata |= {"creationTimestamp": "2026-01-01T00:00:00Z"} | ({"namespace": key[2]} if key[2] else {})
        return Stored({"apiVersion": key[0], "kind": key[1], "metadata": metadata})

    def _commit(self, key: Key, before: Stored | None, after: Stored) -> dict[str, Any]:
        """Store ``after`` if it differs from ``before`` (bumping generation when the spec changed)."""
        if before is not None and _content(before) == _content(after) and before.owners == after.owners:
            return self._render(before)
        if before is not None and _spec(before.obj) != _spec(after.obj):
            after.obj["metadata"]["generation"] = int(before.obj["metadata"].get("generation", 1)) + 1
        event = "ADDED" if before is None else "MODIFIED"
        rendered = self._store(key, after, event)
        if rendered["metadata"].get("deletionTimestamp") and not rendered["metadata"].get("finalizers"):
            self._drop(key)
        return rendered

    def _check_precondition(self, key: Key, stored: Stored | None, wanted: Any) -> None:
        if wanted is None:
            return
        current = stored.obj["metadata"].get("resourceVersion") if stored else None
        if str(wanted) != current:
            raise self._error(409, f"{key[1]} {key[3]}", "the object has been modified; please apply your changes")

    def _log(self, verb: str, key: Key) -> None:
        self.writes += 1
        self.write_log.append(Write(verb, key, self._field_manager))

    # The KubeClient protocol

    def apply(self, obj: Mapping[str, Any], *, force: bool = False, subresource: str | None = None) -> dict[str, Any]:
        key = key_of(obj)
        self._inject("apply", key[1], f"{key[1]} {key[3]}")
        self._check_namespace(key)
        before = self.objects.get(key)
        self._check_precondition(key, before, (obj.get("metadata") or {}).get("resourceVersion"))
        after = self._server_side_apply(key, before, _section(obj, subresource), force, subresource or "")
        self._log("apply", key)
        return copy(self._commit(key, before, after))

    def _server_side_apply(
        self, key: Key, before: Stored | None, config: dict[str, Any], force: bool, subresource: str
    ) -> Stored:
        after = copy_stored(before) if before else self._new(key)
        me: Owner = (self._field_manager, "Apply", subresource)
        applied = leaf_paths(config)
        conflicts = self._conflicts(after, me, config, applied)
        if conflicts and not force:
            fields = ", ".join(".".join(path) for _, path in sorted(conflicts)[:5])
            raise self._error(409, f"{key[1]} {key[3]}", f"Apply failed with conflicts: {fields}")
        for owner, path in conflicts:
            after.owners[owner].discard(path)
        previous = after.owners.get(me, set())
        after.owners[me] = applied
        others = set().union(*(paths for owner, paths in after.owners.items() if owner != me))
        for path in previous - applied:
            if not any(_related(path, other) for other in others):
                _delete_at(after.obj, path)
        for path in applied:
            _set_at(after.obj, path, value_at(config, path)[1])
        after.owners = {owner: paths for owner, paths in after.owners.items() if paths}
        return after

    @staticmethod
    def _conflicts(
        stored: Stored, me: Owner, config: dict[str, Any], applied: set[FieldPath]
    ) -> list[tuple[Owner, FieldPath]]:
        found = []
        for owner, paths in stored.owners.items():
            if owner == me or owner[2] != me[2]:
                continue
            for path in paths & applied:
                if value_at(stored.obj, path) != value_at(config, path):
                    found.append((owner, path))
        return found

    def patch(
        self, api_version: str, kind: str, name: str, patch: Mapping[str, Any], *, namespace: str | None = None
    ) -> dict[str, Any]:
        key = (api_version, kind, namespace or "", name)
        self._inject("patch", kind, f"{kind} {name}")
        before = self.objects.get(key)
        if before is None:
            raise self._error(404, f"{kind} {name}", f'{kind.lower()}s "{name}" not found')
        self._check_precondition(key, before, (patch.get("metadata") or {}).get("resourceVersion"))
        patched = merge_patch(before.obj, {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")})
        patched["metadata"]["resourceVersion"] = before.obj["metadata"]["resourceVersion"]
        self._log("patch", key)
        return copy(self._commit(key, before, self._updated(before, patched, self._field_manager)))

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        metadata = dict(obj.get("metadata") or {})
        if not metadata.get("name"):
            self._uid += 1
            metadata["name"] = f"{metadata.get('generateName', '')}{self._uid:05x}"
        body = {**copy(dict(obj)), "metadata": metadata}
        key = key_of(body)
        self._inject("create", key[1], f"{key[1]} {key[3]}")
        self._check_namespace(key)
        if key in self.objects:
            raise self._error(409, f"{key[1]} {key[3]}", f'{key[1].lower()}s "{key[3]}" already exists')
        base = self._new(key)
        body["metadata"] = {**base.obj["metadata"], **metadata}
        self._log("create", key)
        return copy(self._commit(key, None, self._updated(base, body, self._field_manager)))

    def get(self, api_version: str, kind: str, name: str, *, namespace: str | None = None) -> dict[str, Any] | None:
        self._inject("get", kind, f"{kind} {name}")
        stored = self.objects.get((api_version, kind, namespace or "", name))
        return copy(self._render(stored)) if stored else None

    def delete(
        self, api_version: str, kind: str, name: str, *, namespace: str | None = None, propagation: str = "Background"
    ) -> bool:
        key = (api_version, kind, namespace or "", name)
        self._inject("delete", kind, f"{kind} {name}")
        stored = self.objects.get(key)
        if stored is None:
            return False
        self._log("delete", key)
        if stored.obj["metadata"].get("finalizers"):
            if not stored.obj["metadata"].get("deletionTimestamp"):
                marked = copy_stored(stored)
                marked.obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
                self._store(key, marked, "MODIFIED")
            return True
        self._drop(key)
        return True

    def list(
        self, api_version: str, kind: str, *, namespace: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        self._inject("list", kind, kind)
        keys = set(self._kinds.get((api_version, kind), set()))
        for name, value in (labels or {}).items():
            keys &= self._labels.get((api_version, kind, name, value), set())
        chosen = sorted(k for k in keys if namespace is None or k[2] == namespace)
        return [copy(self._render(self.objects[k])) for k in chosen]

    def watch(
        self,
        api_version: str,
        kind: str,
        *,
        namespace: str | None = None,
        labels: Mapping[str, str] | None = None,
        resource_version: str | None = None,
        timeout_seconds: int | None = None,
    ) -> Iterator[WatchEvent]:
        self._inject("watch", kind, kind)
        since = int(resource_version or 0)
        for rv, event, key, obj in list(self._history):
            obj_labels = obj["metadata"].get("labels") or {}
            if rv <= since or key[:2] != (api_version, kind) or (namespace is not None and key[2] != namespace):
                continue
            if all(obj_labels.get(name) == value for name, value in (labels or {}).items()):
                yield WatchEvent(event, copy(obj))

    # Helpers for tests: seed, edit and delete as someone else

    def _updated(self, before: Stored, obj: dict[str, Any], manager: str) -> Stored:
        """``obj`` as an Update by ``manager``: it takes over every field it changed."""
        after = Stored(copy(obj), {owner: set(paths) for owner, paths in before.owners.items()})
        old, new = leaf_paths(_section(before.obj, None)), leaf_paths(_section(after.obj, None))
        changed = {p for p in new if value_at(before.obj, p) != value_at(after.obj, p)}
        for owner in after.owners:
            after.owners[owner] -= changed | (old - new)
        if changed:
            after.owners.setdefault((manager, "Update", ""), set()).update(changed)
        after.owners = {owner: paths for owner, paths in after.owners.items() if paths}
        return after

    def put(self, obj: Mapping[str, Any], *, manager: str = "test") -> dict[str, Any]:
        """Create or replace an object as an Update by ``manager`` (no faults, not counted)."""
        key = key_of(obj)
        before = self.objects.get(key)
        base = before or self._new(key)
        merged = {**copy(base.obj), **copy(dict(obj))}
        merged["metadata"] = {**base.obj["metadata"], **copy(dict(obj["metadata"]))}
        return self._commit(key, before, self._updated(base, merged, manager))

    def edit(self, key: Key, change: Callable[[dict[str, Any]], None], *, manager: str = "kubectl-edit") -> None:
        """Change an object in place as someone else would (``kubectl edit``): drift."""
        before = self.objects[key]
        obj = copy(before.obj)
        change(obj)
        self._commit(key, before, self._updated(before, obj, manager))

    def remove(self, key: Key) -> None:
        """Delete an object outright, as someone else would (finalizers ignored)."""
        self._drop(key)

    def labelled(self, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """Every stored object carrying all ``labels`` (no request is counted)."""
        found = []
        for stored in self.objects.values():
            obj_labels = stored.obj["metadata"].get("labels") or {}
            if all(obj_labels.get(name) == value for name, value in labels.items()):
                found.append(copy(self._render(stored)))
        return found

    def stored(self, key: Key) -> dict[str, Any] | None:
        stored = self.objects.get(key)
        return copy(self._render(stored)) if stored else None

    @property
    def resource_version(self) -> str:
        return str(self._rv)


def copy_stored(stored: Stored) -> Stored:
    return Stored(copy(stored.obj), {owner: set(paths) for owner, paths in stored.owners.items()})


def _section(obj: Mapping[str, Any], subresource: str | None) -> dict[str, Any]:
    """The fields an apply to the main resource (or to a subresource) may set."""
    if subresource:
        return {subresource: copy(obj.get(subresource) or {})}
    section = {k: copy(v) for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}
    metadata = {k: copy(v) for k, v in (obj.get("metadata") or {}).items() if k not in _SERVER_METADATA}
    return section | ({"metadata": metadata} if metadata else {})


def _content(stored: Stored) -> Any:
    metadata = {k: v for k, v in stored.obj["metadata"].items() if k not in ("resourceVersion", "managedFields")}
    return {**stored.obj, "metadata": metadata}


def _spec(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in _NOT_SPEC}
