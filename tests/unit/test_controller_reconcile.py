"""The controller's reconcile loop against the in-memory API (our KubeClient protocol): create, no-op, drift repair,
blocked projects, expiry, suspension, deletion, retries; the pure planning and status rules; the kopf wiring."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import kopf
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from tests.support.controller import kubernetes_errors
from tests.support.fake_governance import (
    DATASET,
    EXAMPLE,
    START,
    FakeVault,
    InMemoryGovernance,
    approval_for,
    example_project,
    researcher,
)
from tests.support.fake_kube import FakeKube, Key
from tre import services
from tre.clients.kube import KubeConflictError
from tre.controller import (
    HUB_ENTRY_KEY,
    WORKSPACE_SERVICE_ACCOUNT,
    ClusterConfig,
    data_request_hash,
    project_objects,
)
from tre.controller._crd import status_schema
from tre.controller._reconcile import (
    Retention,
    Scope,
    Verb,
    apply_reason,
    hub_entry_name,
    is_subset,
    managed_labels,
    object_key,
    plan,
    quantity,
    teardown_plan,
)
from tre.controller._retry import Backoff
from tre.controller._status import GovernanceView, Observation, conditions, project_status
from tre.errors import InputError, IntegrityError, TemporaryError
from tre.metrics import exposition
from tre.spec import Project, Role, User
from tre.store import Store, sqlite_url
from tre.workspaces import _kopf
from tre.workspaces.kubernetes import (
    FINALIZER,
    MANAGED_KINDS,
    ControllerSettings,
    Outcome,
    Reconciler,
    StoreGovernance,
    managed_objects,
)

CONFIG = ClusterConfig()
HUB = CONFIG.hub_namespace
EVENTS = "tre"
PROJECT_KEY = ("tre.dev/v1alpha1", "Project", "")


@pytest.fixture(autouse=True)
def no_real_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here talks to the fake: a request from the real client must fail loudly."""
    from kubernetes.client import ApiClient

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the real Kubernetes client must not be called")

    monkeypatch.setattr(ApiClient, "call_api", refuse)


def namespace_of(name: str) -> str:
    return CONFIG.namespace_for(name)


def project_key(name: str) -> Key:
    return (*PROJECT_KEY, name)


def declaration(project: Project) -> dict[str, Any]:
    return {
        "apiVersion": "tre.dev/v1alpha1",
        "kind": "Project",
        "metadata": {"name": project.name},
        "spec": project.spec.model_dump(mode="json", by_alias=True, exclude_defaults=True),
    }


@dataclass
class Clock:
    moment: dt.datetime = START

    def __call__(self) -> dt.datetime:
        return self.moment

    def advance(self, **delta: float) -> None:
        self.moment += dt.timedelta(**delta)


