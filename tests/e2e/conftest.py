"""Fixtures for the tests that need a live Kubernetes cluster; they run only with ``--cluster``.

An operator with kind or k3s runs them like this (NetworkPolicies must be enforced: k3s does by default, kind from
v0.24 with kindnetd, or install Calico/Cilium)::

    kind create cluster --image kindest/node:v1.31.0
    podman build -f deploy/Containerfile -t ghcr.io/tre-dev/tre:0.1.0 .
    podman save ghcr.io/tre-dev/tre:0.1.0 -o tre.tar && kind load image-archive tre.tar
    .venv/bin/python -m pytest tests/e2e --cluster

They use the current kube context. What they install, and remove afterwards unless ``TRE_E2E_KEEP=1``:
namespace ``tre-e2e-deps`` (a throwaway PostgreSQL and an OpenBao dev server, with random credentials in Secrets),
the chart as release ``tre`` in namespace ``tre`` (its CRD included, installed with the Helm SDK), a stand-in for
the hub's API in namespace ``jupyterhub`` (pods labelled like the zero-to-jupyterhub hub, answering on 8081), and
the example Project. Object storage is not exercised: the chart is pointed at an S3 endpoint that is never called.

``TRE_E2E_IMAGE`` names the TRE image the cluster can pull (default: ghcr.io/tre-dev/tre:<chart appVersion>).
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "tre"
EXAMPLES = REPO / "examples"
DEPS = "tre-e2e-deps"
TRE = "tre"
HUB = "jupyterhub"
RELEASE = "tre"
PROJECT = "diabetes-outcomes"
PROJECT_NAMESPACE = f"tre-{PROJECT}"
KEEP = os.environ.get("TRE_E2E_KEEP") == "1"
T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T | None], *, timeout: float = 300, every: float = 3) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


@dataclass(frozen=True)
class Cluster:
    """Typed clients for the current kube context."""

    core: Any
    apps: Any
    networking: Any
    custom: Any

    def namespace_exists(self, name: str) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.read_namespace(name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def ensure_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        if not self.namespace_exists(name):
            self.core.create_namespace({"metadata": {"name": name, "labels": labels or {}}})

    def delete_namespace(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def create(self, create: Callable[..., Any], namespace: str, body: dict[str, Any]) -> None:
        """Create ``body``; an existing object of that name is left as it is (a rerun with TRE_E2E_KEEP=1)."""
        from kubernetes.client.exceptions import ApiException

        try:
            create(namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise

    def secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        body = {"metadata": {"name": name}, "type": "Opaque", "data": encoded}
        self.create(self.core.create_namespaced_secret, namespace, body)

    def secret_value(self, namespace: str, name: str, key: str) -> str:
        secret = self.core.read_namespaced_secret(name, namespace)
        return base64.b64decode(secret.data[key]).decode()

    def ready_pod(self, namespace: str, selector: str) -> str | None:
        for pod in self.core.list_namespaced_pod(namespace, label_selector=selector).items:
            conditions = pod.status.conditions or []
            if any(c.type == "Ready" and c.status == "True" for c in conditions):
                return str(pod.metadata.name)
        return None

    def run(self, namespace: str, pod: str, command: list[str], container: str | None = None) -> tuple[int, str]:
        """Run ``command`` in a pod; its exit code and output."""
        from kubernetes.stream import stream

        response = stream(
            self.core.connect_get_namespaced_pod_exec,
            pod,
            namespace,
            command=command,
            container=container,
            stdin=False,
            stdout=True,
            stderr=True,
            tty=False,
            _preload_content=False,
        )
        output: list[str] = []
        while response.is_open():
            response.update(timeout=5)
            output.append(response.read_stdout())
            output.append(response.read_stderr())
        response.close()
        return int(response.returncode or 0), "".join(output)


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    kubernetes = pytest.importorskip("kubernetes")
    try:
        kubernetes.config.load_kube_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_incluster_config()
    client = kubernetes.client
    version = client.VersionApi().get_code()
    if (int(version.major), int(version.minor.rstrip("+"))) < (1, 30):
        pytest.fail(
            f"the chart needs Kubernetes 1.30 or later (ValidatingAdmissionPolicy v1); this is {version.git_version}"
        )
    return Cluster(client.CoreV1Api(), client.AppsV1Api(), client.NetworkingV1Api(), client.CustomObjectsApi())


def _deployment(
    name: str, image: str, *, env: list[dict[str, Any]], command: list[str], port: int, probe: dict[str, Any]
) -> dict[str, Any]:
    labels = {"app": name}
    container = {
        "name": name,
        "image": image,
        "command": command,
        "env": env,
        "ports": [{"containerPort": port}],
        "readinessProbe": probe,
    }
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


def _service(name: str, port: int, selector: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"selector": selector, "ports": [{"port": port, "targetPort": port}]}}


def _from_secret(variable: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


@dataclass(frozen=True)
class Dependencies:
    database_url: str
    vault_address: str
    vault_token: str


@pytest.fixture(scope="session")
def dependencies(cluster: Cluster) -> Iterator[Dependencies]:
    """A throwaway PostgreSQL and OpenBao (dev mode, Kubernetes auth enabled) in their own namespace."""
    cluster.ensure_namespace(DEPS)
    cluster.secret(DEPS, "e2e", {"postgres-password": secrets.token_hex(16), "vault-token": secrets.token_hex(16)})
    apps, core = cluster.apps.create_namespaced_deployment, cluster.core.create_namespaced_service
    postgres_env = [
        {"name": "POSTGRES_USER", "value": "tre"},
        {"name": "POSTGRES_DB", "value": "tre"},
        _from_secret("POSTGRES_PASSWORD", "e2e", "postgres-password"),
    ]
    ready = {"exec": {"command": ["pg_isready", "-U", "tre"]}, "periodSeconds": 3}
    cluster.create(
        apps,
        DEPS,
        _deployment(
            "postgres",
            "docker.io/library/postgres:16-alpine",
            env=postgres_env,
            command=["docker-entrypoint.sh", "postgres"],
            port=5432,
            probe=ready,
        ),
    )
    cluster.create(core, DEPS, _service("postgres", 5432, {"app": "postgres"}))
    bao_env = [
        _from_secret("BAO_DEV_ROOT_TOKEN_ID", "e2e", "vault-token"),
        {"name": "BAO_ADDR", "value": "http://127.0.0.1:8200"},
    ]
    health = {"httpGet": {"path": "/v1/sys/health", "port": 8200}, "periodSeconds": 3}
    command = ["bao", "server", "-dev", "-dev-listen-address=0.0.0.0:8200"]
    cluster.create(
        apps,
        DEPS,
        _deployment("openbao", "quay.io/openbao/openbao:2.1.0", env=bao_env, command=command, port=8200, probe=health),
    )
    cluster.create(core, DEPS, _service("openbao", 8200, {"app": "openbao"}))
    wait_for("PostgreSQL to be ready", lambda: cluster.ready_pod(DEPS, "app=postgres"))
    bao = wait_for("OpenBao to be ready", lambda: cluster.ready_pod(DEPS, "app=openbao"))
    token = cluster.secret_value(DEPS, "e2e", "vault-token")
    for step in (
        "bao auth list | grep -q '^kubernetes/' || bao auth enable kubernetes",
        "bao write auth/kubernetes/config kubernetes_host=https://kubernetes.default.svc:443",
    ):
        code, output = cluster.run(DEPS, bao, ["sh", "-c", f'BAO_TOKEN="$BAO_DEV_ROOT_TOKEN_ID" {step}'])
        assert code == 0, output
    password = cluster.secret_value(DEPS, "e2e", "postgres-password")
    yield Dependencies(
        database_url=f"postgresql+psycopg://tre:{password}@postgres.{DEPS}.svc:5432/tre",
        vault_address=f"http://openbao.{DEPS}.svc:8200",
        vault_token=token,
    )
    if not KEEP:
        cluster.delete_namespace(DEPS)


@pytest.fixture(scope="session")
def hub_standin(cluster: Cluster) -> Iterator[None]:
    """Something answering on the hub's port with the hub's labels, unless a real hub runs in its namespace."""
    cluster.ensure_namespace(HUB)
    real = cluster.core.list_namespaced_pod(HUB, label_selector="app=jupyterhub,component=hub").items
    created = not real
    if created:
        labels = {"app": "jupyterhub", "component": "hub"}
        script = "mkdir -p /tmp/www && echo hub > /tmp/www/index.html && exec httpd -f -p 8081 -h /tmp/www"
        pod = {
            "metadata": {"name": "tre-e2e-hub-standin", "labels": labels},
            "spec": {
                "containers": [
                    {
                        "name": "hub",
                        "image": "docker.io/library/busybox:1.36",
                        "command": ["sh", "-c", script],
                        "ports": [{"containerPort": 8081}],
                        "securityContext": {"runAsUser": 65534, "runAsNonRoot": True},
                    }
                ]
            },
        }
        cluster.create(cluster.core.create_namespaced_pod, HUB, pod)
        cluster.create(cluster.core.create_namespaced_service, HUB, _service("hub", 8081, labels))
        wait_for("the hub stand-in", lambda: cluster.ready_pod(HUB, "app=jupyterhub,component=hub"))
    yield
    if created and not KEEP:
        cluster.core.delete_namespaced_pod("tre-e2e-hub-standin", HUB)
        cluster.core.delete_namespaced_service("hub", HUB)


def chart_values(dependencies: Dependencies) -> dict[str, Any]:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))["appVersion"]
    image = os.environ.get("TRE_E2E_IMAGE", f"ghcr.io/tre-dev/tre:{app_version}")
    repository, _, tag = image.rpartition(":")
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
        "database": {"existingSecret": "tre-database", "secretKey": "url"},
        "objectStore": {"url": "s3://tre-e2e/objects", "endpoint": "http://s3.invalid", "workloadIdentity": True},
        "vault": {
            "address": dependencies.vault_address,
            "auth": {"method": "tokenSecret", "tokenSecret": {"name": "tre-vault-token", "key": "token"}},
        },
        "controller": {"interval": 10},
        "airlock": {"replicas": 1},
    }


@pytest.fixture(scope="session")
def release(cluster: Cluster, dependencies: Dependencies, hub_standin: None) -> Iterator[dict[str, Any]]:
    """The chart installed with the Helm SDK (CRD, controller, airlock API, policies), waited for."""
    import helm_python as helm

    cluster.ensure_namespace(TRE)
    cluster.secret(TRE, "tre-database", {"url": dependencies.database_url})
    cluster.secret(TRE, "tre-vault-token", {"token": dependencies.vault_token})
    values = chart_values(dependencies)
    with helm.Config(namespace=TRE) as config:
        installed = [r for r in config.list() if r.get("name") == RELEASE]
        action = config.upgrade if installed else config.install
        action(str(CHART), RELEASE, values, namespace=TRE, wait="watcher", timeout=600)
        yield values
        if not KEEP:
            config.uninstall(RELEASE, wait="watcher", timeout=300, ignore_not_found=True)
    if not KEEP:
        cluster.delete_namespace(TRE)


@pytest.fixture(scope="session")
def controller_pod(cluster: Cluster, release: dict[str, Any]) -> str:
    selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=controller"
    return wait_for("the controller to be ready", lambda: cluster.ready_pod(TRE, selector))


@pytest.fixture(scope="session")
def tre(cluster: Cluster, controller_pod: str) -> Callable[..., str]:
    """Run the ``tre`` CLI in the controller's pod: the same image, database and settings as the controller."""

    def run(*args: str, ok: tuple[str, ...] = ()) -> str:
        code, output = cluster.run(TRE, controller_pod, ["tre", *args], container="controller")
        if code != 0 and not any(marker in output for marker in ok):
            pytest.fail(f"tre {' '.join(args)} exited {code}: {output}")
        return output

    return run


