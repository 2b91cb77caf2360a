"""The Helm chart (helm/tre), rendered and linted with Helm's own Go SDK (helm-python-sdk, no helm binary).

Every rendered object of a built-in kind validates against the official schemas of Kubernetes 1.30 to 1.34 with
kubernetes-validate --strict; CRD-typed objects validate against their CRD's openAPIV3Schema with unknown fields
refused. Security properties are asserted on the rendered objects: restricted security contexts, secrets only by
reference, least-privilege RBAC. The values schema refuses bad values with a message naming the key.
"""

from __future__ import annotations

import copy
import functools
import http.server
import importlib.util
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tre.airlock import State
from tre.cli import app as tre_cli
from tre.controller import ClusterConfig

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "tre"
CRDS = REPO / "tests" / "fixtures" / "crds"
PROJECT_CRD = CHART / "crds" / "projects.tre.dev.yaml"
KUBE_VERSIONS = ["1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0"]
RELEASE, NAMESPACE = "tre", "tre"

REQUIRED = {
    "database": {"existingSecret": "tre-database"},
    "objectStore": {"url": "s3://tre-data/prod", "credentials": {"existingSecret": "tre-s3"}},
    "vault": {"address": "https://vault.vault.svc:8200"},
}
EVERYTHING_ON = {
    "image": {"digest": "sha256:" + "a" * 64},
    "imagePullSecrets": [{"name": "registry"}],
    "objectStore": {"endpoint": "https://s3.example.org", "region": "eu-west-2"},
    "cluster": {
        "packageMirror": {"cidr": "10.20.0.0/24", "port": 443},
        "storageClass": "encrypted-ssd",
        "provisioner": {"egressCidrs": ["10.30.0.0/16"], "egressNamespaces": ["postgres"]},
    },
    "controller": {
        "metrics": {"enabled": True},
        "nodeSelector": {"pool": "system"},
        "tolerations": [{"key": "system", "operator": "Exists"}],
    },
    "airlock": {
        "podDisruptionBudget": {"enabled": True, "minAvailable": 1},
        "affinity": {"podAntiAffinity": {}},
        "podAnnotations": {"example.org/team": "tre"},
    },
    "networkPolicy": {
        "airlockIngressFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}],
        "egress": {
            "restricted": True,
            "rules": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 5432, "protocol": "TCP"}]}],
        },
    },
    "metrics": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "prometheusRule": {"enabled": True},
    },
    "admissionPolicies": {"validationActions": ["Deny", "Audit"]},
}
CRD_KINDS = {"ServiceMonitor": "servicemonitors", "PrometheusRule": "prometheusrules"}

# What the chart may grant, per (apiGroup, resource): exactly the calls the controller (tre.workspaces.kubernetes,
# kopf with CRD scanning off) and KubeSpawner 7 make. A verb more is a privilege nobody uses.
APPLIED = {"list", "create", "patch", "delete"}  # listed by label, server-side applied (create for new), deleted
CONTROLLER_RULES = {
    ("tre.dev", "projects"): {"get", "list", "watch", "patch"},
    ("tre.dev", "projects/status"): {"patch"},
    ("", "namespaces"): APPLIED,
    ("", "resourcequotas"): APPLIED,
    ("", "limitranges"): APPLIED,
    ("", "serviceaccounts"): APPLIED,
    ("", "persistentvolumeclaims"): APPLIED,
    ("networking.k8s.io", "networkpolicies"): APPLIED,
    ("batch", "jobs"): APPLIED,
    ("", "pods"): {"list", "delete"},
}
ROLES = {
    ("ClusterRole", "tre-controller"): CONTROLLER_RULES,
    ("Role", "tre-controller-events"): {("events.k8s.io", "events"): {"create"}},
    ("Role", "tre-controller-hub-entries"): {("", "configmaps"): {"get"} | APPLIED},
    ("Role", "tre-hub-reader"): {("", "configmaps"): {"get", "list"}},
    ("ClusterRole", "tre-hub-spawner"): {
        ("", "pods"): {"list", "watch", "create", "delete"},
        ("", "persistentvolumeclaims"): {"get", "create", "delete"},
        ("", "events"): {"list", "watch"},
    },
}
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001}
CONTAINER_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "privileged": False,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
# Environment variables that may carry a literal value; everything else must come from a Secret.
PLAIN_ENV = {
    "TRE_ENVIRONMENT",
    "TRE_HOME",
    "TRE_OBJECT_STORE_URL",
    "TRE_S3_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
    "TRE_VAULT_ADDR",
    "TRE_VAULT_TOKEN_FILE",
    "TRE_HUB_API_URL",
}
DOWNWARD_ENV = {"POD_NAMESPACE": "metadata.namespace", "POD_NAME": "metadata.name"}
CREDENTIAL_ENV = re.compile(r"PASSWORD|SECRET|TOKEN(?!_FILE)|ACCESS_KEY|DATABASE_URL|CREDENTIAL")
CREDENTIAL_VALUE = re.compile(
    r"://[^/\s:@]+:[^/\s@]+@|AKIA[0-9A-Z]{16}|^[A-Za-z0-9+/=_-]{32,}$|^hvs\.|^s\.[A-Za-z0-9]{20,}"
)


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for layer in layers:
        _merge(result, copy.deepcopy(layer))
    return result