@dataclass
class World:
    """A fake cluster, governance and Vault, and a controller over them."""

    kube: FakeKube = field(default_factory=lambda: FakeKube(namespaces=("default", "kube-system", HUB, EVENTS)))
    governance: InMemoryGovernance = field(default_factory=InMemoryGovernance)
    vault: FakeVault = field(default_factory=FakeVault)
    clock: Clock = field(default_factory=Clock)
    sleeps: list[float] = field(default_factory=list)
    settings: ControllerSettings = field(default_factory=lambda: ControllerSettings(event_namespace=EVENTS))

    def __post_init__(self) -> None:
        self.governance.add_researchers(["alice", "bob"])

    @property
    def controller(self) -> Reconciler:
        return Reconciler(
            self.kube, self.governance, self.vault, CONFIG, self.settings,
            clock=self.clock, sleep=self.sleeps.append, rng=random.Random(7),
        )  # fmt: skip

    def declare(self, project: Project) -> None:
        self.kube.put(declaration(project), manager="kubectl")

    def reconcile(self, name: str) -> Outcome:
        body = self.kube.stored(project_key(name))
        assert body is not None, f"no Project {name}"
        return self.controller.reconcile(body)

    def settle(self, name: str) -> Outcome:
        """Reconcile, then check that a second pass over the unchanged cluster makes no writes at all."""
        outcome = self.reconcile(name)
        self.kube.reset_counters()
        vault_writes = self.vault.writes
        if self.kube.stored(project_key(name)) is not None:
            again = self.reconcile(name)
            assert self.kube.writes == 0, self.kube.write_log
            assert self.vault.writes == vault_writes
            assert not again.changed
        return outcome

    def status(self, name: str) -> dict[str, Any]:
        body = self.kube.stored(project_key(name))
        assert body is not None
        return dict(body.get("status") or {})

    def condition(self, name: str, kind: str) -> dict[str, Any]:
        return next(c for c in self.status(name)["conditions"] if c["type"] == kind)

    def objects(self, name: str) -> list[dict[str, Any]]:
        return self.kube.labelled(managed_labels(name))

    def kinds(self, name: str) -> set[str]:
        return {obj["kind"] for obj in self.objects(name)}

    def hub_entry(self, name: str) -> dict[str, Any] | None:
        return self.kube.stored(("v1", "ConfigMap", HUB, f"tre-workspace-{name}"))

    def events(self, name: str) -> list[dict[str, Any]]:
        found = [s.obj for k, s in self.kube.objects.items() if k[:2] == ("events.k8s.io/v1", "Event")]
        return [e for e in found if e["regarding"]["name"] == name]

    def reasons(self, name: str) -> list[str]:
        return [e["reason"] for e in self.events(name)]

    def start_workspace(self, name: str, user: str = "alice") -> Key:
        """What the hub does when a member starts a workspace: a Pod in the project namespace."""
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"jupyter-{user}",
                "namespace": namespace_of(name),
                "labels": {"tre.dev/project": name, "tre.dev/component": "workspace"},
            },
            "spec": {"serviceAccountName": WORKSPACE_SERVICE_ACCOUNT, "containers": [{"name": "notebook"}]},
        }
        self.kube.put(pod, manager="jupyterhub")
        return ("v1", "Pod", namespace_of(name), f"jupyter-{user}")

    def complete_job(self, name: str) -> Key:
        job = next(o for o in self.objects(name) if o["kind"] == "Job")
        key = (job["apiVersion"], "Job", job["metadata"]["namespace"], job["metadata"]["name"])

        def completed(obj: dict[str, Any]) -> None:
            obj["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}

        self.kube.edit(key, completed, manager="kube-controller-manager")
        return key


def desired_for(world: World, project: Project) -> list[dict[str, Any]]:
    approval = world.governance.approvals.get(project.name)
    return project_objects(project, CONFIG, members=project.spec.all_members, approval=approval)


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def alpha(world: World) -> Project:
    """An approved project, declared as a Project resource."""
    project = example_project("alpha")
    world.governance.approve(project)
    world.declare(project)
    return project


def assert_converged(world: World, project: Project) -> None:
    """Every desired object exists and holds every desired field."""
    for obj in desired_for(world, project):
        live = world.kube.stored(object_key_tuple(obj))
        assert live is not None, object_key(obj)
        assert apply_reason(obj, live, world.kube.field_manager) is None, object_key(obj)


# Creating, and doing nothing the second time


def test_the_first_pass_creates_everything_and_the_second_writes_nothing(world: World, alpha: Project) -> None:
    outcome = world.settle("alpha")

    desired = desired_for(world, alpha)
    assert {object_key(a.obj or {}) for a in outcome.applied} == {object_key(o) for o in desired}
    assert_converged(world, alpha)
    assert world.vault.roles == {"alpha": (namespace_of("alpha"), WORKSPACE_SERVICE_ACCOUNT)}
    body = world.kube.stored(project_key("alpha"))
    assert body is not None
    assert body["metadata"]["finalizers"] == [FINALIZER]
    status = world.status("alpha")
    assert status["phase"] == "provisioning"
    assert status["approvalExpires"] == "2027-06-01"
    assert world.condition("alpha", "Approved")["status"] == "True"
    assert world.condition("alpha", "DataProvisioned")["reason"] == "Provisioning"
    assert world.reasons("alpha") == ["Applied", "Provisioning"]
    profile = json.loads((world.hub_entry("alpha") or {})["data"][HUB_ENTRY_KEY])
    assert profile["members"] == ["alice", "bob"]


def test_a_completed_job_makes_the_project_ready_and_is_not_run_again(world: World, alpha: Project) -> None:
    world.settle("alpha")
    job = world.complete_job("alpha")
    world.settle("alpha")
    assert world.status("alpha")["phase"] == "ready"
    assert world.status("alpha")["provisionedRequest"] == data_request_hash(alpha, world.governance.approvals["alpha"])
    assert world.condition("alpha", "Ready")["status"] == "True"
    assert world.condition("alpha", "DataProvisioned")["status"] == "True"

    world.kube.remove(job)  # the Job's TTL ran out
    world.settle("alpha")
    assert world.kube.stored(job) is None  # the data is there: no new Job
    assert world.status("alpha")["phase"] == "ready"

    world.kube.remove(("v1", "PersistentVolumeClaim", namespace_of("alpha"), "tre-data"))  # the data volume is lost
    world.settle("alpha")
    assert world.kube.stored(job) is not None  # so the data is provisioned again
    assert world.status("alpha")["phase"] == "provisioning"


def test_a_changed_data_request_replaces_the_job(world: World, alpha: Project) -> None:
    world.settle("alpha")
    old = next(o for o in world.objects("alpha") if o["kind"] == "Job")["metadata"]["name"]
    request = alpha.spec.datasets[0].model_copy(update={"columns": alpha.spec.datasets[0].columns[:3]})
    narrower = example_project("alpha", datasets=[request])
    world.governance.approve(narrower)
    world.declare(narrower)
    outcome = world.settle("alpha")
    jobs = [o["metadata"]["name"] for o in world.objects("alpha") if o["kind"] == "Job"]
    assert len(jobs) == 1
    assert jobs[0] != old
    assert [a.key.name for a in outcome.deleted] == [old]
    assert "Pruned" in world.reasons("alpha")


# Drift


def _allow_all_ingress(obj: dict[str, Any]) -> None:
    obj["spec"]["ingress"] = [{}]


def _narrow_selector(obj: dict[str, Any]) -> None:
    obj["spec"]["podSelector"] = {"matchLabels": {"only": "these"}}


def _raise_limit(obj: dict[str, Any]) -> None:
    obj["spec"]["limits"][0]["max"]["cpu"] = "64"


def _add_member(obj: dict[str, Any]) -> None:
    profile = json.loads(obj["data"][HUB_ENTRY_KEY])
    profile["members"].append("mallory")
    obj["data"][HUB_ENTRY_KEY] = json.dumps(profile)


def _grant_gpus(obj: dict[str, Any]) -> None:
    obj["spec"]["hard"]["requests.nvidia.com/gpu"] = "8"


def _drop_project_label(obj: dict[str, Any]) -> None:
    del obj["metadata"]["labels"]["tre.dev/project"]


DENY = "tre-default-deny"
DRIFTS: dict[str, tuple[tuple[str, str, str], Callable[[dict[str, Any]], None]]] = {
    "ingress added to default deny": (
        ("networking.k8s.io/v1", "NetworkPolicy", "tre-default-deny"),
        _allow_all_ingress,
    ),
    "default deny narrowed": (("networking.k8s.io/v1", "NetworkPolicy", "tre-default-deny"), _narrow_selector),
    "limit raised": (("v1", "LimitRange", "tre-limits"), _raise_limit),
    "GPUs granted": (("v1", "ResourceQuota", "tre-quota"), _grant_gpus),
    "label removed": (("v1", "ServiceAccount", WORKSPACE_SERVICE_ACCOUNT), _drop_project_label),
}


@pytest.mark.parametrize("drift", sorted(DRIFTS))
def test_an_edited_object_is_restored(world: World, alpha: Project, drift: str) -> None:
    world.settle("alpha")
    (api_version, kind, name), change = DRIFTS[drift]
    key = (api_version, kind, namespace_of("alpha"), name)
    world.kube.edit(key, change)
    outcome = world.settle("alpha")
    assert [a.key.name for a in outcome.applied] == [name]
    assert_converged(world, alpha)
    assert world.reasons("alpha")[-1] in ("DriftRepaired", "Applied")


def test_a_member_slipped_into_the_hub_entry_is_removed(world: World, alpha: Project) -> None:
    world.settle("alpha")
    world.kube.edit(("v1", "ConfigMap", HUB, "tre-workspace-alpha"), _add_member)
    world.settle("alpha")
    profile = json.loads((world.hub_entry("alpha") or {})["data"][HUB_ENTRY_KEY])
    assert profile["members"] == ["alice", "bob"]
    assert world.reasons("alpha")[-1] == "DriftRepaired"


@pytest.mark.parametrize("kind", ["ResourceQuota", "NetworkPolicy", "Namespace"])
def test_a_deleted_object_is_recreated(world: World, alpha: Project, kind: str) -> None:
    world.settle("alpha")
    victim = next(o for o in world.objects("alpha") if o["kind"] == kind)
    world.kube.remove(object_key_tuple(victim))
    world.settle("alpha")
    assert_converged(world, alpha)


def object_key_tuple(obj: dict[str, Any]) -> Key:
    key = object_key(obj)
    return (key.api_version, key.kind, key.namespace or "", key.name)


def test_a_field_the_controller_no_longer_sets_is_removed(world: World, alpha: Project) -> None:
    world.settle("alpha")
    quota = next(o for o in desired_for(world, alpha) if o["kind"] == "ResourceQuota")
    older = json.loads(json.dumps(quota))
    older["metadata"]["labels"]["tre.dev/retired"] = "yes"  # what an older controller version set
    world.kube.apply(older, force=True)
    outcome = world.settle("alpha")
    assert [(a.key.kind, a.reason) for a in outcome.applied] == [("ResourceQuota", "fields removed")]
    live = world.kube.stored(object_key_tuple(quota)) or {}
    assert "tre.dev/retired" not in live["metadata"]["labels"]


# Blocked projects


def test_a_project_without_approval_gets_nothing_and_a_status_that_says_why(world: World) -> None:
    world.declare(example_project("beta"))
    world.settle("beta")
    assert world.objects("beta") == []
    assert world.vault.roles == {}
    status = world.status("beta")
    assert status["phase"] == "pending"
    assert [b["code"] for b in status["blockers"]] == ["no-approval"]
    approved = world.condition("beta", "Approved")
    assert (approved["status"], approved["reason"]) == ("False", "NoApproval")
    assert "no review committee approval" in approved["message"]
    assert world.reasons("beta") == ["Pending"]


def test_a_member_without_accreditation_blocks_the_project(world: World) -> None:
    project = example_project("gamma")
    world.governance.approve(project)
    world.governance.users["bob"] = researcher("bob", until=dt.date(2026, 1, 1))
    world.declare(project)
    world.settle("gamma")
    assert world.objects("gamma") == []
    assert [(b["code"], b["subject"]) for b in world.status("gamma")["blockers"]] == [("accreditation-expired", "bob")]
    assert world.condition("gamma", "Approved")["reason"] == "AccreditationExpired"


def test_an_invalid_spec_gets_nothing(world: World) -> None:
    body = declaration(example_project("delta"))
    body["spec"]["members"] = ["bob", "bob"]
    world.kube.put(body, manager="kubectl")
    world.settle("delta")
    assert world.objects("delta") == []
    assert world.status("delta")["phase"] == "invalid"
    assert "members listed twice" in world.condition("delta", "Approved")["message"]
    assert world.governance.calls == 0


def test_governance_comes_from_the_store(world: World, tmp_path: Path) -> None:
    store = Store(sqlite_url(tmp_path / "store.db"))
    store.migrate()
    world.governance = InMemoryGovernance()  # unused: the store decides
    controller = Reconciler(
        world.kube, StoreGovernance(store), world.vault, CONFIG, world.settings,
        clock=world.clock, sleep=world.sleeps.append,
    )  # fmt: skip
    project = example_project("alpha")
    world.declare(project)
    admin = services.Actor.operator("test")
    with store.transaction() as unit:
        for user in (researcher("alice"), researcher("bob")):
            services.add_user(unit, admin, user, now=START)
        services.add_user(unit, admin, User(name="carol", roles=frozenset({Role.APPROVER})), now=START)
        services.register_dataset(unit, admin, DATASET, now=START)

    controller.reconcile(world.kube.stored(project_key("alpha")) or {})
    assert world.objects("alpha") == []
    with store.transaction(write=False) as unit:
        stored = unit.projects.get("alpha")
        assert stored is not None
        assert stored.project == project
        assert stored.phase == "pending"
        created = [e for e in unit.audit.entries(project="alpha") if e.action == "project.created"]
        assert [e.actor for e in created] == ["system:tre-controller"]

    request = services.ApprovalRequest("alpha", "carol", "25/NE/0001", dt.date(2026, 6, 30), "DSA-1")
    with store.transaction() as unit:
        services.approve_project(unit, admin, request, now=START)
    controller.reconcile(world.kube.stored(project_key("alpha")) or {})
    assert world.hub_entry("alpha") is not None

    world.clock.advance(days=30)
    controller.reconcile(world.kube.stored(project_key("alpha")) or {})
    assert world.hub_entry("alpha") is None
    with store.transaction(write=False) as unit:
        expired = unit.projects.get("alpha")
        assert expired is not None
        assert expired.phase == "expired"
    store.close()


# Access ends: expiry, suspension, deletion


def test_expiry_stops_workspaces_and_removes_access_but_keeps_the_data(world: World, alpha: Project) -> None:
    world.settle("alpha")
    world.complete_job("alpha")
    world.settle("alpha")
    pods = [world.start_workspace("alpha", "alice"), world.start_workspace("alpha", "bob")]

    world.clock.advance(days=400)  # past the approval's expiry on 2027-06-01
    outcome = world.settle("alpha")

    assert world.hub_entry("alpha") is None
    assert all(world.kube.stored(pod) is None for pod in pods)
    assert "Job" not in world.kinds("alpha")
    assert world.vault.roles == {}
    assert world.kinds("alpha") == {
        "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "ServiceAccount", "PersistentVolumeClaim",
    }  # fmt: skip
    assert {a.key.kind for a in outcome.deleted} == {"Job", "Pod", "ConfigMap"}
    status = world.status("alpha")
    assert status["phase"] == "expired"
    assert world.condition("alpha", "Expired")["status"] == "True"
    assert world.condition("alpha", "Ready")["status"] == "False"
    assert "approval-expired" in [b["code"] for b in status["blockers"]]
    removed = next(e for e in world.events("alpha") if e["reason"] == "AccessRemoved")
    assert "expired" in removed["note"]
    assert "revoked the Vault role" in removed["note"]
    assert "data kept" in removed["note"]

    world.governance.approve(alpha, expires=dt.date(2029, 1, 1))  # renewed: access comes back, data still there
    world.settle("alpha")
    assert world.hub_entry("alpha") is not None
    assert world.vault.roles == {"alpha": (namespace_of("alpha"), WORKSPACE_SERVICE_ACCOUNT)}


def test_expiry_with_delete_retention_removes_the_namespace_and_data(world: World, alpha: Project) -> None:
    world.settings = ControllerSettings(event_namespace=EVENTS, retention_on_block=Retention.DELETE)
    world.settle("alpha")
    world.start_workspace("alpha")
    world.clock.advance(days=400)
    world.settle("alpha")
    assert world.objects("alpha") == []
    assert not [k for k in world.kube.objects if k[2] == namespace_of("alpha")]


def test_suspension_removes_access_and_keeps_data_whatever_the_retention(world: World, alpha: Project) -> None:
    world.settings = ControllerSettings(event_namespace=EVENTS, retention_on_block=Retention.DELETE)
    world.settle("alpha")
    pod = world.start_workspace("alpha")
    world.declare(example_project("alpha", suspended=True))
    world.settle("alpha")
    assert world.hub_entry("alpha") is None
    assert world.kube.stored(pod) is None
    assert world.vault.roles == {}
    assert "PersistentVolumeClaim" in world.kinds("alpha")
    assert world.status("alpha")["phase"] == "suspended"
    assert world.condition("alpha", "Approved")["status"] == "True"

    world.declare(example_project("alpha", suspended=False))
    world.settle("alpha")
    assert world.hub_entry("alpha") is not None


def test_deletion_tears_down_then_releases_the_finalizer(world: World, alpha: Project) -> None:
    world.settle("alpha")
    pod = world.start_workspace("alpha")
    assert world.kube.delete(*PROJECT_KEY[:2], "alpha") is True
    assert world.kube.stored(project_key("alpha")) is not None  # held by the finalizer until the teardown ran

    outcome = world.reconcile("alpha")

    assert outcome.finalizer_removed
    assert world.kube.stored(project_key("alpha")) is None
    assert world.objects("alpha") == []
    assert world.kube.stored(pod) is None
    assert world.vault.roles == {}
    assert "AccessRemoved" in world.reasons("alpha")


def test_deletion_can_keep_the_data(world: World, alpha: Project) -> None:
    world.settings = ControllerSettings(event_namespace=EVENTS, retention_on_delete=Retention.KEEP)
    world.settle("alpha")
    world.kube.delete(*PROJECT_KEY[:2], "alpha")
    world.reconcile("alpha")
    assert world.kube.stored(project_key("alpha")) is None
    assert world.hub_entry("alpha") is None
    assert "PersistentVolumeClaim" in world.kinds("alpha")


def test_the_finalizer_is_added_despite_a_conflicting_writer(world: World, alpha: Project) -> None:
    world.kube.fail_next(1, status=409, verbs={"patch"})
    world.reconcile("alpha")
    body = world.kube.stored(project_key("alpha")) or {}
    assert body["metadata"]["finalizers"] == [FINALIZER]
    assert len(world.sleeps) == 1


# Failures


def test_transient_errors_and_conflicts_are_retried_until_they_pass(world: World, alpha: Project) -> None:
    world.kube.fail_next(2, status=503, verbs={"apply"})
    world.kube.fail_next(1, status=409, verbs={"apply"})
    world.kube.fail_next(1, status=429, verbs={"list"})
    world.kube.fail_next(1, status=500, verbs={"delete", "get"})
    world.settle("alpha")
    assert_converged(world, alpha)
    assert len(world.sleeps) == 5
    assert all(0 < wait <= world.settings.backoff.maximum for wait in world.sleeps)


def test_an_outage_ends_the_pass_with_a_temporary_error_after_bounded_waits(world: World, alpha: Project) -> None:
    world.reconcile("alpha")
    world.kube.fail_next(100, status=503, verbs={"list"})
    with pytest.raises(TemporaryError, match="busy or failing"):
        world.reconcile("alpha")
    backoff = world.settings.backoff
    assert len(world.sleeps) == backoff.attempts - 1
    assert sum(world.sleeps) <= backoff.longest_total
    world.kube.clear_faults()
    world.settle("alpha")


def test_an_object_the_api_server_refuses_is_reported_and_the_rest_applied(world: World, alpha: Project) -> None:
    world.kube.fail_next(1, status=422, verbs={"apply"}, kinds={"LimitRange"})
    outcome = world.reconcile("alpha")
    assert len(outcome.failures) == 1
    assert "refused" in outcome.failures[0]
    assert len(outcome.applied) == len(desired_for(world, alpha)) - 1
    assert world.status("alpha")["phase"] == "failed"
    assert world.vault.roles == {}  # no role until every object is in place
    assert {"ApplyFailed", "Failed"} <= set(world.reasons("alpha"))
    world.settle("alpha")
    assert world.status("alpha")["phase"] == "provisioning"


# What the controller writes is what the API server accepts


def test_every_status_written_fits_the_crd_status_schema(world: World, alpha: Project) -> None:
    world.declare(example_project("beta"))
    for name in ("alpha", "beta"):
        world.settle(name)
    world.complete_job("alpha")
    world.settle("alpha")
    schema = status_schema()
    for name in ("alpha", "beta"):
        status = world.status(name)
        jsonschema.validate(status, schema)
        assert set(status) <= set(schema["properties"])  # nothing the API server would prune
        for condition in status["conditions"]:
            assert set(condition) <= set(schema["properties"]["conditions"]["items"]["properties"])


def test_every_event_is_a_valid_kubernetes_event(world: World, alpha: Project) -> None:
    world.settle("alpha")
    world.clock.advance(days=400)
    world.settle("alpha")
    events = [{k: v for k, v in e.items() if k != "status"} for e in world.events("alpha")]
    assert len(events) >= 3
    for event in events:
        event["metadata"] = {"name": event["metadata"]["name"], "namespace": event["metadata"]["namespace"]}
        assert kubernetes_errors(event) == []
        assert event["metadata"]["namespace"] == EVENTS
        assert len(event["note"]) <= 1024


# The pure rules: comparing, planning, tearing down, statuses, backoff


@pytest.mark.parametrize(
    ("desired", "live", "expected"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, True),  # the server adds defaults
        ({"a": 1}, {"a": 2}, False),
        ({"a": {"b": 1}}, {"a": {}}, False),
        ({}, None, True),
        ({"selector": {}}, {"selector": {}}, True),
        ({"selector": {}}, {"selector": {"matchLabels": {"x": "y"}}}, False),  # an empty selector means all pods
        ({"ingress": []}, {}, True),
        ({"ingress": []}, {"ingress": [{}]}, False),  # rules added to a deny-all
        ([{"port": 53}], [{"port": 53, "protocol": "UDP"}], True),
        ([{"port": 53}], [{"port": 53}, {"port": 80}], False),
        (["a", "b"], ["b", "a"], False),
        ("1.5", "1500m", True),  # the server writes quantities back canonically
        ("8Gi", "8192Mi", True),
        ("2", "3", False),
        ("v1", "v1.0", False),
        (1, "1", False),
    ],
)
def test_what_counts_as_already_applied(desired: Any, live: Any, expected: bool) -> None:
    assert is_subset(desired, live) is expected


