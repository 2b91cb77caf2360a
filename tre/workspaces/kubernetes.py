"""Cluster mode: reconcile ``Project`` custom resources into workspaces through a ``KubeClient``.

One level-triggered pass, :meth:`Reconciler.reconcile`, does everything for one Project, whatever woke it up:

1. keep the ``tre.dev/teardown`` finalizer on the Project (so deletion waits for the teardown);
2. upsert the spec into the store as the ``system:tre-controller`` actor and ask the governance gate
   (approvals, users and accreditations are in the store, written by ``tre project approve`` and ``tre user``);
3. with no blockers and not suspended: plan the project's objects against what the API server holds and apply
   only the difference (server-side apply, one field manager, forced: the controller owns these objects), then
   make sure the project's Vault Kubernetes-auth role exists; otherwise tear access down: revoke the Vault
   role, stop the provisioning Jobs and every Pod in the project namespace, delete the hub entry, and keep or
   delete the namespace and data according to the retention setting;
4. write the status (only if it changed) and Events that say what was done and why (only if anything was).

Every API call is retried on conflicts and transient errors with jittered exponential backoff; what still
fails leaves the pass (the next pass, or kopf's retry, continues from whatever state it reached). The kopf
wiring at the bottom is thin: each handler calls ``reconcile`` with the object's body.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from tre import services
from tre.clients.kube import KubeClient, KubeConflictError
from tre.controller import (
    COMPONENT_LABEL,
    PROVISIONER,
    WORKSPACE_SERVICE_ACCOUNT,
    ClusterConfig,
    data_request_hash,
    project_objects,
)
from tre.controller._reconcile import (
    Action,
    ObjectKey,
    Retention,
    Scope,
    Verb,
    hub_entry_name,
    managed_labels,
    object_key,
    plan,
    teardown_plan,
)
from tre.controller._retry import Backoff
from tre.controller._status import (
    GovernanceView,
    Observation,
    ProjectPhase,
    camel,
    phase_of,
    project_status,
    status_differs,
)
from tre.errors import ConflictError, InputError, NotFoundError, TemporaryError
from tre.services import Actor
from tre.spec import API_GROUP_VERSION, Project, describe_validation_error
from tre.store import Store

log = logging.getLogger(__name__)

FINALIZER = "tre.dev/teardown"
PROJECT_KIND = "Project"
SYSTEM_ACTOR = Actor(name="system:tre-controller")
REPORTING_CONTROLLER = "tre.dev/controller"
# The kinds the controller writes for a project, and where each is listed (by label) on every pass to find drift
# and leftovers: "cluster" (cluster-scoped), "project" (the project's namespace) or "hub" (the hub's namespace).
# Listing only there keeps the controller's RBAC narrow: ConfigMaps only in the hub namespace.
MANAGED_KINDS = (
    ("v1", "Namespace", "cluster"),
    ("networking.k8s.io/v1", "NetworkPolicy", "project"),
    ("v1", "ResourceQuota", "project"),
    ("v1", "LimitRange", "project"),
    ("v1", "ServiceAccount", "project"),
    ("v1", "PersistentVolumeClaim", "project"),
    ("batch/v1", "Job", "project"),
    ("v1", "ConfigMap", "hub"),
)
_LISTED_IN_NOTES = 8
_NOTE_LIMIT = 1024

T = TypeVar("T")


# Ports: governance and Vault


class Governance(Protocol):
    def evaluate(self, project: Project, now: dt.datetime) -> GovernanceView:
        """Record the declaration and say what the governance gate makes of it on ``now``."""
        ...


class StoreGovernance:
    """Governance from the TRE store: the Project's spec is upserted, then the gate is evaluated."""

    def __init__(self, store: Store, actor: Actor = SYSTEM_ACTOR) -> None:
        self._store = store
        self._actor = actor

    def evaluate(self, project: Project, now: dt.datetime) -> GovernanceView:
        today = now.date()
        with self._store.transaction() as unit:
            services.apply_project(unit, self._actor, project, now=now)
            status = services.refresh_phase(unit, self._actor, project.name, now=now)
            users = {name: unit.users.get(name) for name in project.spec.all_members}
        members = frozenset(name for name, user in users.items() if user is not None and user.accredited_on(today))
        return GovernanceView(tuple(status.blockers), status.approval, members, today)


