"""The admission policies for project namespaces (policies/admission/): every CEL expression compiles, and each
policy gives the exact verdict on tables of allowed and denied requests; the objects are valid Kubernetes objects
and identical to what the chart installs.

The CEL is evaluated with cel-python the way the API server evaluates a ValidatingAdmissionPolicy
(tests/support/admission.py).
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml

from tests.support.admission import POLICIES, Request, admit, bindings, documents, load, policies, program

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "tre"
CONTROLLER = "system:serviceaccount:tre:tre-controller"
HUB = "system:serviceaccount:jupyterhub:hub"
NAMESPACE_CONTROLLER = "system:serviceaccount:kube-system:namespace-controller"
GARBAGE_COLLECTOR = "system:serviceaccount:kube-system:generic-garbage-collector"
KUBE_VERSIONS = ["1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0"]
REQUIRED_VALUES = {
    "database": {"existingSecret": "tre-database"},
    "objectStore": {"url": "s3://tre-data/prod", "credentials": {"existingSecret": "tre-s3"}},
    "vault": {"address": "https://vault.vault.svc:8200"},
}
HELM_LABELS = {
    "helm.sh/chart",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
}


# ---------------------------------------------------------------------------------------------------------------
# Objects


def namespace(name: str = "tre-diabetes-outcomes", project: str | None = "diabetes-outcomes") -> dict[str, Any]:
    labels = {"kubernetes.io/metadata.name": name}
    if project is not None:
        labels |= {"tre.dev/project": project, "pod-security.kubernetes.io/enforce": "restricted"}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


PROJECT_NS = namespace()
OTHER_PROJECT_NS = namespace("tre-other", "other")
PLAIN_NS = namespace("default", None)
KUBE_SYSTEM = namespace("kube-system", None)
HUB_NS = namespace("jupyterhub", None)

RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def workspace_pod(**changes: Any) -> dict[str, Any]:
    """A pod as KubeSpawner starts it for the project: non-root, labelled, data read-only."""
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "jupyter-alice",
            "namespace": "tre-diabetes-outcomes",
            "labels": {"tre.dev/project": "diabetes-outcomes", "component": "workspace"},
        },
        "spec": {
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 100},
            "containers": [
                {"name": "notebook", "image": "quay.io/jupyter/scipy-notebook", "securityContext": RESTRICTED}
            ],
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "data", "readOnly": True}},
                {"name": "outputs", "persistentVolumeClaim": {"claimName": "outputs-alice"}},
                {"name": "tmp", "emptyDir": {}},
            ],
        },
    }
    for path, value in changes.items():
        _set(pod, path, value)
    return pod


def _set(document: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted path (list indexes as numbers; the next index appends); value DELETE removes the key."""
    *parents, last = path.split(".")
    node: Any = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if value is DELETE:
        del node[last]
    elif isinstance(node, list) and int(last) == len(node):
        node.append(value)
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


DELETE = object()


def pod_request(
    pod: dict[str, Any], *, operation: str = "CREATE", ns: dict[str, Any] = PROJECT_NS, **kw: Any
) -> Request:
    return Request(operation, "pods", kw.pop("user", HUB), object=pod, namespace=ns, **kw)


def debug_request(pod: dict[str, Any]) -> Request:
    """kubectl debug: an UPDATE of the pods/ephemeralcontainers subresource."""
    return Request("UPDATE", "pods/ephemeralcontainers", "alice", object=pod, old=workspace_pod(), namespace=PROJECT_NS)


# ---------------------------------------------------------------------------------------------------------------
# The tables: (request, expected failure messages as regexes; [] = allowed; None = the policy does not apply)

PRIVILEGED = "privileged containers are not allowed"
HOST_NAMESPACES = "hostNetwork, hostPID and hostIPC are not allowed"
HOST_PATH = "hostPath volumes are not allowed"
NON_ROOT = "set runAsNonRoot: true"
ROOT_UID = "runAsUser 0"
DEBUGGER = {"name": "debug", "image": "busybox", "securityContext": {"privileged": True}}