def test_quantities_parse_like_kubernetes() -> None:
    assert quantity("500m") == quantity("0.5")
    assert quantity("1Ki") == 1024
    assert quantity("1e3") == quantity("1k") == 1000
    assert quantity("E11") is None
    assert quantity("tre-default-deny") is None


SCOPE = Scope("alpha", "tre-alpha", HUB)


def _obj(kind: str, name: str, namespace: str | None, project: str = "alpha", **extra: Any) -> dict[str, Any]:
    api_version = {"NetworkPolicy": "networking.k8s.io/v1", "Job": "batch/v1"}.get(kind, "v1")
    metadata: dict[str, Any] = {"name": name, "labels": managed_labels(project)}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, **extra}


def test_the_plan_deletes_only_the_projects_own_leftovers() -> None:
    desired = [_obj("Namespace", "tre-alpha", None), _obj("Job", "tre-provision-new", "tre-alpha")]
    observed = [
        *desired,
        _obj("Job", "tre-provision-old", "tre-alpha"),
        _obj("Job", "tre-provision-x", "tre-beta"),  # labelled ours, in another project's namespace: never touched
        _obj("Namespace", "tre-beta", None),  # likewise
        _obj("ConfigMap", "unlabelled", "tre-alpha", project="beta"),
        _obj("ConfigMap", "tre-workspace-beta", HUB),  # another project's hub entry, relabelled as ours
    ]
    actions = plan(desired, observed, scope=SCOPE, field_manager="tre-controller")
    assert [(a.verb, a.key.name) for a in actions] == [(Verb.DELETE, "tre-provision-old")]