class VaultRoles(Protocol):
    def ensure_kubernetes_role(self, project: str, namespace: str, service_account: str, *, mount: str) -> bool: ...

    def remove_kubernetes_role(self, project: str, *, mount: str) -> bool: ...


class NoVault:
    """For clusters without Vault: no roles to keep (workspaces then get no secrets at all)."""

    def ensure_kubernetes_role(self, project: str, namespace: str, service_account: str, *, mount: str) -> bool:
        return False

    def remove_kubernetes_role(self, project: str, *, mount: str) -> bool:
        return False


# Settings and results


@dataclass(frozen=True)
class ControllerSettings:
    """How the controller behaves (the cluster's shape is in ClusterConfig)."""

    retention_on_block: Retention = Retention.KEEP  # approval expired or withdrawn, accreditation lapsed, invalid
    retention_on_delete: Retention = Retention.DELETE
    backoff: Backoff = field(default_factory=Backoff)
    event_namespace: str = "tre"
    reporting_instance: str = "tre-controller"


@dataclass
class Outcome:
    """What one pass did for one project."""

    project: str
    phase: str = ""
    applied: list[Action] = field(default_factory=list)
    deleted: list[Action] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    vault_changed: bool = False
    status_written: bool = False
    finalizer_removed: bool = False
    planning_seconds: float = 0.0  # CPU time of the pure part: building the objects and planning the writes

    @property
    def changed(self) -> bool:
        return bool(self.applied or self.deleted or self.vault_changed)


@dataclass(frozen=True)
class _Pass:
    """One pass's inputs: the Project as observed and what governance says."""

    body: Mapping[str, Any]
    name: str
    namespace: str
    now: dt.datetime
    project: Project | None
    invalid: str | None
    gov: GovernanceView

    def scope(self, config: ClusterConfig) -> Scope:
        return Scope(self.name, self.namespace, config.hub_namespace)

    @property
    def deleting(self) -> bool:
        return bool((self.body.get("metadata") or {}).get("deletionTimestamp"))

    @property
    def suspended(self) -> bool:
        return self.project is not None and self.project.spec.suspended

    @property
    def previous_status(self) -> Mapping[str, Any]:
        return self.body.get("status") or {}

    @property
    def active(self) -> bool:
        return not (self.deleting or self.invalid or self.gov.blockers or self.gov.approval is None or self.suspended)


def parse_project(body: Mapping[str, Any]) -> tuple[Project | None, str | None]:
    """The declaration in a Project resource, or None and one line saying why it is not valid."""
    name = str((body.get("metadata") or {}).get("name"))
    document = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": {"name": name}}
    try:
        return Project.model_validate({**document, "spec": body.get("spec") or {}}), None
    except ValidationError as exc:
        return None, f"the spec is not valid: {describe_validation_error(exc)}"