POD_SECURITY: dict[str, tuple[Request, list[str] | None]] = {
    "restricted workspace pod": (pod_request(workspace_pod()), []),
    "runAsNonRoot on every container only": (
        pod_request(
            workspace_pod(
                **{"spec.securityContext": {}, "spec.initContainers": [{"name": "i", "securityContext": RESTRICTED}]}
            )
        ),
        [],
    ),
    "privileged explicitly false": (
        pod_request(workspace_pod(**{"spec.containers.0.securityContext": RESTRICTED | {"privileged": False}})),
        [],
    ),
    "hostNetwork explicitly false": (
        pod_request(workspace_pod(**{"spec.hostNetwork": False, "spec.hostPID": False})),
        [],
    ),
    "non-root ephemeral debug container": (
        debug_request(workspace_pod(**{"spec.ephemeralContainers": [{"name": "debug", "image": "busybox"}]})),
        [],
    ),
    "pod outside project namespaces": (pod_request(workspace_pod(**{"spec.hostNetwork": True}), ns=KUBE_SYSTEM), None),
    "privileged container": (
        pod_request(workspace_pod(**{"spec.containers.0.securityContext": RESTRICTED | {"privileged": True}})),
        [PRIVILEGED],
    ),
    "privileged init container": (
        pod_request(
            workspace_pod(
                **{"spec.initContainers": [DEBUGGER | {"securityContext": {"privileged": True, "runAsNonRoot": True}}]}
            )
        ),
        [PRIVILEGED],
    ),
    "privileged ephemeral container": (
        debug_request(workspace_pod(**{"spec.ephemeralContainers": [DEBUGGER]})),
        [PRIVILEGED],
    ),
    "hostNetwork": (pod_request(workspace_pod(**{"spec.hostNetwork": True})), [HOST_NAMESPACES]),
    "hostPID": (pod_request(workspace_pod(**{"spec.hostPID": True})), [HOST_NAMESPACES]),
    "hostIPC": (pod_request(workspace_pod(**{"spec.hostIPC": True})), [HOST_NAMESPACES]),
    "hostPath volume": (
        pod_request(workspace_pod(**{"spec.volumes.2": {"name": "tmp", "hostPath": {"path": "/var/run"}}})),
        [HOST_PATH],
    ),
    "no runAsNonRoot anywhere": (
        pod_request(workspace_pod(**{"spec.securityContext": {}, "spec.containers.0.securityContext": {}})),
        [NON_ROOT],
    ),
    "container overrides runAsNonRoot to false": (
        pod_request(workspace_pod(**{"spec.containers.0.securityContext": RESTRICTED | {"runAsNonRoot": False}})),
        [NON_ROOT],
    ),
    "one container of two lacks runAsNonRoot": (
        pod_request(
            workspace_pod(
                **{
                    "spec.securityContext": {},
                    "spec.containers.1": {"name": "sidecar", "image": "busybox"},
                }
            )
        ),
        [NON_ROOT],
    ),
    "runAsUser 0 on a container": (
        pod_request(workspace_pod(**{"spec.containers.0.securityContext": RESTRICTED | {"runAsUser": 0}})),
        [ROOT_UID],
    ),
    "runAsUser 0 on the pod": (
        pod_request(workspace_pod(**{"spec.securityContext": {"runAsNonRoot": True, "runAsUser": 0}})),
        [ROOT_UID],
    ),
    "everything wrong at once": (
        pod_request(
            workspace_pod(
                **{
                    "spec.hostPID": True,
                    "spec.securityContext": {},
                    "spec.containers.0.securityContext": {"privileged": True},
                    "spec.volumes.0": {"name": "root", "hostPath": {"path": "/"}},
                }
            )
        ),
        [PRIVILEGED, HOST_NAMESPACES, HOST_PATH, NON_ROOT],
    ),
}


def service(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s", "namespace": "tre-diabetes-outcomes"},
        "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}], **spec},
    }


def service_request(svc: dict[str, Any], ns: dict[str, Any] = PROJECT_NS) -> Request:
    return Request("CREATE", "services", "alice", object=svc, namespace=ns)


SERVICES: dict[str, tuple[Request, list[str] | None]] = {
    "no type (ClusterIP)": (service_request(service()), []),
    "ClusterIP": (service_request(service(type="ClusterIP")), []),
    "headless": (service_request(service(type="ClusterIP", clusterIP="None")), []),
    "ExternalName": (service_request(service(type="ExternalName", externalName="db.internal")), []),
    "empty externalIPs": (service_request(service(externalIPs=[])), []),
    "NodePort outside project namespaces": (service_request(service(type="NodePort"), ns=PLAIN_NS), None),
    "NodePort": (service_request(service(type="NodePort")), ["Services of type NodePort are not allowed"]),
    "LoadBalancer": (service_request(service(type="LoadBalancer")), ["Services of type LoadBalancer are not allowed"]),
    "externalIPs": (service_request(service(externalIPs=["203.0.113.7"])), ["externalIPs are not allowed"]),
}