def test_the_plan_refuses_objects_outside_the_project_scope() -> None:
    strays = [
        _obj("ConfigMap", "x", "tre-beta"),
        _obj("Namespace", "tre-beta", None),
        _obj("ConfigMap", "tre-workspace-alpha", HUB, "beta"),
        _obj("ConfigMap", "tre-workspace-beta", HUB),
    ]
    for stray in strays:
        with pytest.raises(IntegrityError, match="refusing to write"):
            plan([stray], [], scope=SCOPE, field_manager="tre-controller")


@pytest.mark.parametrize("retention", list(Retention))
def test_teardown_removes_every_route_to_the_data(retention: Retention) -> None:
    observed = [
        _obj("Namespace", "tre-alpha", None),
        _obj("NetworkPolicy", "tre-default-deny", "tre-alpha"),
        _obj("PersistentVolumeClaim", "tre-data", "tre-alpha"),
        _obj("Job", "tre-provision-1", "tre-alpha"),
        _obj("ConfigMap", "tre-workspace-alpha", HUB),
        _obj("ConfigMap", "tre-workspace-beta", HUB, project="beta"),
    ]
    running = [
        _obj("Pod", "jupyter-alice", "tre-alpha", project="anything"),  # whatever runs in the namespace goes
        _obj("Job", "relabelled", "tre-alpha", project="beta"),
        _obj("Pod", "other", "tre-beta"),
    ]
    relabelled = _obj("ConfigMap", "tre-workspace-alpha", HUB, project="beta")  # the reserved name goes too
    actions = teardown_plan([*observed[:-2], relabelled, observed[-1]], running, scope=SCOPE, retention=retention)
    names = [a.key.name for a in actions]
    assert names[:4] == ["relabelled", "tre-provision-1", "jupyter-alice", "tre-workspace-alpha"]  # stop, then access
    assert all(a.verb is Verb.DELETE for a in actions)
    assert names[4:] == (["tre-alpha"] if retention is Retention.DELETE else [])
    assert teardown_plan([], [], scope=SCOPE, retention=retention) == []