class Reconciler:
    """Brings one Project at a time to its desired state; see the module docstring."""

    def __init__(
        self,
        kube: KubeClient,
        governance: Governance,
        vault: VaultRoles,
        config: ClusterConfig,
        settings: ControllerSettings | None = None,
        *,
        clock: Callable[[], dt.datetime] = services.utcnow,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._kube = kube
        self._governance = governance
        self._vault = vault
        self._config = config
        self._settings = settings or ControllerSettings()
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy

    # The pass

    def reconcile(self, body: Mapping[str, Any]) -> Outcome:
        """One level-triggered pass over the Project ``body`` (as last seen); see the module docstring."""
        current = self._start(body)
        outcome = Outcome(current.name)
        if current.active and current.project is not None:
            observation = self._provision(current, current.project, outcome)
        else:
            observation = self._teardown(current, outcome)
        if current.deleting:
            outcome.finalizer_removed = self._release(current)
            outcome.phase = ProjectPhase.TERMINATING.value
            self._report(current, observation, outcome)
            return outcome
        self._write_status(current, observation, outcome)
        self._report(current, observation, outcome)
        return outcome

    def _start(self, body: Mapping[str, Any]) -> _Pass:
        now = self._clock()
        name = str(body["metadata"]["name"])
        deleting = bool(body["metadata"].get("deletionTimestamp"))
        if not deleting:
            body = self._keep_finalizer(body)
        project, invalid = parse_project(body) if not deleting else (None, None)
        namespace = self._config.namespace_for(name)
        if namespace in self._config.shared_namespaces:
            invalid = f"project {name} would run in namespace {namespace}, which a shared service uses"
        gov = GovernanceView((), None, frozenset(), now.date())
        if project is not None and invalid is None:
            gov = self._retrying(f"governance of {name}", lambda: self._governance.evaluate(project, now))
        return _Pass(body, name, namespace, now, project, invalid, gov)

    def _observe(self, current: _Pass) -> list[dict[str, Any]]:
        """The project's labelled objects, where they may be."""
        labels = managed_labels(current.name)
        where = {"cluster": None, "project": current.namespace, "hub": self._config.hub_namespace}
        found: list[dict[str, Any]] = []
        for api_version, kind, place in MANAGED_KINDS:
            listing = functools.partial(self._kube.list, api_version, kind, namespace=where[place], labels=labels)
            found += self._retrying(f"list {kind}", listing)
        return found

    # Provisioning

    def _provision(self, current: _Pass, project: Project, outcome: Outcome) -> Observation:
        observed = self._observe(current)
        started = time.thread_time()
        desired, wanted = self._desired(current, project, observed)
        scope = current.scope(self._config)
        actions = plan(desired, observed, scope=scope, field_manager=self._kube.field_manager)
        outcome.planning_seconds = time.thread_time() - started
        self._execute([a for a in actions if a.verb is Verb.APPLY], outcome)
        if not outcome.failures:
            role = functools.partial(
                self._vault.ensure_kubernetes_role,
                current.name,
                current.namespace,
                WORKSPACE_SERVICE_ACCOUNT,
                mount=self._config.vault_auth_mount,
            )
            outcome.vault_changed = self._retrying(f"Vault role of {current.name}", role)
        self._execute([a for a in actions if a.verb is Verb.DELETE], outcome)
        return Observation(
            generation=int(current.body["metadata"].get("generation") or 0),
            wanted_request=wanted,
            provisioned_request=self._provisioned_request(current, observed),
            job=_live_job(desired, observed),
            failures=tuple(outcome.failures),
        )

    def _desired(
        self, current: _Pass, project: Project, observed: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], str]:
        """The project's objects; the provisioning Job only while the data volume does not yet hold the request."""
        approval = current.gov.approval
        desired = project_objects(project, self._config, members=current.gov.members, approval=approval)
        wanted = data_request_hash(project, approval)
        live = {object_key(obj) for obj in observed}
        done = self._provisioned_request(current, observed) == wanted
        keep = [obj for obj in desired if not (_is_job(obj) and done and object_key(obj) not in live)]
        return keep, wanted

    def _provisioned_request(self, current: _Pass, observed: list[dict[str, Any]]) -> str | None:
        """The request the data volume holds, as last reported; forgotten when the volume is gone."""
        has_volume = any(obj.get("kind") == "PersistentVolumeClaim" for obj in observed)
        previous = current.previous_status.get("provisionedRequest")
        return str(previous) if previous and has_volume else None

    # Teardown

    def _teardown(self, current: _Pass, outcome: Outcome) -> Observation:
        retention = self._retention(current)
        mount = self._config.vault_auth_mount
        revoke = functools.partial(self._vault.remove_kubernetes_role, current.name, mount=mount)
        outcome.vault_changed = self._retrying(f"Vault role of {current.name}", revoke)
        observed = self._observe(current)
        running = self._running(current, observed)
        observed += [obj for obj in self._hub_entry(current) if object_key(obj) not in keys_of(observed)]
        started = time.thread_time()
        actions = teardown_plan(observed, running, scope=current.scope(self._config), retention=retention)
        outcome.planning_seconds = time.thread_time() - started
        self._execute(actions, outcome)
        namespace_gone = retention is Retention.DELETE
        return Observation(
            generation=int(current.body["metadata"].get("generation") or 0),
            suspended=current.suspended,
            deleting=current.deleting,
            invalid=current.invalid,
            provisioned_request=None if namespace_gone else self._provisioned_request(current, observed),
        )

    def _retention(self, current: _Pass) -> Retention:
        if current.deleting:
            return self._settings.retention_on_delete
        if current.suspended and not current.gov.blockers and current.invalid is None:
            return Retention.KEEP  # suspension keeps the data and the approval by definition
        return self._settings.retention_on_block

    def _running(self, current: _Pass, observed: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Every Pod and Job in the project's namespace, if that namespace is the project's own (labelled by us)."""
        scope = current.scope(self._config)
        if not any(obj.get("kind") == "Namespace" and scope.owns(obj) for obj in observed):
            return []
        found: list[dict[str, Any]] = []
        for api_version, kind in (("batch/v1", "Job"), ("v1", "Pod")):
            listing = functools.partial(self._kube.list, api_version, kind, namespace=current.namespace)
            found += self._retrying(f"list {kind}", listing)
        return found

    def _hub_entry(self, current: _Pass) -> list[dict[str, Any]]:
        """Whatever holds the project's hub entry name, labelled as ours or not."""
        name, namespace = hub_entry_name(current.name), self._config.hub_namespace
        get = functools.partial(self._kube.get, "v1", "ConfigMap", name, namespace=namespace)
        found = self._retrying(f"ConfigMap {namespace}/{name}", get)
        return [found] if found is not None else []

    # Writes

    def _execute(self, actions: Iterable[Action], outcome: Outcome) -> None:
        for action in actions:
            try:
                self._retrying(action.key.describe(), functools.partial(self._write, action))
            except (InputError, NotFoundError) as exc:  # refused, or its namespace is gone: report it, carry on
                outcome.failures.append(f"{action.key.describe()}: {exc}")
                continue
            (outcome.applied if action.verb is Verb.APPLY else outcome.deleted).append(action)

    def _write(self, action: Action) -> None:
        key = action.key
        if action.verb is Verb.APPLY:
            assert action.obj is not None
            self._kube.apply(action.obj, force=True)  # the controller owns these objects outright: drift loses
        else:
            self._kube.delete(key.api_version, key.kind, key.name, namespace=key.namespace)

    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        """``call()``, again after a jittered, growing wait on conflicts and transient errors, a bounded number
        of times; the last error propagates."""
        backoff = self._settings.backoff
        delays = backoff.delays(self._rng)
        while True:
            try:
                return call()
            except (ConflictError, TemporaryError) as exc:
                if isinstance(exc, ConflictError) and not isinstance(exc, KubeConflictError):
                    raise
                delay = next(delays, None)
                if delay is None:
                    raise
                hinted = exc.retry_after if isinstance(exc, TemporaryError) else 0.0
                wait = min(max(delay, hinted), backoff.maximum)
                log.info("retrying %s in %.2fs: %s", what, wait, exc)
                self._sleep(wait)

    # The finalizer

    def _keep_finalizer(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        if FINALIZER in (body["metadata"].get("finalizers") or []):
            return body
        name = str(body["metadata"]["name"])
        return self._retrying(f"finalizer of Project {name}", lambda: self._patch_finalizers(name, add=True)) or body

    def _release(self, current: _Pass) -> bool:
        removed = self._retrying(
            f"finalizer of Project {current.name}", lambda: self._patch_finalizers(current.name, add=False)
        )
        return removed is not None

    def _patch_finalizers(self, name: str, *, add: bool) -> dict[str, Any] | None:
        """Add or remove our finalizer on the live Project, guarded by its resourceVersion; None if no change."""
        live = self._kube.get(API_GROUP_VERSION, PROJECT_KIND, name)
        if live is None:
            return None
        present = list(live["metadata"].get("finalizers") or [])
        if (FINALIZER in present) == add:
            return live if add else None
        wanted = [*present, FINALIZER] if add else [f for f in present if f != FINALIZER]
        patch = {"metadata": {"finalizers": wanted, "resourceVersion": live["metadata"]["resourceVersion"]}}
        return self._kube.patch(API_GROUP_VERSION, PROJECT_KIND, name, patch)

    # Status and Events

    def _write_status(self, current: _Pass, observation: Observation, outcome: Outcome) -> None:
        status = project_status(current.gov, observation, current.previous_status, current.now)
        outcome.phase = str(status["phase"])
        if not status_differs(status, current.previous_status):
            return
        body = {"apiVersion": API_GROUP_VERSION, "kind": PROJECT_KIND, "metadata": {"name": current.name}}
        apply = functools.partial(self._kube.apply, {**body, "status": status}, force=True, subresource="status")
        self._retrying(f"status of Project {current.name}", apply)
        outcome.status_written = True

    def _report(self, current: _Pass, observation: Observation, outcome: Outcome) -> None:
        """Events for what this pass did, and for a change of phase; nothing when nothing happened."""
        for kind, reason, note in _notes(outcome, current, self._retention(current)):
            self._event(current, kind, reason, note)
        phase, message = phase_of(current.gov, observation)
        if not current.deleting and phase.value != current.previous_status.get("phase"):
            self._event(current, "Warning" if phase is ProjectPhase.FAILED else "Normal", camel(phase.value), message)

    def _event(self, current: _Pass, kind: str, reason: str, note: str) -> None:
        """Post an events.k8s.io/v1 Event about the Project; a failure to post is logged, never fatal."""
        metadata = current.body.get("metadata") or {}
        event = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"generateName": f"{current.name}.", "namespace": self._settings.event_namespace},
            "eventTime": current.now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "reportingController": REPORTING_CONTROLLER,
            "reportingInstance": self._settings.reporting_instance,
            "action": "Reconcile",
            "reason": reason,
            "type": kind,
            "note": note[:_NOTE_LIMIT],
            "regarding": {
                "apiVersion": API_GROUP_VERSION,
                "kind": PROJECT_KIND,
                "name": current.name,
                "uid": str(metadata.get("uid") or ""),
            },
        }
        try:
            self._kube.create(event)
        except (TemporaryError, ConflictError, InputError) as exc:
            log.warning("could not post the %s event about project %s: %s", reason, current.name, exc)