LABEL = "must carry the label tre.dev/project=diabetes-outcomes"

POD_LABEL: dict[str, tuple[Request, list[str] | None]] = {
    "workspace pod with the project label": (pod_request(workspace_pod()), []),
    "provisioning Job pod with the project label": (
        pod_request(workspace_pod(**{"metadata.labels": {"tre.dev/project": "diabetes-outcomes", "job-name": "p"}})),
        [],
    ),
    "update that keeps the label and adds another": (
        pod_request(
            workspace_pod(
                **{
                    "metadata.labels": {
                        "tre.dev/project": "diabetes-outcomes",
                        "component": "workspace",
                        "hub.jupyter.org/username": "alice",
                    }
                }
            ),
            operation="UPDATE",
            old=workspace_pod(),
        ),
        [],
    ),
    "unlabelled pod outside project namespaces": (
        pod_request(workspace_pod(**{"metadata.labels": DELETE}), ns=PLAIN_NS),
        None,
    ),
    "no labels at all": (pod_request(workspace_pod(**{"metadata.labels": DELETE})), [LABEL]),
    "labels without the project label": (
        pod_request(workspace_pod(**{"metadata.labels": {"component": "workspace"}})),
        [LABEL],
    ),
    "another project's label": (
        pod_request(workspace_pod(**{"metadata.labels": {"tre.dev/project": "other", "component": "workspace"}})),
        [LABEL],
    ),
    "update that removes the label": (
        pod_request(workspace_pod(**{"metadata.labels": {}}), operation="UPDATE", old=workspace_pod()),
        [LABEL],
    ),
}


def network_policy() -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "default-deny", "namespace": "tre-diabetes-outcomes"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }


def netpol_request(operation: str, user: str, ns: dict[str, Any] = PROJECT_NS) -> Request:
    obj = None if operation == "DELETE" else network_policy()
    old = None if operation == "CREATE" else network_policy()
    return Request(operation, "networkpolicies", user, object=obj, old=old, namespace=ns, group="networking.k8s.io")


GUARD = "managed by the TRE controller only"

NETPOL_GUARD: dict[str, tuple[Request, list[str] | None]] = {
    "controller creates": (netpol_request("CREATE", CONTROLLER), []),
    "controller updates": (netpol_request("UPDATE", CONTROLLER), []),
    "controller deletes": (netpol_request("DELETE", CONTROLLER), []),
    "namespace controller deletes (namespace teardown)": (netpol_request("DELETE", NAMESPACE_CONTROLLER), []),
    "garbage collector deletes": (netpol_request("DELETE", GARBAGE_COLLECTOR), []),
    "anyone, outside project namespaces": (netpol_request("CREATE", "alice", ns=PLAIN_NS), None),
    "a researcher creates": (netpol_request("CREATE", "alice"), [GUARD]),
    "a cluster admin updates": (netpol_request("UPDATE", "kubernetes-admin"), [GUARD]),
    "a cluster admin deletes": (netpol_request("DELETE", "kubernetes-admin"), [GUARD]),
    "the hub creates": (netpol_request("CREATE", HUB), [GUARD]),
    "the project's own ServiceAccount updates": (
        netpol_request("UPDATE", "system:serviceaccount:tre-diabetes-outcomes:workspace"),
        [GUARD],
    ),
    "a controller of the same name in another namespace": (
        netpol_request("CREATE", "system:serviceaccount:other:tre-controller"),
        [GUARD],
    ),
    "the namespace controller may delete but not create": (netpol_request("CREATE", NAMESPACE_CONTROLLER), [GUARD]),
}

NS_SCOPE = "may only create, change or delete project namespaces"


def ns_request(
    operation: str, new: dict[str, Any] | None, old: dict[str, Any] | None, user: str = CONTROLLER
) -> Request:
    return Request(operation, "namespaces", user, object=new, old=old)


def in_namespace(resource: str, ns: dict[str, Any], *, operation: str = "CREATE", group: str = "") -> Request:
    obj = {"metadata": {"name": "x", "namespace": ns["metadata"]["name"]}}
    return Request(
        operation,
        resource,
        CONTROLLER,
        object=None if operation == "DELETE" else obj,
        old=None if operation == "CREATE" else obj,
        namespace=ns,
        group=group,
    )


