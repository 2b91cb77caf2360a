"""On a live cluster: the chart installs, an approved Project becomes an isolated namespace, and a pod in it can
reach DNS, the hub and the airlock but not an outside address or the cloud metadata address. The admission
policies refuse what the unit tests say they refuse. Run with ``--cluster`` (see conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.conftest import HUB, PROJECT, TRE, Cluster, wait_for

pytestmark = pytest.mark.e2e

PROJECT_NETWORK_POLICIES = {
    "tre-default-deny",
    "tre-allow-egress-hub",
    "tre-allow-egress-airlock",
    "tre-allow-egress-dns",
    "tre-allow-ingress-from-hub",
}
RESTRICTED = {
    "runAsNonRoot": True,
    "runAsUser": 65534,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
PROBES = {
    "dns": "nslookup kubernetes.default.svc.cluster.local",
    "hub": f"wget -q -T 5 -O /dev/null http://hub.{HUB}.svc:8081/",
    "airlock": f"wget -q -T 5 -O /dev/null http://tre-airlock.{TRE}.svc:80/healthz",
    "outside": "wget -q -T 5 -O /dev/null http://1.1.1.1/",
    "metadata": "wget -q -T 5 -O /dev/null http://169.254.169.254/",
}


def probe_pod(name: str, project: str | None) -> dict[str, Any]:
    script = "; ".join(
        f"if {command} >/dev/null 2>&1; then echo {probe}=reachable; else echo {probe}=unreachable; fi"
        for probe, command in PROBES.items()
    )
    labels = {"tre.dev/project": project} if project else {}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "probe",
                    "image": "docker.io/library/busybox:1.36",
                    "command": ["sh", "-c", script],
                    "securityContext": RESTRICTED,
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "32Mi"},
                        "limits": {"cpu": "100m", "memory": "32Mi"},
                    },
                }
            ],
        },
    }


def run_probes(cluster: Cluster, namespace: str, project: str | None) -> dict[str, str]:
    name = f"egress-probe-{uuid.uuid4().hex[:6]}"
    cluster.core.create_namespaced_pod(namespace, probe_pod(name, project))

    def finished() -> str | None:
        phase = cluster.core.read_namespaced_pod(name, namespace).status.phase
        return phase if phase in {"Succeeded", "Failed"} else None

    wait_for(f"probe pod {namespace}/{name}", finished, timeout=180)
    log = cluster.core.read_namespaced_pod_log(name, namespace)
    cluster.core.delete_namespaced_pod(name, namespace)
    return dict(line.split("=", 1) for line in log.split() if "=" in line)


def test_the_chart_runs_the_controller_and_the_airlock(cluster: Cluster, release: dict[str, Any]) -> None:
    for name in ("tre-controller", "tre-airlock"):
        deployment = cluster.apps.read_namespaced_deployment(name, TRE)
        assert deployment.status.available_replicas == deployment.spec.replicas, name


def test_an_approved_project_gets_its_isolation_boundary(cluster: Cluster, approved_project: str) -> None:
    namespace = cluster.core.read_namespace(approved_project)
    labels = namespace.metadata.labels
    assert labels["tre.dev/project"] == PROJECT
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"

    def policies() -> set[str] | None:
        found = {p.metadata.name for p in cluster.networking.list_namespaced_network_policy(approved_project).items}
        return found if found >= PROJECT_NETWORK_POLICIES else None

    wait_for("the project's NetworkPolicies", policies, timeout=120)
    for kind, read in (
        ("ResourceQuota", cluster.core.list_namespaced_resource_quota),
        ("LimitRange", cluster.core.list_namespaced_limit_range),
    ):
        assert read(approved_project).items, kind
    assert cluster.core.read_namespaced_service_account("tre-workspace", approved_project)


def test_the_provisioning_job_publishes_onto_the_data_volume(cluster: Cluster, approved_project: str) -> None:
    """The API server accepted the Job that copies the extract onto the data volume (``--to /data``). This set-up
    has no S3 and no provisioner Secret, so the Job does not run to the end here; tests/unit/test_data_export.py and
    tests/integration/test_provision_export.py run that command for real."""
    from kubernetes.client import BatchV1Api

    batch = BatchV1Api()

    def job() -> Any:
        jobs = batch.list_namespaced_job(approved_project, label_selector="tre.dev/component=provisioner").items
        return jobs[0] if jobs else None

    found = wait_for("the provisioning Job", job, timeout=120)
    pod = found.spec.template.spec
    (container,) = pod.containers
    assert container.args == ["provision", PROJECT, "--to", "/data"]
    assert [(m.name, m.mount_path) for m in container.volume_mounts if m.name == "data"] == [("data", "/data")]
    (volume,) = [v for v in pod.volumes if v.name == "data"]
    assert volume.persistent_volume_claim.claim_name == "tre-data"
    assert cluster.core.read_namespaced_persistent_volume_claim("tre-data", approved_project)


def test_a_workspace_pod_reaches_only_dns_the_hub_and_the_airlock(cluster: Cluster, approved_project: str) -> None:
    wait_for(
        "the project's NetworkPolicies",
        lambda: len(cluster.networking.list_namespaced_network_policy(approved_project).items) >= 5,
    )
    inside = run_probes(cluster, approved_project, PROJECT)
    assert inside["dns"] == "reachable", inside
    assert inside["hub"] == "reachable", inside
    assert inside["airlock"] == "reachable", inside
    assert inside["metadata"] == "unreachable", inside
    assert inside["outside"] == "unreachable", inside

    control = f"tre-e2e-control-{uuid.uuid4().hex[:6]}"
    cluster.ensure_namespace(control)
    try:
        outside = run_probes(cluster, control, None)
    finally:
        cluster.delete_namespace(control)
    if outside["outside"] != "reachable":
        pytest.skip("this cluster has no route out at all, so the outside check above proves nothing about policy")


def test_admission_refuses_a_privileged_pod(cluster: Cluster, approved_project: str) -> None:
    from kubernetes.client.exceptions import ApiException

    pod = probe_pod("privileged", PROJECT)
    pod["spec"]["containers"][0]["securityContext"] = RESTRICTED | {"privileged": True}
    with pytest.raises(ApiException) as refused:
        cluster.core.create_namespaced_pod(approved_project, pod, dry_run="All")
    assert "privileged" in str(refused.value.body)


def test_admission_refuses_an_unlabelled_pod(cluster: Cluster, approved_project: str) -> None:
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as refused:
        cluster.core.create_namespaced_pod(approved_project, probe_pod("unlabelled", None), dry_run="All")
    assert "tre.dev/project" in str(refused.value.body)


def test_admission_refuses_a_node_port(cluster: Cluster, approved_project: str) -> None:
    from kubernetes.client.exceptions import ApiException

    service = {
        "metadata": {"name": "exposed"},
        "spec": {"type": "NodePort", "selector": {"a": "b"}, "ports": [{"port": 80}]},
    }
    with pytest.raises(ApiException) as refused:
        cluster.core.create_namespaced_service(approved_project, service, dry_run="All")
    assert "NodePort" in str(refused.value.body)


def test_only_the_controller_may_change_a_projects_network_policies(cluster: Cluster, approved_project: str) -> None:
    from kubernetes.client.exceptions import ApiException

    patch = {"spec": {"egress": [{}], "policyTypes": ["Egress"]}}
    with pytest.raises(ApiException) as refused:
        cluster.networking.patch_namespaced_network_policy("tre-default-deny", approved_project, patch, dry_run="All")
    assert "managed by the TRE controller only" in str(refused.value.body)
    with pytest.raises(ApiException):
        cluster.networking.delete_namespaced_network_policy("tre-default-deny", approved_project, dry_run="All")


def test_the_cli_sees_the_project_as_approved(tre: Callable[..., str], approved_project: str) -> None:
    assert "approved" in tre("project", "show", PROJECT)