def _merge(into: dict[str, Any], layer: dict[str, Any]) -> None:
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    helm.disable_logging()
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return [
        document
        for path, text in sorted(rendered.items())
        if path.endswith(".yaml")
        for document in yaml.safe_load_all(text)
        if document
    ]


PROFILES = {"required values only": REQUIRED, "every option on": merged(REQUIRED, EVERYTHING_ON)}


@pytest.fixture(scope="module", params=list(PROFILES))
def objects(request: pytest.FixtureRequest, chart: helm.Chart) -> list[dict[str, Any]]:
    return render(chart, PROFILES[request.param])


@pytest.fixture(scope="module")
def everything(chart: helm.Chart) -> list[dict[str, Any]]:
    return render(chart, PROFILES["every option on"])


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for o in objects:
        if o["kind"] in {"Deployment", "Job", "StatefulSet", "DaemonSet"}:
            yield f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return spec.get("initContainers", []) + spec["containers"]


# ---------------------------------------------------------------------------------------------------------------
# Lint and render


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("profile", list(PROFILES))
def test_lint_strict_is_clean(profile: str, version: str) -> None:
    report = helm.lint(CHART, PROFILES[profile], strict=True, namespace=NAMESPACE, kube_version=f"v{version}")
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == []


def test_chart_declares_kubernetes_1_30_or_later(chart: helm.Chart) -> None:
    """ValidatingAdmissionPolicy v1 is GA from 1.30; Helm refuses to install on an older cluster."""
    assert chart.metadata["kubeVersion"] == ">=1.30.0-0"
    assert chart.metadata["apiVersion"] == "v2"


def test_default_install_has_the_expected_objects(chart: helm.Chart) -> None:
    kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in render(chart, REQUIRED))
    assert kinds == sorted(
        [
            "ClusterRole/tre-controller",
            "ClusterRole/tre-hub-spawner",
            "ClusterRoleBinding/tre-controller",
            "ClusterRoleBinding/tre-hub-spawner",
            "ConfigMap/tre-airlock-asgi",
            "ConfigMap/tre-controller",
            "Deployment/tre-airlock",
            "Deployment/tre-controller",
            "Job/tre-migrate",
            "NetworkPolicy/tre-airlock",
            "NetworkPolicy/tre-controller",
            "NetworkPolicy/tre-default-deny",
            "Role/tre-controller-events",
            "Role/tre-controller-hub-entries",
            "Role/tre-hub-reader",
            "RoleBinding/tre-controller-events",
            "RoleBinding/tre-controller-hub-entries",
            "RoleBinding/tre-hub-reader",
            "Service/tre-airlock",
            "ServiceAccount/tre-controller",
            *(
                f"{kind}/tre-{name}"
                for kind in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
                for name in (
                    "workspace-pod-security",
                    "workspace-services",
                    "workspace-pod-project-label",
                    "networkpolicy-guard",
                    "controller-scope",
                    "hub-scope",
                )
            ),
        ]
    )