def scope_message(resource: str, ns: str) -> str:
    return f"the TRE controller may not write {resource} in namespace {ns}"


CONTROLLER_SCOPE: dict[str, tuple[Request, list[str] | None]] = {
    "creates a project namespace": (ns_request("CREATE", PROJECT_NS, None), []),
    "updates a project namespace": (ns_request("UPDATE", PROJECT_NS, PROJECT_NS), []),
    "deletes a project namespace": (ns_request("DELETE", None, PROJECT_NS), []),
    "NetworkPolicy in a project namespace": (
        in_namespace("networkpolicies", PROJECT_NS, group="networking.k8s.io"),
        [],
    ),
    "Job in a project namespace": (in_namespace("jobs", PROJECT_NS, group="batch"), []),
    "deletes a workspace pod": (in_namespace("pods", PROJECT_NS, operation="DELETE"), []),
    "hub entry in the hub namespace": (in_namespace("configmaps", HUB_NS), []),
    "someone else's request is not this policy's business": (
        ns_request("CREATE", namespace("scratch", None), None, user="kubernetes-admin"),
        None,
    ),
    "creates an unlabelled namespace": (ns_request("CREATE", namespace("tre-x", None), None), [NS_SCOPE]),
    "creates a labelled namespace without the prefix": (
        ns_request("CREATE", namespace("kube-x", "x"), None),
        [NS_SCOPE],
    ),
    "removes the project label": (ns_request("UPDATE", namespace("tre-x", None), PROJECT_NS), [NS_SCOPE]),
    "adopts an existing namespace by labelling it": (ns_request("UPDATE", PROJECT_NS, PLAIN_NS), [NS_SCOPE]),
    "deletes kube-system": (ns_request("DELETE", None, KUBE_SYSTEM), [NS_SCOPE]),
    "Job in kube-system": (in_namespace("jobs", KUBE_SYSTEM, group="batch"), [scope_message("jobs", "kube-system")]),
    "ServiceAccount in default": (
        in_namespace("serviceaccounts", PLAIN_NS),
        [scope_message("serviceaccounts", "default")],
    ),
    "ConfigMap outside the hub namespace": (
        in_namespace("configmaps", PLAIN_NS),
        [scope_message("configmaps", "default")],
    ),
    "PVC in the hub namespace": (
        in_namespace("persistentvolumeclaims", HUB_NS),
        [scope_message("persistentvolumeclaims", "jupyterhub")],
    ),
}


def hub_request(resource: str, ns: dict[str, Any], operation: str = "CREATE", user: str = HUB) -> Request:
    obj = workspace_pod() if resource == "pods" else {"metadata": {"name": "outputs-alice"}}
    return Request(
        operation,
        resource,
        user,
        object=None if operation == "DELETE" else obj,
        old=None if operation == "CREATE" else obj,
        namespace=ns,
    )


HUB_ONLY = "JupyterHub may start workspaces only in project namespaces, not in"

HUB_SCOPE: dict[str, tuple[Request, list[str] | None]] = {
    "starts a workspace in a project namespace": (hub_request("pods", PROJECT_NS), []),
    "claims an outputs volume in a project namespace": (hub_request("persistentvolumeclaims", OTHER_PROJECT_NS), []),
    "stops a workspace": (hub_request("pods", PROJECT_NS, "DELETE"), []),
    "another user's pod is not this policy's business": (hub_request("pods", KUBE_SYSTEM, user="alice"), None),
    "starts a pod in kube-system": (hub_request("pods", KUBE_SYSTEM), [f"{HUB_ONLY} kube-system"]),
    "starts a pod in its own namespace": (hub_request("pods", HUB_NS), [f"{HUB_ONLY} jupyterhub"]),
    "claims a volume in default": (hub_request("persistentvolumeclaims", PLAIN_NS), [f"{HUB_ONLY} default"]),
    "deletes a pod in default": (hub_request("pods", PLAIN_NS, "DELETE"), [f"{HUB_ONLY} default"]),
}