def copy_into(cluster: Cluster, pod: str, path: str, text: str) -> None:
    code, output = cluster.run(TRE, pod, ["sh", "-c", 'printf "%s" "$1" > "$0"', path, text], container="controller")
    assert code == 0, output


def project_resource() -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / f"{PROJECT}.project.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def approved_project(
    cluster: Cluster, release: dict[str, Any], controller_pod: str, tre: Callable[..., str]
) -> Iterator[str]:
    """The example Project applied as a resource, its people and dataset recorded, then approved with the CLI.

    Yields the project's namespace once the controller has created it. Deleting the Project afterwards exercises
    the teardown (the controller's finalizer removes the namespace).
    """
    resource = project_resource()
    group, version = resource["apiVersion"].split("/")
    custom = cluster.custom
    from kubernetes.client.exceptions import ApiException

    try:
        custom.create_cluster_custom_object(group, version, "projects", resource)
    except ApiException as exc:
        if exc.status != 409:
            raise
    accredited = (dt.date.today() + dt.timedelta(days=730)).isoformat()
    expires = (dt.date.today() + dt.timedelta(days=365)).isoformat()
    exists = ("already",)
    for name in ("alice", "bob"):
        tre("user", "add", name, "--role", "researcher", "--accreditation", f"safe-researcher:{accredited}", ok=exists)
    tre("user", "add", "carol", "--role", "approver", ok=exists)
    copy_into(cluster, controller_pod, "/tmp/dataset.yaml", (EXAMPLES / "hospital-episodes.dataset.yaml").read_text())
    copy_into(cluster, controller_pod, "/tmp/project.yaml", (EXAMPLES / f"{PROJECT}.project.yaml").read_text())
    tre("dataset", "register", "-f", "/tmp/dataset.yaml", ok=exists)
    tre("project", "apply", "-f", "/tmp/project.yaml")
    time.sleep(20)  # two controller passes while the project is still pending
    assert not cluster.namespace_exists(PROJECT_NAMESPACE), "the controller provisioned a project with no approval"
    tre(
        "project",
        "approve",
        PROJECT,
        "--by",
        "carol",
        "--reference",
        "25/NE/0001",
        "--expires",
        expires,
        "--agreement",
        "DSA-2026-014",
        ok=("already approved",),
    )
    wait_for(f"namespace {PROJECT_NAMESPACE}", lambda: cluster.namespace_exists(PROJECT_NAMESPACE), timeout=180)
    yield PROJECT_NAMESPACE
    if not KEEP:
        custom.delete_cluster_custom_object(group, version, "projects", PROJECT)
        wait_for(
            "the project namespace to be torn down",
            lambda: not cluster.namespace_exists(PROJECT_NAMESPACE),
            timeout=300,
        )