def test_every_option_adds_its_objects(everything: list[dict[str, Any]]) -> None:
    for kind, name in [
        ("ServiceMonitor", "tre"),
        ("PrometheusRule", "tre"),
        ("PodDisruptionBudget", "tre-airlock"),
        ("Service", "tre-controller-metrics"),
    ]:
        find(everything, kind, name)
    deny = find(everything, "NetworkPolicy", "tre-default-deny")
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert len(deny["spec"]["egress"]) == 3  # DNS, the hub API (hub tokens), the configured database rule


# ---------------------------------------------------------------------------------------------------------------
# Schemas: built-in kinds against Kubernetes, CRD kinds against their CRDs


@pytest.fixture(scope="module")
def cached_schemas() -> Iterator[None]:
    """kubernetes-validate re-reads its 1.5 MB definitions on every call; read each schema file once."""
    original = kubernetes_validate.utils.schema_contents
    kubernetes_validate.utils.schema_contents = functools.cache(original)
    yield
    kubernetes_validate.utils.schema_contents = original


@pytest.mark.usefixtures("cached_schemas")
@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_builtin_objects_validate_strictly(objects: list[dict[str, Any]], version: str) -> None:
    checked = 0
    for o in objects:
        if o["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(o, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            pytest.fail(f"{o['kind']}/{o['metadata']['name']} at {path}: {error.message} (Kubernetes {version})")
        checked += 1
    assert checked >= 25


def test_installed_validator_ships_the_versions_we_claim() -> None:
    shipped = kubernetes_validate.utils.all_versions()
    assert all(v in shipped for v in KUBE_VERSIONS)


def structural_to_jsonschema(node: Any) -> Any:
    """A CRD's structural schema as JSON Schema, closed like the API server's strict field validation."""
    if isinstance(node, list):
        return [structural_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: structural_to_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable"):
        out.pop("nullable")
        if "type" in out:
            out["type"] = [out["type"], "null"]
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_validator(path: Path, version: str = "v1") -> jsonschema.Draft7Validator:
    crd = next(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d)
    served = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    schema = structural_to_jsonschema(served["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


@pytest.mark.parametrize(("kind", "plural"), list(CRD_KINDS.items()))
def test_crd_typed_objects_validate_against_their_crd(everything: list[dict[str, Any]], kind: str, plural: str) -> None:
    validator = crd_validator(CRDS / f"monitoring.coreos.com_{plural}.yaml")
    rendered = [o for o in everything if o["kind"] == kind]
    assert rendered
    for o in rendered:
        errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(o)]
        assert errors == []


def test_crd_validation_refuses_unknown_fields() -> None:
    """The converted schema is closed: a misspelt field fails (the check above is not vacuous)."""
    validator = crd_validator(CRDS / "monitoring.coreos.com_prometheusrules.yaml")
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "x"},
        "spec": {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up == 0", "fore": "5m"}]}]},
    }
    assert any("fore" in e.message for e in validator.iter_errors(rule))
    rule["spec"]["groups"][0]["rules"][0] = {"alert": "A", "expr": "up == 0", "for": "five minutes"}
    assert any("does not match" in e.message for e in validator.iter_errors(rule))


def test_example_project_validates_against_the_generated_crd() -> None:
    if not PROJECT_CRD.exists():
        pytest.skip("helm/tre/crds/projects.tre.dev.yaml is not generated yet (tre/controller CRD generation)")
    crd = next(d for d in yaml.safe_load_all(PROJECT_CRD.read_text(encoding="utf-8")) if d)
    versions = [v["name"] for v in crd["spec"]["versions"] if v.get("served")]
    example = yaml.safe_load((REPO / "examples" / "diabetes-outcomes.project.yaml").read_text(encoding="utf-8"))
    version = example["apiVersion"].split("/")[1]
    assert version in versions
    validator = crd_validator(PROJECT_CRD, version)
    assert [e.message for e in validator.iter_errors(example)] == []
    broken = copy.deepcopy(example)
    broken["spec"]["workspace"]["cpuu"] = "2"
    assert list(validator.iter_errors(broken)), "the Project schema accepts unknown fields"


# ---------------------------------------------------------------------------------------------------------------
# Security properties


def test_every_pod_and_container_is_restricted(objects: list[dict[str, Any]]) -> None:
    specs = list(pod_specs(objects))
    assert len(specs) == 3  # controller, airlock, migration Job
    for name, spec in specs:
        pod = spec["securityContext"]
        assert {k: pod.get(k) for k in POD_SECURITY} == POD_SECURITY, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), name
        assert all("hostPath" not in v for v in spec.get("volumes", [])), name
        for container in containers(spec):
            assert container["securityContext"] == CONTAINER_SECURITY, f"{name}/{container['name']}"
            resources = container["resources"]
            assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}, name