TABLES = {
    "tre-workspace-pod-security": POD_SECURITY,
    "tre-workspace-services": SERVICES,
    "tre-workspace-pod-project-label": POD_LABEL,
    "tre-networkpolicy-guard": NETPOL_GUARD,
    "tre-controller-scope": CONTROLLER_SCOPE,
    "tre-hub-scope": HUB_SCOPE,
}


def _cases() -> Iterator[Any]:
    for policy, table in TABLES.items():
        for case, (request, expected) in table.items():
            yield pytest.param(policy, request, expected, id=f"{policy}: {case}")


@pytest.mark.parametrize(("policy", "request_", "expected"), list(_cases()))
def test_policy_verdict(policy: str, request_: Request, expected: list[str] | None) -> None:
    failures = admit(policy, copy.deepcopy(request_))
    if expected is None:
        assert failures is None, f"the policy should not apply, but gave {failures}"
        return
    assert failures is not None, "the policy should apply"
    assert len(failures) == len(expected), failures
    for message, pattern in zip(failures, expected, strict=True):
        assert re.search(re.escape(pattern), message), (pattern, message)


def test_every_policy_has_a_table_with_allowed_and_denied_requests() -> None:
    assert set(TABLES) == set(policies()) == set(bindings())
    for name, table in TABLES.items():
        verdicts = [expected for _, expected in table.values()]
        assert sum(1 for v in verdicts if v == []) >= 3, f"{name}: too few allowed cases"
        assert sum(1 for v in verdicts if v) >= 3, f"{name}: too few denied cases"


def _expressions(policy: dict[str, Any]) -> Iterator[str]:
    spec = policy["spec"]
    for item in spec.get("matchConditions", []) + spec.get("variables", []):
        yield item["expression"]
    for validation in spec["validations"]:
        yield validation["expression"]
        if "messageExpression" in validation:
            yield validation["messageExpression"]


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_expression_compiles(name: str) -> None:
    expressions = list(_expressions(policies()[name]))
    assert expressions
    for expression in expressions:
        program(expression)  # raises CELParseError on a syntax error


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_validation_explains_itself(name: str) -> None:
    for validation in policies()[name]["spec"]["validations"]:
        assert validation.get("message") or validation.get("messageExpression")
        assert validation["reason"] == "Forbidden"


def test_project_policies_bind_to_project_namespaces_and_scope_policies_to_all() -> None:
    project = {"matchExpressions": [{"key": "tre.dev/project", "operator": "Exists"}]}
    for name, binding in bindings().items():
        spec = binding["spec"]
        assert spec["validationActions"] == ["Deny"]
        expected = {} if name.endswith("-scope") else project
        assert spec["matchResources"]["namespaceSelector"] == expected, name
        if name.endswith("-scope"):
            assert policies()[name]["spec"]["matchConditions"], f"{name} must only judge its own principal"
    assert all(p["spec"]["failurePolicy"] == "Fail" for p in policies().values())


@pytest.fixture(scope="module")
def cached_schemas() -> Iterator[None]:
    """kubernetes-validate re-reads its 1.5 MB definitions on every call; read each schema file once."""
    original = kubernetes_validate.utils.schema_contents
    kubernetes_validate.utils.schema_contents = functools.cache(original)
    yield
    kubernetes_validate.utils.schema_contents = original


@pytest.mark.usefixtures("cached_schemas")
@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_policy_objects_are_valid_kubernetes_objects(version: str) -> None:
    objects = documents()
    assert {d["kind"] for d in objects} == {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    for document in objects:
        kubernetes_validate.validate(document, version, strict=True)


def _without_helm_labels(document: dict[str, Any]) -> dict[str, Any]:
    document = copy.deepcopy(document)
    labels = document["metadata"].get("labels", {})
    document["metadata"]["labels"] = {k: v for k, v in labels.items() if k not in HELM_LABELS}
    return document


def test_chart_installs_exactly_thesepolicies() -> None:
    helm.disable_logging()
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(REQUIRED_VALUES, name="tre", namespace="tre")
    ours = {
        Path(path).name: [_without_helm_labels(d) for d in yaml.safe_load_all(text) if d]
        for path, text in rendered.items()
        if "/templates/admission/" in path
    }
    canonical = {path.name: load(path) for path in sorted(POLICIES.glob("*.yaml"))}
    assert set(ours) == set(canonical)
    for name, expected in canonical.items():
        assert ours[name] == expected, (
            f"policies/admission/{name} differs from helm/tre/templates/admission/{name} rendered for release tre: "
            "change both together"
        )