def _view(**changes: Any) -> GovernanceView:
    fields: dict[str, Any] = {"blockers": (), "approval": None, "members": frozenset(), "today": START.date()}
    return GovernanceView(**(fields | changes))


def test_a_condition_keeps_its_transition_time_until_its_status_changes() -> None:
    approval = InMemoryGovernance()
    project = example_project("alpha")
    approval.approve(project)
    approved = _view(approval=approval.approvals["alpha"])
    obs = Observation(generation=1, wanted_request="abc")
    first = conditions(approved, obs, [], START)
    later = START + dt.timedelta(hours=1)
    same = conditions(approved, obs, first, later)
    assert [c["lastTransitionTime"] for c in same] == [c["lastTransitionTime"] for c in first]
    done = conditions(approved, Observation(generation=2, wanted_request="abc", provisioned_request="abc"), same, later)
    times = {c["type"]: c["lastTransitionTime"] for c in done}
    assert times["DataProvisioned"] == times["Ready"] == "2026-06-01T10:00:00Z"
    assert times["Approved"] == times["Expired"] == "2026-06-01T09:00:00Z"
    assert all(c["observedGeneration"] == 2 for c in done)


def test_status_without_approval_never_reads_as_approved() -> None:
    status = project_status(_view(), Observation(generation=1), None, START)
    assert status["phase"] == "pending"
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Approved": "False", "DataProvisioned": "False", "Ready": "False", "Expired": "False",
    }  # fmt: skip