def test_long_running_containers_have_health_probes(objects: list[dict[str, Any]]) -> None:
    for o in objects:
        if o["kind"] != "Deployment":
            continue
        for container in o["spec"]["template"]["spec"]["containers"]:
            for probe in ("livenessProbe", "readinessProbe"):
                assert container[probe]["httpGet"]["path"] == "/healthz", f"{o['metadata']['name']}: {probe}"


def test_only_the_controller_mounts_an_api_token(objects: list[dict[str, Any]]) -> None:
    for name, spec in pod_specs(objects):
        expected = name == "Deployment/tre-controller"
        assert spec.get("automountServiceAccountToken") is expected, name


def test_no_secret_is_inlined(objects: list[dict[str, Any]]) -> None:
    assert not [o for o in objects if o["kind"] == "Secret"]
    for name, spec in pod_specs(objects):
        for container in containers(spec):
            for variable in container.get("env", []):
                where = f"{name}/{container['name']} {variable['name']}"
                if "value" in variable:
                    assert variable["name"] in PLAIN_ENV, f"{where}: literal value for an unlisted variable"
                    assert not CREDENTIAL_ENV.search(variable["name"]), where
                    assert not CREDENTIAL_VALUE.search(str(variable["value"])), where
                elif variable["name"] in DOWNWARD_ENV:
                    assert variable["valueFrom"] == {"fieldRef": {"fieldPath": DOWNWARD_ENV[variable["name"]]}}, where
                else:
                    assert set(variable["valueFrom"]) == {"secretKeyRef"}, where
    for o in objects:
        if o["kind"] == "ConfigMap":
            for key, text in o["data"].items():
                assert not CREDENTIAL_VALUE.search(text), f"ConfigMap/{o['metadata']['name']} {key}"