def keys_of(objects: Iterable[Mapping[str, Any]]) -> set[ObjectKey]:
    return {object_key(obj) for obj in objects}


def _live_job(desired: list[dict[str, Any]], observed: list[dict[str, Any]]) -> Mapping[str, Any] | None:
    wanted = {object_key(obj) for obj in desired if _is_job(obj)}
    return next((obj for obj in observed if object_key(obj) in wanted), None)


def _is_job(obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return obj.get("kind") == "Job" and labels.get(COMPONENT_LABEL) == PROVISIONER


def _listing(actions: list[Action]) -> str:
    names = [a.key.describe() for a in actions[:_LISTED_IN_NOTES]]
    more = len(actions) - len(names)
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


def _why(current: _Pass) -> str:
    if current.deleting:
        return "the Project was deleted"
    if current.invalid is not None:
        return current.invalid
    if current.gov.blockers:
        return "blocked: " + "; ".join(b.message for b in current.gov.blockers)
    if current.gov.approval is None:
        return "no approval is recorded"
    return "the project is suspended"


def _notes(outcome: Outcome, current: _Pass, retention: Retention) -> list[tuple[str, str, str]]:
    """(type, reason, note) for each Event this pass deserves; none when nothing changed."""
    notes = []
    created = [a for a in outcome.applied if a.reason == "missing"]
    repaired = [a for a in outcome.applied if a.reason == "drifted"]
    updated = [a for a in outcome.applied if a.reason not in ("missing", "drifted")]
    if created:
        notes.append(("Normal", "Applied", f"created {_listing(created)}"))
    if updated:
        notes.append(("Normal", "Applied", f"updated {_listing(updated)}: removed what the controller no longer sets"))
    if repaired:
        notes.append(("Warning", "DriftRepaired", f"restored {_listing(repaired)}, changed outside the controller"))
    pruned = [a for a in outcome.deleted if a.reason == "no longer desired"]
    if pruned:
        notes.append(("Normal", "Pruned", f"deleted {_listing(pruned)}: no longer desired"))
    removed = [a for a in outcome.deleted if a.reason != "no longer desired"]
    if removed or (outcome.vault_changed and not current.active):
        done = [f"deleted {_listing(removed)}"] if removed else []
        done += ["revoked the Vault role"] if outcome.vault_changed else []
        kept = "; data kept" if retention is Retention.KEEP else "; data deleted"
        notes.append(("Normal", "AccessRemoved", f"{_why(current)}: {', '.join(done)}{kept}"))
    if outcome.failures:
        notes.append(("Warning", "ApplyFailed", "; ".join(outcome.failures)))
    return notes


def plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """A deep, plain-dict copy of a resource body (kopf hands out read-only views)."""
    return dict(json.loads(json.dumps(body, default=dict)))


def managed_objects(kube: KubeClient, project: str) -> list[dict[str, Any]]:
    """Every object the controller manages for ``project``, wherever it is (for tests and debugging)."""
    return [obj for a, k, _ in MANAGED_KINDS for obj in kube.list(a, k, labels=managed_labels(project))]
