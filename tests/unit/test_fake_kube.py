"""The in-memory API behaves as the controller's tests assume the real one does (see tests/support/fake_kube.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.fake_kube import FakeKube, Key
from tre.clients.kube import KubeConflictError
from tre.errors import InputError, NotFoundError, TemporaryError

QUOTA_KEY: Key = ("v1", "ResourceQuota", "tre-a", "tre-quota")


def quota(**hard: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "tre-quota", "namespace": "tre-a", "labels": {"tre.dev/project": "a"}},
        "spec": {"hard": hard or {"pods": "2"}},
    }


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube(namespaces=("tre-a", "tre-b"))


def test_an_unchanged_apply_changes_nothing(kube: FakeKube) -> None:
    kube.reset_counters()
    first = kube.apply(quota())
    again = kube.apply(quota())
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert again["metadata"]["generation"] == 1
    assert kube.writes == 2
    assert kube.changes == 1
    changed = kube.apply(quota(pods="3"))
    assert int(changed["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    assert changed["metadata"]["generation"] == 2


def test_apply_records_managed_fields_and_removes_fields_no_longer_applied(kube: FakeKube) -> None:
    kube.apply(quota(pods="2", services="1"))
    live = kube.apply(quota(pods="2"))
    assert live["spec"]["hard"] == {"pods": "2"}
    (entry,) = live["metadata"]["managedFields"]
    assert (entry["manager"], entry["operation"]) == ("tre-controller", "Apply")
    assert entry["fieldsV1"]["f:spec"] == {"f:hard": {"f:pods": {}}}


def test_a_field_another_manager_changed_conflicts_unless_forced(kube: FakeKube) -> None:
    kube.apply(quota(pods="2"))
    kube.edit(QUOTA_KEY, lambda obj: obj["spec"]["hard"].update(pods="99"))
    with pytest.raises(KubeConflictError, match=r"spec\.hard\.pods"):
        kube.apply(quota(pods="2"))
    live = kube.apply(quota(pods="2"), force=True)
    assert live["spec"]["hard"]["pods"] == "2"
    assert {e["manager"] for e in live["metadata"]["managedFields"]} == {"tre-controller"}


def test_a_field_only_someone_else_set_is_left_alone(kube: FakeKube) -> None:
    kube.apply(quota(pods="2"))
    kube.edit(QUOTA_KEY, lambda obj: obj["spec"]["hard"].update(secrets="5"))
    live = kube.apply(quota(pods="2"))
    assert live["spec"]["hard"] == {"pods": "2", "secrets": "5"}


def test_a_stale_resource_version_is_a_conflict(kube: FakeKube) -> None:
    live = kube.apply(quota())
    stale = {**quota(), "metadata": {**quota()["metadata"], "resourceVersion": "1"}}
    assert live["metadata"]["resourceVersion"] != "1"
    with pytest.raises(KubeConflictError):
        kube.apply(stale)
    with pytest.raises(KubeConflictError):
        kube.patch("v1", "ResourceQuota", "tre-quota", {"metadata": {"resourceVersion": "1"}}, namespace="tre-a")


def test_status_is_its_own_subresource(kube: FakeKube) -> None:
    kube.apply({**quota(), "status": {"used": {"pods": "1"}}})
    assert "status" not in (kube.stored(QUOTA_KEY) or {})
    live = kube.apply({**quota(), "status": {"used": {"pods": "1"}}}, subresource="status")
    assert live["status"] == {"used": {"pods": "1"}}
    assert live["metadata"]["generation"] == 1
    assert live["spec"]["hard"] == {"pods": "2"}


def test_namespaces_must_exist_and_take_their_contents_with_them(kube: FakeKube) -> None:
    with pytest.raises(NotFoundError, match='namespaces "tre-c" not found'):
        kube.apply({**quota(), "metadata": {"name": "q", "namespace": "tre-c"}})
    with pytest.raises(InputError):
        kube.apply({**quota(), "metadata": {"name": "q"}})
    kube.apply(quota())
    assert kube.delete("v1", "Namespace", "tre-a") is True
    assert kube.stored(QUOTA_KEY) is None
    assert kube.delete("v1", "Namespace", "tre-a") is False


def test_finalizers_hold_a_deleted_object_until_they_are_removed(kube: FakeKube) -> None:
    project = {"apiVersion": "tre.dev/v1alpha1", "kind": "Project", "metadata": {"name": "a", "finalizers": ["x"]}}
    kube.put(project)
    assert kube.delete("tre.dev/v1alpha1", "Project", "a") is True
    marked = kube.get("tre.dev/v1alpha1", "Project", "a")
    assert marked is not None
    assert marked["metadata"]["deletionTimestamp"]
    kube.patch("tre.dev/v1alpha1", "Project", "a", {"metadata": {"finalizers": []}})
    assert kube.get("tre.dev/v1alpha1", "Project", "a") is None


def test_lists_select_by_every_label_and_watches_replay_changes(kube: FakeKube) -> None:
    start = kube.resource_version
    kube.apply(quota())
    other = quota()
    other["metadata"] = {"name": "tre-quota", "namespace": "tre-b", "labels": {"tre.dev/project": "b"}}
    kube.apply(other)
    assert [o["metadata"]["namespace"] for o in kube.list("v1", "ResourceQuota")] == ["tre-a", "tre-b"]
    assert [o["metadata"]["namespace"] for o in kube.list("v1", "ResourceQuota", labels={"tre.dev/project": "b"})] == [
        "tre-b"
    ]
    assert kube.list("v1", "ResourceQuota", labels={"tre.dev/project": "b", "x": "y"}) == []
    assert kube.list("v1", "ResourceQuota", namespace="tre-a", labels={"tre.dev/project": "b"}) == []
    kube.delete("v1", "ResourceQuota", "tre-quota", namespace="tre-a")
    events = list(kube.watch("v1", "ResourceQuota", labels={"tre.dev/project": "a"}, resource_version=start))
    assert [e.type for e in events] == ["ADDED", "DELETED"]


def test_faults_are_injected_on_request(kube: FakeKube) -> None:
    kube.fail_next(2, status=503, verbs={"apply"}, kinds={"ResourceQuota"})
    kube.get("v1", "Namespace", "tre-a")  # other verbs are untouched
    for _ in range(2):
        with pytest.raises(TemporaryError):
            kube.apply(quota())
    kube.apply(quota())
    assert kube.writes == 1
    kube.chaos(1.0, max_consecutive=1, statuses=(409,))
    with pytest.raises(KubeConflictError):
        kube.get("v1", "Namespace", "tre-a")
    kube.get("v1", "Namespace", "tre-a")  # never more than max_consecutive in a row
    with kube.calm():
        kube.get("v1", "Namespace", "tre-a")