def test_database_and_s3_credentials_come_from_the_named_secrets(everything: list[dict[str, Any]]) -> None:
    for name, spec in pod_specs(everything):
        env = {v["name"]: v for v in spec["containers"][0]["env"]}
        assert env["TRE_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "tre-database", "key": "url"}, name
        for variable, key in [
            ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
            ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
        ]:
            assert env[variable]["valueFrom"]["secretKeyRef"] == {"name": "tre-s3", "key": key}, name


def test_workload_identity_needs_no_s3_secret(chart: helm.Chart) -> None:
    values = merged(REQUIRED, {"objectStore": {"workloadIdentity": True, "credentials": {"existingSecret": ""}}})
    for _, spec in pod_specs(render(chart, values)):
        names = {v["name"] for v in spec["containers"][0]["env"]}
        assert not names & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def test_controller_uses_vault_kubernetes_auth(objects: list[dict[str, Any]]) -> None:
    controller = find(objects, "Deployment", "tre-controller")["spec"]["template"]
    annotations = controller["metadata"]["annotations"]
    assert annotations["vault.hashicorp.com/agent-inject"] == "true"
    assert annotations["vault.hashicorp.com/role"] == "tre-controller"
    assert annotations["vault.hashicorp.com/auth-path"] == "auth/kubernetes"
    env = {v["name"]: v.get("value") for v in controller["spec"]["containers"][0]["env"]}
    assert env["TRE_VAULT_TOKEN_FILE"] == "/vault/secrets/token"
    assert env["TRE_VAULT_ADDR"] == "https://vault.vault.svc:8200"


def _rules(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[tuple[str, str], set[str]]]:
    granted: dict[tuple[str, str], dict[tuple[str, str], set[str]]] = {}
    for o in objects:
        if o["kind"] not in {"ClusterRole", "Role"}:
            continue
        table = granted.setdefault((o["kind"], o["metadata"]["name"]), {})
        for rule in o["rules"]:
            assert "nonResourceURLs" not in rule
            assert "resourceNames" not in rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    table.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def test_rbac_is_exactly_the_least_privilege_table(objects: list[dict[str, Any]]) -> None:
    for o in objects:
        for rule in o.get("rules", []):
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], f"{o['kind']}/{o['metadata']['name']}: wildcard in {field}"
    assert _rules(objects) == ROLES


def test_no_role_can_read_secrets_or_escalate(objects: list[dict[str, Any]]) -> None:
    for role, table in _rules(objects).items():
        for (_group, resource), verbs in table.items():
            assert resource not in {"secrets", "roles", "rolebindings", "clusterroles", "clusterrolebindings"}, role
            assert not verbs & {"escalate", "bind", "impersonate", "deletecollection"}, role


def test_bindings_grant_roles_to_the_right_accounts(objects: list[dict[str, Any]]) -> None:
    controller = {"kind": "ServiceAccount", "name": "tre-controller", "namespace": "tre"}
    hub = {"kind": "ServiceAccount", "name": "hub", "namespace": "jupyterhub"}
    expected = {
        ("ClusterRoleBinding", "tre-controller"): ("tre-controller", controller, None),
        ("RoleBinding", "tre-controller-events"): ("tre-controller-events", controller, "tre"),
        ("RoleBinding", "tre-controller-hub-entries"): ("tre-controller-hub-entries", controller, "jupyterhub"),
        ("RoleBinding", "tre-hub-reader"): ("tre-hub-reader", hub, "jupyterhub"),
        ("ClusterRoleBinding", "tre-hub-spawner"): ("tre-hub-spawner", hub, None),
    }
    bindings = {
        (o["kind"], o["metadata"]["name"]): o for o in objects if o["kind"].endswith("Binding") and "subjects" in o
    }
    assert set(bindings) == set(expected)
    for key, (role, subject, namespace) in expected.items():
        binding = bindings[key]
        assert binding["roleRef"]["name"] == role
        assert binding["subjects"] == [subject]
        assert binding["metadata"].get("namespace") == namespace


# ---------------------------------------------------------------------------------------------------------------
# What the containers run and read


def cluster_config(objects: list[dict[str, Any]]) -> ClusterConfig:
    data = find(objects, "ConfigMap", "tre-controller")["data"]["cluster.yaml"]
    return ClusterConfig.model_validate(yaml.safe_load(data))