def test_backoff_waits_grow_stay_bounded_and_are_jittered() -> None:
    backoff = Backoff(initial=0.1, factor=2, maximum=1.0, attempts=7, jitter=0.5)
    waits = list(backoff.delays(random.Random(1)))
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert len(waits) == 6
    assert all(ceiling / 2 <= wait <= ceiling for wait, ceiling in zip(waits, ceilings, strict=True))
    assert waits != list(Backoff(jitter=0.5, maximum=1.0, attempts=7).delays(random.Random(2)))
    assert backoff.longest_total == pytest.approx(sum(ceilings))
    with pytest.raises(ValueError, match="attempts"):
        Backoff(attempts=0)


# kopf: thin wiring around reconcile


def test_kopf_calls_reconcile_for_every_cause_and_keeps_our_finalizer(world: World, alpha: Project) -> None:
    registry = _kopf.build_registry(world.controller, interval=30)
    changing = registry._changing.get_all_handlers()
    assert {h.id for h in changing} == {"reconcile-create", "reconcile-update", "reconcile-resume", "teardown"}
    teardown = next(h for h in changing if h.id == "teardown")
    assert teardown.requires_finalizer  # kopf blocks deletion until the teardown succeeded
    timers = registry._spawning.get_all_handlers()
    assert [(t.id, getattr(t, "interval", None)) for t in timers] == [("resync", 30)]
    settings = _kopf.operator_settings(workers=3)
    assert settings.persistence.finalizer == FINALIZER
    assert settings.execution.max_workers == 3
    assert settings.posting.enabled is False
    assert settings.scanning.disabled is True

    passes = _kopf.PASSES._value.get()
    next(h for h in changing if h.id == "reconcile-create").fn(body=world.kube.stored(project_key("alpha")))
    assert world.hub_entry("alpha") is not None
    assert _kopf.PASSES._value.get() == passes + 1
    assert 'tre_controller_writes_total{verb="apply"}' in exposition()


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (TemporaryError("busy", retry_after=7.0), kopf.TemporaryError),
        (InputError("bad"), kopf.PermanentError),
    ],
)
def test_kopf_retries_temporary_errors_and_gives_up_on_permanent_ones(error: Exception, expected: type) -> None:
    class Failing:
        def reconcile(self, body: Any) -> None:
            raise error

    errors = _kopf.ERRORS._value.get()
    with pytest.raises(expected) as caught:
        _kopf.handle(Failing(), _kopf._Serialised(), {"metadata": {"name": "alpha"}})  # type: ignore[arg-type]
    assert _kopf.ERRORS._value.get() == errors + 1
    if isinstance(caught.value, kopf.TemporaryError):
        assert caught.value.delay == 7.0


