"""The chart's RBAC against what the controller really asks the API server for.

A whole project lifecycle (create, a finished Job, drift, a cluster setting dropped, an older version's leftovers,
a changed request, a workspace, expiry with the data deleted, renewal, suspension, deletion) runs against the
in-memory API, which records every request as the verb, resource and namespace the API server would authorise.
Every request must be allowed by the roles the chart renders for the controller, and every verb those roles grant
must have been asked for (by the controller or by kopf, whose calls are listed below): a permission nobody uses is
one too many.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import helm_python as helm
import pytest
import yaml

from tests.support.fake_governance import example_project
from tests.support.fake_kube import FakeKube
from tests.unit.test_controller_reconcile import EVENTS, HUB, PROJECT_KEY, World
from tests.unit.test_helm_chart import CHART, REQUIRED
from tre.controller import MANAGED_BY, MANAGED_BY_LABEL, PROJECT_LABEL, ClusterConfig, Retention
from tre.workspaces.kubernetes import ControllerSettings, Outcome, Reconciler

CONTROLLER = ("ServiceAccount", "tre-controller", "tre")


class Request(NamedTuple):
    """One API request as RBAC sees it; namespace "" for cluster-scoped objects or cluster-wide lists."""

    verb: str
    group: str
    resource: str
    namespace: str


# kopf's own requests (it is not run here): it lists and watches Projects cluster-wide, and patches them to keep
# its finalizer and its progress annotations.
KOPF = {
    Request("list", "tre.dev", "projects", ""),
    Request("watch", "tre.dev", "projects", ""),
    Request("patch", "tre.dev", "projects", ""),
}


def resource_of(api_version: str, kind: str, subresource: str | None = None) -> tuple[str, str]:
    group = api_version.rpartition("/")[0]
    plural = kind.lower()[:-1] + "ies" if kind.endswith("y") else kind.lower() + "s"
    return group, f"{plural}/{subresource}" if subresource else plural


class RecordingKube(FakeKube):
    """The in-memory API server, noting each request in RBAC's terms."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seen: set[Request] = set()
        self.recording = False  # on only while the controller runs, not for the test's own requests

    def _note(self, verb: str, api_version: str, kind: str, namespace: str | None, sub: str | None = None) -> None:
        if self.recording:
            self.seen.add(Request(verb, *resource_of(api_version, kind, sub), namespace or ""))

    def apply(self, obj: Mapping[str, Any], *, force: bool = False, subresource: str | None = None) -> dict[str, Any]:
        metadata = obj.get("metadata") or {}
        namespace, name = metadata.get("namespace"), metadata["name"]
        key = (obj["apiVersion"], obj["kind"], namespace or "", name)
        self._note("patch", obj["apiVersion"], obj["kind"], namespace, subresource)
        if key not in self.objects:  # server-side apply of a new object is authorised as a create as well
            self._note("create", obj["apiVersion"], obj["kind"], namespace, subresource)
        return super().apply(obj, force=force, subresource=subresource)

    def patch(
        self, api_version: str, kind: str, name: str, patch: Mapping[str, Any], *, namespace: str | None = None
    ) -> dict[str, Any]:
        self._note("patch", api_version, kind, namespace)
        return super().patch(api_version, kind, name, patch, namespace=namespace)

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        self._note("create", obj["apiVersion"], obj["kind"], (obj.get("metadata") or {}).get("namespace"))
        return super().create(obj)

    def get(self, api_version: str, kind: str, name: str, *, namespace: str | None = None) -> dict[str, Any] | None:
        self._note("get", api_version, kind, namespace)
        return super().get(api_version, kind, name, namespace=namespace)

    def delete(
        self, api_version: str, kind: str, name: str, *, namespace: str | None = None, propagation: str = "Background"
    ) -> bool:
        self._note("delete", api_version, kind, namespace)
        return super().delete(api_version, kind, name, namespace=namespace, propagation=propagation)

    def list(
        self, api_version: str, kind: str, *, namespace: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        self._note("list", api_version, kind, namespace)
        return super().list(api_version, kind, namespace=namespace, labels=labels)


class Grants(NamedTuple):
    cluster: set[tuple[str, str, str]]  # (verb, group, resource) anywhere
    namespaced: set[tuple[str, str, str, str]]  # (verb, group, resource, namespace)

    def allow(self, request: Request) -> bool:
        rule = (request.verb, request.group, request.resource)
        return rule in self.cluster or (request.namespace != "" and (*rule, request.namespace) in self.namespaced)

    def all(self) -> set[Request]:
        return {Request(*rule, "") for rule in self.cluster} | {Request(*rule) for rule in self.namespaced}


@pytest.fixture(scope="module")
def controller_grants() -> Grants:
    """What the chart, as installed by default, lets the controller's ServiceAccount do."""
    helm.disable_logging()
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(REQUIRED, name="tre", namespace="tre")
    objects = [d for p, t in rendered.items() if p.endswith(".yaml") for d in yaml.safe_load_all(t) if d]
    roles = {(o["kind"], o["metadata"]["name"]): o for o in objects if o["kind"] in ("Role", "ClusterRole")}
    grants = Grants(set(), set())
    for binding in (o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        if not any((s["kind"], s["name"], s.get("namespace")) == CONTROLLER for s in binding["subjects"]):
            continue
        role = roles[(binding["roleRef"]["kind"], binding["roleRef"]["name"])]
        namespace = binding["metadata"].get("namespace")
        for rule in role["rules"]:
            for verb in rule["verbs"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        if namespace is None:
                            grants.cluster.add((verb, group, resource))
                        else:
                            grants.namespaced.add((verb, group, resource, namespace))
    return grants


def _recording_kube() -> RecordingKube:
    return RecordingKube(namespaces=("default", "kube-system", HUB, EVENTS))


@dataclass
class RecordedWorld(World):
    kube: RecordingKube = field(default_factory=_recording_kube)
    config: ClusterConfig = field(default_factory=ClusterConfig)

    @property
    def controller(self) -> Reconciler:
        return Reconciler(
            self.kube, self.governance, self.vault, self.config, self.settings,
            clock=self.clock, sleep=self.sleeps.append, rng=random.Random(7),
        )  # fmt: skip

    def reconcile(self, name: str) -> Outcome:
        self.kube.recording = True
        try:
            return super().reconcile(name)
        finally:
            self.kube.recording = False


def _leftover(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """An object an older controller version made under a name this one no longer uses."""
    labels = {MANAGED_BY_LABEL: MANAGED_BY, PROJECT_LABEL: "alpha"}
    metadata = {"name": name, "namespace": "tre-alpha", "labels": labels}
    return {"apiVersion": "v1", "kind": kind, "metadata": metadata, **spec}


LEFTOVERS = [
    _leftover("ResourceQuota", "tre-quota-v0", {"spec": {"hard": {"pods": "1"}}}),
    _leftover("LimitRange", "tre-limits-v0", {"spec": {"limits": []}}),
    _leftover("ServiceAccount", "tre-workspace-v0", {}),
    _leftover("PersistentVolumeClaim", "tre-data-v0", {"spec": {"accessModes": ["ReadWriteOnce"]}}),
]


def lifecycle(world: RecordedWorld) -> None:
    """Everything the controller does to one project, from its first pass to its deletion."""
    world.config = ClusterConfig(package_mirror_cidr="10.20.0.0/24", provisioner_egress_cidrs=("10.30.0.0/16",))
    project = example_project("alpha")
    world.governance.approve(project)
    world.declare(project)
    world.settle("alpha")
    world.complete_job("alpha")
    world.settle("alpha")
    world.kube.edit(("networking.k8s.io/v1", "NetworkPolicy", "tre-alpha", "tre-default-deny"), _allow_all_ingress)
    world.settle("alpha")  # drift repaired
    world.config = ClusterConfig()  # the mirror and the provisioner's egress are no longer configured
    for leftover in LEFTOVERS:
        world.kube.put(leftover, manager="tre-controller")
    world.settle("alpha")  # their NetworkPolicies, and the older version's leftovers, pruned
    request = project.spec.datasets[0].model_copy(update={"columns": project.spec.datasets[0].columns[:3]})
    narrower = example_project("alpha", datasets=[request])
    world.governance.approve(narrower)
    world.declare(narrower)
    world.settle("alpha")  # a new Job; the old one pruned
    world.start_workspace("alpha")
    world.settings = ControllerSettings(event_namespace=EVENTS, retention_on_block=Retention.DELETE)
    world.clock.advance(days=400)
    world.settle("alpha")  # expired: workspaces stopped, access removed, namespace and data deleted
    world.governance.approve(narrower, expires=dt.date(2029, 1, 1))
    world.settle("alpha")
    world.declare(example_project("alpha", datasets=[request], suspended=True))
    world.settle("alpha")
    world.kube.delete(*PROJECT_KEY[:2], "alpha")
    outcome = world.reconcile("alpha")
    assert outcome.finalizer_removed


def _allow_all_ingress(obj: dict[str, Any]) -> None:
    obj["spec"]["ingress"] = [{}]


@pytest.fixture(scope="module")
def requests() -> set[Request]:
    world = RecordedWorld()
    lifecycle(world)
    return world.kube.seen


def test_the_lifecycle_covers_what_it_claims(requests: set[Request]) -> None:
    verbs = {(r.verb, r.resource) for r in requests}
    for expected in [
        ("create", "namespaces"),
        ("delete", "namespaces"),
        ("delete", "networkpolicies"),
        ("delete", "serviceaccounts"),
        ("delete", "jobs"),
        ("delete", "pods"),
        ("patch", "networkpolicies"),
        ("patch", "projects/status"),
        ("create", "events"),
        ("get", "configmaps"),
    ]:
        assert expected in verbs, expected


def test_every_request_the_controller_makes_is_allowed(controller_grants: Grants, requests: set[Request]) -> None:
    refused = sorted(r for r in requests | KOPF if not controller_grants.allow(r))
    assert refused == []


def test_every_permission_the_chart_grants_the_controller_is_used(
    controller_grants: Grants, requests: set[Request]
) -> None:
    asked = requests | KOPF
    unused = []
    for grant in controller_grants.all():
        # a cluster-wide grant is used by the same request in any namespace
        used = grant in asked if grant.namespace else any(r[:3] == grant[:3] for r in asked)
        if not used:
            unused.append(grant)
    assert sorted(unused) == []


def test_events_and_hub_entries_are_granted_only_in_their_own_namespaces(controller_grants: Grants) -> None:
    assert {g[:3] for g in controller_grants.cluster} & {("create", "events.k8s.io", "events")} == set()
    assert all(g[2] != "configmaps" for g in controller_grants.cluster)
    assert {n for *_, n in controller_grants.namespaced} == {EVENTS, HUB}
    assert not controller_grants.allow(Request("create", "events.k8s.io", "events", "tre-alpha"))
    assert not controller_grants.allow(Request("patch", "", "configmaps", "tre-alpha"))


def test_a_missing_permission_would_be_noticed(controller_grants: Grants, requests: set[Request]) -> None:
    fewer = Grants({g for g in controller_grants.cluster if g != ("delete", "batch", "jobs")}, set())
    assert any(not fewer.allow(r) for r in requests)