def test_cluster_config_is_a_valid_cluster_config(objects: list[dict[str, Any]]) -> None:
    config = cluster_config(objects)
    airlock = find(objects, "Deployment", "tre-airlock")["spec"]["template"]
    assert config.tre_namespace == NAMESPACE
    assert config.airlock_pod_labels.items() <= airlock["metadata"]["labels"].items()
    assert config.airlock_port == airlock["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert config.provisioner_image == airlock["spec"]["containers"][0]["image"]
    assert config.field_manager == "tre-controller"


def test_every_cluster_config_field_is_set_from_values(everything: list[dict[str, Any]]) -> None:
    data = yaml.safe_load(find(everything, "ConfigMap", "tre-controller")["data"]["cluster.yaml"])
    assert set(data) == {field.alias for field in ClusterConfig.model_fields.values()}
    config = cluster_config(everything)
    assert config.package_mirror_cidr == "10.20.0.0/24"
    assert config.storage_class == "encrypted-ssd"
    assert config.provisioner_image.endswith("@sha256:" + "a" * 64)
    assert config.provisioner_egress_cidrs == ("10.30.0.0/16",)
    assert config.provisioner_egress_namespaces == ("postgres",)
    assert config.run_as_user == 10001


def test_empty_optional_settings_mean_none(chart: helm.Chart) -> None:
    config = cluster_config(render(chart, REQUIRED))
    assert config.storage_class is None
    assert config.package_mirror_cidr is None
    assert config.provisioner_egress_cidrs == ()


def test_controller_restarts_when_its_config_changes(chart: helm.Chart) -> None:
    def checksum(values: dict[str, Any]) -> str:
        deployment = find(render(chart, values), "Deployment", "tre-controller")
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum(REQUIRED) != checksum(merged(REQUIRED, {"cluster": {"hubPort": 9999}}))


def _run_flags() -> set[str]:
    result = CliRunner().invoke(tre_cli, ["controller", "run", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return set(re.findall(r"--[a-z][a-z-]+", result.output))


def _controller_command(objects: list[dict[str, Any]]) -> list[str]:
    return list(find(objects, "Deployment", "tre-controller")["spec"]["template"]["spec"]["containers"][0]["command"])


def test_controller_command_uses_only_options_tre_controller_run_has(chart: helm.Chart) -> None:
    command = _controller_command(render(chart, REQUIRED))
    assert command[:3] == ["tre", "controller", "run"]
    flags = {argument.split("=")[0] for argument in command[3:]}
    assert flags <= _run_flags()
    assert "--values=/etc/tre/cluster.yaml" in command
    assert "--liveness=http://0.0.0.0:8080/healthz" in command


def test_controller_metrics_flag_exists(everything: list[dict[str, Any]]) -> None:
    assert "--metrics-port=9090" in _controller_command(everything)
    assert "--metrics-port" in _run_flags()


def test_migration_command_exists(objects: list[dict[str, Any]]) -> None:
    job = find(objects, "Job", "tre-migrate")["spec"]["template"]["spec"]["containers"][0]
    assert job["command"][0] == "tre"
    result = CliRunner().invoke(tre_cli, [*job["command"][1:], "--help"])
    assert result.exit_code == 0, result.output


def test_alerts_name_real_airlock_states(everything: list[dict[str, Any]]) -> None:
    rule = find(everything, "PrometheusRule", "tre")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {"TREAirlockRequestsWaiting", "TREControllerDown", "TREControllerReconcileErrors"}
    states = re.search(r'state=~"([^"]+)"', alerts["TREAirlockRequestsWaiting"]["expr"])
    assert states is not None
    assert set(states.group(1).split("|")) <= {s.value for s in State}
    assert "[72h]" in alerts["TREAirlockRequestsWaiting"]["expr"]


def test_airlock_runs_the_chart_factory(objects: list[dict[str, Any]]) -> None:
    spec = find(objects, "Deployment", "tre-airlock")["spec"]["template"]["spec"]
    command = spec["containers"][0]["command"]
    assert command[:4] == ["uvicorn", "--app-dir=/opt/tre/asgi", "--factory", "airlock_asgi:app"]
    shipped = find(objects, "ConfigMap", "tre-airlock-asgi")["data"]["airlock_asgi.py"]
    assert shipped == (CHART / "files" / "airlock_asgi.py").read_text(encoding="utf-8")


def _airlock_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub_api: str | None = None) -> Any:
    monkeypatch.setenv("TRE_ENVIRONMENT", "production")
    monkeypatch.setenv("TRE_DATABASE_URL", f"sqlite:///{tmp_path / 'tre.db'}")
    monkeypatch.setenv("TRE_OBJECT_STORE_URL", (tmp_path / "objects").as_uri())
    if hub_api is None:
        monkeypatch.delenv("TRE_HUB_API_URL", raising=False)
    else:
        monkeypatch.setenv("TRE_HUB_API_URL", hub_api)
    spec = importlib.util.spec_from_file_location("airlock_asgi", CHART / "files" / "airlock_asgi.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


def test_airlock_factory_serves_health_at_the_root_and_under_the_hub_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with TestClient(_airlock_factory(tmp_path, monkeypatch)()) as client:
        for path in ("/healthz", "/services/airlock/healthz"):
            response = client.get(path)
            assert (response.status_code, response.text) == (200, "ok"), path
        assert "tre_airlock_requests" in client.get("/metrics").text
        refused = client.get("/api/v1/airlock/requests", headers={"Authorization": "Bearer not-a-tre-token"})
        assert refused.status_code == 401


class _StubHub(http.server.BaseHTTPRequestHandler):
    """Answers GET /hub/api/user as JupyterHub does for a valid user token."""

    def do_GET(self) -> None:
        body = json.dumps({"kind": "user", "name": "hub-only-user"}).encode()
        self.send_response(200 if self.path == "/hub/api/user" else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_airlock_factory_asks_the_hub_about_hub_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _StubHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        hub_api = f"http://127.0.0.1:{server.server_port}/hub/api"
        with TestClient(_airlock_factory(tmp_path, monkeypatch, hub_api)()) as client:
            response = client.get("/api/v1/airlock/requests", headers={"Authorization": "token a-hub-token"})
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert response.status_code == 401
    assert "hub user hub-only-user is not a TRE user" in response.json()["detail"]


def test_airlock_accepts_hub_tokens_from_the_hub_in_its_namespace(objects: list[dict[str, Any]]) -> None:
    container = find(objects, "Deployment", "tre-airlock")["spec"]["template"]["spec"]["containers"][0]
    env = {v["name"]: v.get("value") for v in container["env"]}
    assert env["TRE_HUB_API_URL"] == "http://hub.jupyterhub.svc:8081/hub/api"


# ---------------------------------------------------------------------------------------------------------------
# Values: documented, and bad values refused with a message naming the key


def _schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))


def _walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for key, child in node.get("properties", {}).items():
        yield f"{path}.{key}", child
        yield from _walk(child, f"{path}.{key}")


OPEN_OBJECTS = {".global", ".controller.affinity", ".airlock.affinity"}  # passed through to Kubernetes as-is


def test_values_schema_documents_every_property_and_refuses_unknown_keys() -> None:
    schema = _schema()
    assert schema["additionalProperties"] is False
    for path, node in _walk(schema):
        assert node.get("description"), f"{path} has no description"
        if node.get("type") == "object" and path not in OPEN_OBJECTS:
            assert "additionalProperties" in node, f"{path} accepts any key"


def test_default_values_satisfy_the_schema_apart_from_the_required_secrets(chart: helm.Chart) -> None:
    chart.validate_schema(REQUIRED)
    chart.validate_schema(PROFILES["every option on"])


def test_every_value_in_values_yaml_is_commented() -> None:
    lines = (CHART / "values.yaml").read_text(encoding="utf-8").splitlines()
    uncommented = []
    for number, line in enumerate(lines):
        if not re.match(r"^\s*[A-Za-z][\w.-]*:", line):
            continue
        previous = lines[number - 1].strip() if number else ""
        indent = len(line) - len(line.lstrip())
        parent = next(
            (lines[i] for i in range(number - 1, -1, -1) if _indent(lines[i]) < indent and lines[i].strip()), ""
        )
        label_map = re.match(r"^\s*(\w+(PodLabels|Selector)|requests|limits):", parent)
        if not previous.startswith("#") and not label_map and not re.match(r"^\s*\w+:\s*$", line):
            uncommented.append(line.strip())
    assert uncommented == []


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


BAD_VALUES = [
    ({"airlock": {"replicaz": 2}}, "additional properties 'replicaz' not allowed"),
    ({"controller": {"retention": {"onBlock": "archive"}}}, "/controller/retention/onBlock"),
    ({"securityContext": {"runAsUser": 0}}, "/securityContext/runAsUser"),
    ({"objectStore": {"url": "https://bucket.example.org"}}, "/objectStore/url"),
    ({"admissionPolicies": {"validationActions": ["Block"]}}, "/admissionPolicies/validationActions"),
    ({"image": {"digest": "latest"}}, "/image/digest"),
    ({"cluster": {"hubNamespace": "Jupyter_Hub"}}, "/cluster/hubNamespace"),
    ({"airlock": {"port": 70000}}, "/airlock/port"),
    ({"database": {"password": "hunter2"}}, "additional properties 'password' not allowed"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_VALUES, ids=[m for _, m in BAD_VALUES])
def test_schema_refuses_bad_values_with_a_message_naming_the_key(
    chart: helm.Chart, bad: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(message)):
        chart.render(merged(REQUIRED, bad), name=RELEASE, namespace=NAMESPACE)


TEMPLATE_FAILURES = [
    ({}, "database.existingSecret: name the existing Secret"),
    ({"objectStore": {"credentials": {"existingSecret": ""}}}, "objectStore: set credentials.existingSecret"),
    ({"vault": {"address": ""}}, "vault.address: set the Vault URL"),
    ({"vault": {"auth": {"method": "tokenSecret"}}}, "vault.auth.tokenSecret.name"),
    ({"metrics": {"prometheusRule": {"enabled": True}}}, "metrics.prometheusRule.enabled needs"),
    ({"admissionPolicies": {"validationActions": ["Audit"]}}, "only reports violations"),
    ({"airlock": {"replicas": 1, "podDisruptionBudget": {"enabled": True}}}, "no node could ever be drained"),
]


@pytest.mark.parametrize(("values", "message"), TEMPLATE_FAILURES, ids=[m for _, m in TEMPLATE_FAILURES])
def test_dangerous_or_incomplete_values_fail_with_a_clear_message(
    chart: helm.Chart, values: dict[str, Any], message: str
) -> None:
    base = {} if not values else REQUIRED
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        chart.render(merged(base, values), name=RELEASE, namespace=NAMESPACE)


def test_audit_only_is_accepted_when_asked_for(chart: helm.Chart) -> None:
    values = merged(REQUIRED, {"admissionPolicies": {"validationActions": ["Audit", "Warn"], "allowAuditOnly": True}})
    bindings = [o for o in render(chart, values) if o["kind"] == "ValidatingAdmissionPolicyBinding"]
    assert bindings
    assert all(b["spec"]["validationActions"] == ["Audit", "Warn"] for b in bindings)


# ---------------------------------------------------------------------------------------------------------------
# Network policy for the TRE namespace


def test_airlock_is_reachable_only_from_workspaces_the_hub_and_monitoring(objects: list[dict[str, Any]]) -> None:
    policy = find(objects, "NetworkPolicy", "tre-airlock")["spec"]
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "airlock"
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]
    sources = rule["from"]
    assert sources[0] == {"namespaceSelector": {"matchExpressions": [{"key": "tre.dev/project", "operator": "Exists"}]}}
    assert sources[1] == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "jupyterhub"}}}
    assert sources[2] == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    assert all(set(s) == {"namespaceSelector"} for s in sources), "no source may be an ipBlock or the whole cluster"


def test_every_release_pod_is_under_default_deny_ingress(objects: list[dict[str, Any]]) -> None:
    deny = find(objects, "NetworkPolicy", "tre-default-deny")["spec"]
    selector = deny["podSelector"]["matchLabels"]
    assert "Ingress" in deny["policyTypes"]
    assert "ingress" not in deny
    for name, _ in pod_specs(objects):
        kind, object_name = name.split("/")
        labels = find(objects, kind, object_name)["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), name