def test_a_timer_pass_is_skipped_while_another_pass_runs() -> None:
    calls: list[str] = []

    class Recording:
        def reconcile(self, body: Any) -> Outcome:
            calls.append(body["metadata"]["name"])
            return Outcome(body["metadata"]["name"])

    serialised = _kopf._Serialised()
    with serialised.lock("alpha"):
        _kopf.handle(Recording(), serialised, {"metadata": {"name": "alpha"}}, wait=False)  # type: ignore[arg-type]
    _kopf.handle(Recording(), serialised, {"metadata": {"name": "alpha"}}, wait=False)  # type: ignore[arg-type]
    assert calls == ["alpha"]


def test_the_cli_loads_neither_kopf_nor_the_kubernetes_client() -> None:
    import subprocess
    import sys

    probe = "import sys, tre.cli; print(sorted(m for m in ('kopf', 'kubernetes', 'hvac') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_managed_kinds_cover_every_kind_the_manifests_make(world: World, alpha: Project) -> None:
    places = {None: "cluster", namespace_of("alpha"): "project", HUB: "hub"}
    made = {(o["apiVersion"], o["kind"], places[o["metadata"].get("namespace")]) for o in desired_for(world, alpha)}
    assert made == set(MANAGED_KINDS)
    hub = [object_key(o) for o in desired_for(world, alpha) if object_key(o).namespace == HUB]
    assert [k.name for k in hub] == [hub_entry_name("alpha")]
    world.settle("alpha")
    assert len(managed_objects(world.kube, "alpha")) == len(desired_for(world, alpha))


# Any sequence of approvals, edits, drift, expiry and deletion converges, and never leaves access behind


NAMES = ("alpha", "beta", "gamma")
HOW = ("delete", "edit", "relabel")


def _drift(obj: dict[str, Any], how: str, other: str) -> None:
    labels = obj["metadata"].setdefault("labels", {})
    if how == "relabel":
        labels["tre.dev/project"] = other
    elif obj["kind"] == "NetworkPolicy":
        obj["spec"]["ingress"] = [{}]
    elif obj["kind"] == "ConfigMap":
        _add_member(obj)
    elif obj["kind"] == "Namespace":
        labels["pod-security.kubernetes.io/enforce"] = "privileged"
    else:
        labels["app.kubernetes.io/managed-by"] = "someone-else"


class Reconciling(RuleBasedStateMachine):
    """Random actions by people and by the cluster, each followed by a pass over every Project."""

    def __init__(self) -> None:
        super().__init__()
        self.world = World(settings=ControllerSettings(event_namespace=EVENTS, backoff=Backoff(attempts=4)))

    @property
    def today(self) -> dt.date:
        return self.world.clock().date()

    def live(self, name: str) -> Project | None:
        from tre.workspaces.kubernetes import parse_project

        body = self.world.kube.stored(project_key(name))
        return parse_project(body)[0] if body else None

    @initialize()
    def approved_projects(self) -> None:
        for name in ("alpha", "beta"):
            project = example_project(name)
            self.world.governance.approve(project, expires=self.today + dt.timedelta(days=30))
            self.world.declare(project)
        self.settle()

    @rule(name=st.sampled_from(NAMES), suspended=st.booleans(), narrow=st.booleans(), bob=st.booleans())
    def declare(self, name: str, suspended: bool, narrow: bool, bob: bool) -> None:
        request = EXAMPLE.spec.datasets[0]
        if narrow:
            request = request.model_copy(update={"columns": request.columns[:3]})
        project = example_project(name, suspended=suspended, members=["bob"] if bob else [], datasets=[request])
        self.world.declare(project)
        self.settle()

    @rule(name=st.sampled_from(NAMES), days=st.integers(0, 60))
    def approve(self, name: str, days: int) -> None:
        project = self.live(name)
        if project is not None:
            expires = self.today + dt.timedelta(days=days)
            self.world.governance.approvals[name] = approval_for(project, expires=expires, decided=self.today)
        self.settle()

    @rule(name=st.sampled_from(NAMES))
    def withdraw(self, name: str) -> None:
        self.world.governance.approvals.pop(name, None)
        self.settle()

    @rule(user=st.sampled_from(("alice", "bob")), lapsed=st.booleans())
    def accredit(self, user: str, lapsed: bool) -> None:
        until = self.today - dt.timedelta(days=1) if lapsed else dt.date(2030, 1, 1)
        self.world.governance.users[user] = researcher(user, until=until)
        self.settle()

    @rule(days=st.integers(1, 45))
    def advance(self, days: int) -> None:
        self.world.clock.advance(days=days)
        self.settle()

    @rule(pick=st.integers(0, 10_000), how=st.sampled_from(HOW), other=st.sampled_from(NAMES))
    def drift(self, pick: int, how: str, other: str) -> None:
        managed = sorted(k for k, s in self.world.kube.objects.items() if k[1] != "Project" and k[1] != "Event"
                         and (s.obj["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by"))  # fmt: skip
        if managed:
            key = managed[pick % len(managed)]
            if how == "delete":
                self.world.kube.remove(key)
            else:
                self.world.kube.edit(key, lambda obj: _drift(obj, how, other))
        self.settle()

    @rule(owner=st.sampled_from(NAMES[1:]), withdraw=st.booleans())
    def relabel_hub_entry(self, owner: str, withdraw: bool) -> None:
        """Someone labels a project's hub entry as alpha's (whose pass runs first): alpha must leave it alone,
        and if the owner loses its approval meanwhile, the relabelled entry must still go."""
        if self.world.hub_entry(owner) is not None:
            key = ("v1", "ConfigMap", HUB, f"tre-workspace-{owner}")
            self.world.kube.edit(key, lambda obj: _drift(obj, "relabel", NAMES[0]))
            if withdraw:
                self.world.governance.approvals.pop(owner, None)
        self.settle()

    @rule(name=st.sampled_from(NAMES), user=st.sampled_from(("alice", "bob")))
    def start_workspace(self, name: str, user: str) -> None:
        """The hub starts a workspace only for a project it has an entry for."""
        namespace = ("v1", "Namespace", "", namespace_of(name))
        if self.world.hub_entry(name) is not None and namespace in self.world.kube.objects:
            self.world.start_workspace(name, user)
        self.settle()

    @rule(name=st.sampled_from(NAMES))
    def delete(self, name: str) -> None:
        with self.world.kube.calm():
            self.world.kube.delete(*PROJECT_KEY[:2], name)
        self.settle()

    @rule(rate=st.sampled_from((0.0, 0.15, 0.3)), seed=st.integers(0, 100))
    def faults(self, rate: float, seed: int) -> None:
        self.world.kube.chaos(rate, seed=seed, max_consecutive=2)
        self.settle()

    def settle(self) -> None:
        """A pass over every Project (each write inside its own scope), then a second one that writes nothing."""
        kube = self.world.kube
        for name in NAMES:
            if kube.stored(project_key(name)) is None:
                continue
            kube.reset_counters()
            self.reconcile_until_done(name)
            scope = Scope(name, namespace_of(name), HUB)
            for write in kube.write_log:
                assert self.in_scope(write.key, scope), (name, write)
        with kube.calm():
            kube.reset_counters()
            for name in NAMES:
                if kube.stored(project_key(name)) is not None:
                    self.world.reconcile(name)
            assert kube.writes == 0, kube.write_log
        for name in NAMES:
            self.check_access(name)

    def reconcile_until_done(self, name: str) -> None:
        """As kopf does: a pass that ends in a temporary error or a conflict is run again later."""
        for _ in range(30):
            try:
                self.world.reconcile(name)
                return
            except (TemporaryError, KubeConflictError):
                continue
        pytest.fail(f"project {name} did not settle in 30 passes")

    @staticmethod
    def in_scope(key: Key, scope: Scope) -> bool:
        """Written independently of Scope: the project's namespace, its Namespace, its hub entry, its Project."""
        api_version, kind, namespace, _ = key
        if (api_version, kind) == ("events.k8s.io/v1", "Event"):
            return namespace == EVENTS
        own = {
            ("tre.dev/v1alpha1", "Project", "", scope.project),
            ("v1", "Namespace", "", namespace_of(scope.project)),
            ("v1", "ConfigMap", HUB, f"tre-workspace-{scope.project}"),
        }
        return key in own or (namespace == namespace_of(scope.project) and kind != "Namespace")

    def check_access(self, name: str) -> None:
        world = self.world
        project = self.live(name)
        namespace = namespace_of(name)
        pods = [k for k in world.kube.objects if k[:3] == ("v1", "Pod", namespace)]
        if project is None:  # deleted: nothing left (the default retention deletes the data)
            assert world.objects(name) == [] or all(
                o["metadata"].get("namespace") != namespace for o in world.objects(name)
            )
            assert ("v1", "Namespace", "", namespace) not in world.kube.objects
            assert name not in world.vault.roles
            return
        view = world.governance.evaluate(project, world.clock())
        if view.blockers or view.approval is None or project.spec.suspended:
            assert world.hub_entry(name) is None, name
            assert pods == []
            assert name not in world.vault.roles
            assert "Job" not in world.kinds(name)
            return
        approval = view.approval
        for obj in project_objects(project, CONFIG, members=view.members, approval=approval):
            if obj["kind"] == "Job" and world.status(name).get("provisionedRequest"):
                continue
            live = world.kube.stored(object_key_tuple(obj))
            assert live is not None, object_key(obj)
            assert apply_reason(obj, live, "tre-controller") is None, object_key(obj)
        profile = json.loads((world.hub_entry(name) or {})["data"][HUB_ENTRY_KEY])
        assert profile["members"] == sorted(view.members)
        assert world.vault.roles[name] == (namespace, WORKSPACE_SERVICE_ACCOUNT)


TestReconcilingConverges = Reconciling.TestCase
TestReconcilingConverges.settings = settings(
    max_examples=40, stateful_step_count=12, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def test_tre_controller_run_wires_the_settings_into_the_operator(
    tre: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def fake_run(reconciler: Reconciler, **options: Any) -> None:
        seen.update(options, reconciler=reconciler)

    monkeypatch.setattr(_kopf, "run_operator", fake_run)
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "before"))  # restored after the test, whatever the CLI sets
    kubeconfig = tmp_path / "config"
    cluster = {"name": "c", "cluster": {"server": "https://127.0.0.1:6443", "insecure-skip-tls-verify": True}}
    kubeconfig.write_text(
        json.dumps({
            "apiVersion": "v1", "kind": "Config", "clusters": [cluster],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}], "current-context": "x",
        })
    )  # fmt: skip
    result = tre(
        "controller", "run", "--kubeconfig", str(kubeconfig), "--namespace", "tre-system", "--interval", "30",
        "--workers", "2", "--retention", "delete", "--retention-on-delete", "keep", "--metrics-port", "9090",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (seen["interval"], seen["workers"], seen["metrics_port"], seen["liveness"]) == (30.0, 2, 9090, None)
    reconciler = seen["reconciler"]
    assert reconciler._settings.retention_on_block is Retention.DELETE
    assert reconciler._settings.retention_on_delete is Retention.KEEP
    assert reconciler._settings.event_namespace == "tre-system"
    assert reconciler._kube.field_manager == "tre-controller"
    assert type(reconciler._vault).__name__ == "NoVault"  # TRE_VAULT_ADDR is not set
    assert os.environ["KUBECONFIG"] == str(kubeconfig)  # kopf logs in with the same credentials
