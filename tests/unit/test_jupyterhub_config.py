"""JupyterHub for the TRE: helm/jupyterhub-values.yaml (for the zero-to-jupyterhub chart) and the hub
configuration module it embeds (deploy/jupyterhub/tre_hub_config.py).

A member sees their own projects only, a non-member sees none and cannot start a server, several projects give a
choice; the controller's hub entries parse; and the pod KubeSpawner would start from a profile passes the TRE
admission policies and is labelled, placed and sized as the project says.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from tornado import web
from traitlets.config import Config

from tests.conftest import EXAMPLES
from tests.support.admission import Request, admit
from tre.controller import CURRENT_DATA_DIR, DATA_MOUNT_PATH, ClusterConfig, make_hub_entry, project_context
from tre.spec import Project, load

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "deploy" / "jupyterhub" / "tre_hub_config.py"
VALUES = REPO / "helm" / "jupyterhub-values.yaml"
CHART = REPO / "helm" / "tre"
REQUIRED = {
    "database": {"existingSecret": "tre-database"},
    "objectStore": {"url": "s3://tre-data/prod", "credentials": {"existingSecret": "tre-s3"}},
    "vault": {"address": "https://vault.vault.svc:8200"},
}


@pytest.fixture(scope="module")
def hub() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tre_hub_config", MODULE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["tre_hub_config"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text(encoding="utf-8"))


def entry(project: str, members: list[str], **profile: Any) -> dict[str, Any]:
    document = {
        "project": project,
        "namespace": f"tre-{project}",
        "serviceAccount": "tre-workspace",
        "members": members,
        "dataClaim": "tre-data",
        "cpu": "2",
        "memory": "8Gi",
        "storage": "20Gi",
        "gpu": 0,
        **profile,
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"tre-workspace-{project}",
            "namespace": "jupyterhub",
            "labels": {"tre.dev/project": project, "tre.dev/hub-entry": "true"},
        },
        "data": {"profile.json": json.dumps(document)},
    }


ENTRIES = [
    entry("diabetes-outcomes", ["alice", "bob"]),
    entry("asthma-admissions", ["bob", "carol"], cpu="500m", memory="2G", gpu=1),
]


# ---------------------------------------------------------------------------------------------------------------
# Who sees what


@pytest.mark.parametrize(
    ("user", "projects"),
    [
        ("alice", ["diabetes-outcomes"]),  # a member sees their own project only
        ("carol", ["asthma-admissions"]),
        ("bob", ["asthma-admissions", "diabetes-outcomes"]),  # several projects: a choice, in name order
        ("mallory", []),  # a non-member sees none
        ("ALICE", []),  # names are exact
    ],
)
def test_a_user_sees_exactly_their_projects(hub: ModuleType, user: str, projects: list[str]) -> None:
    profiles = hub.profiles_for(user, hub.workspaces(ENTRIES))
    assert [p["slug"] for p in profiles] == projects
    assert [p.get("default", False) for p in profiles] == [i == 0 for i in range(len(projects))]


def test_each_profile_starts_in_its_own_project(hub: ModuleType) -> None:
    profiles = {p["slug"]: p for p in hub.profiles_for("bob", hub.workspaces(ENTRIES))}
    diabetes = profiles["diabetes-outcomes"]["kubespawner_override"]
    asthma = profiles["asthma-admissions"]["kubespawner_override"]
    assert diabetes["namespace"] == "tre-diabetes-outcomes"
    assert asthma["namespace"] == "tre-asthma-admissions"
    assert diabetes["extra_labels"] == {"tre.dev/project": "diabetes-outcomes"}
    assert asthma["extra_resource_limits"] == {"nvidia.com/gpu": "1"}
    assert "extra_resource_limits" not in diabetes
    assert profiles["asthma-admissions"]["description"] == "500m CPU, 2G memory, 20Gi for outputs, 1 GPU"


def test_the_override_mounts_data_read_only_and_outputs_writable(hub: ModuleType) -> None:
    (workspace,) = hub.workspaces([ENTRIES[0]])
    override = hub.spawner_override(workspace)
    assert override["service_account"] == "tre-workspace"
    assert override["automount_service_account_token"] is False
    volumes = {v["name"]: v for v in override["volumes"]}
    mounts = {m["name"]: m for m in override["volume_mounts"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "tre-data", "readOnly": True}
    assert mounts["data"] == {"name": "data", "mountPath": "/data", "readOnly": True}  # whole volume: no subPath
    assert "readOnly" not in mounts["outputs"]
    assert override["environment"]["TRE_DATA_DIR"] == "/data/current"
    assert volumes["outputs"]["persistentVolumeClaim"]["claimName"] == override["pvc_name_template"]
    assert override["storage_capacity"] == "20Gi"
    assert (override["cpu_limit"], override["mem_limit"]) == (2.0, 8 * 2**30)


def test_workspaces_read_the_view_the_provisioning_job_swaps(hub: ModuleType) -> None:
    """The Job publishes each verified extract behind the data volume's ``current`` symlink (tre.data's exporter);
    workspaces mount the volume where the Job does and are pointed at that link."""
    assert hub.DATA_MOUNT == DATA_MOUNT_PATH
    assert hub.DATA_DIR == CURRENT_DATA_DIR  # tests/unit/test_controller_manifests.py ties it to the exporter


def test_the_start_hook_links_the_current_extract_into_home_and_never_fails(hub: ModuleType, tmp_path: Path) -> None:
    (workspace,) = hub.workspaces([ENTRIES[0]])
    command = hub.spawner_override(workspace)["lifecycle_hooks"]["postStart"]["exec"]["command"]
    data = tmp_path / "volume"
    (data / "extracts" / "x1").mkdir(parents=True)
    (data / "extracts" / "x1" / "episodes.parquet").write_text("rows")
    (data / "current").symlink_to("extracts/x1")
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "TRE_DATA_DIR": str(data / "current")}
    for _ in range(2):  # a restarted container runs it again
        assert subprocess.run(command, env=env, check=False).returncode == 0
        assert (home / "data" / "episodes.parquet").read_text() == "rows"
    missing_home = env | {"HOME": str(tmp_path / "no-such-home")}
    assert subprocess.run(command, env=missing_home, capture_output=True, check=False).returncode == 0


@pytest.mark.parametrize(("quantity", "cores"), [("2", 2.0), ("500m", 0.5), ("1.5", 1.5), ("100m", 0.1), ("12", 12.0)])
def test_cpu_quantities(hub: ModuleType, quantity: str, cores: float) -> None:
    assert hub.cpu_cores(quantity) == cores


@pytest.mark.parametrize(
    ("quantity", "size"),
    [("8Gi", 8 * 2**30), ("512Mi", 512 * 2**20), ("2G", 2 * 10**9), ("1.5Gi", 3 * 2**29), ("1000", 1000), ("4k", 4000)],
)
def test_memory_quantities(hub: ModuleType, quantity: str, size: int) -> None:
    assert hub.memory_bytes(quantity) == size


@pytest.mark.parametrize("bad", ["", "2 cores", "-1", "0.5m", "1e3"])
def test_bad_cpu_quantities_are_refused(hub: ModuleType, bad: str) -> None:
    with pytest.raises(ValueError, match="not a CPU quantity"):
        hub.cpu_cores(bad)


@pytest.mark.parametrize("bad", ["", "8GB", "8gi", "-1Gi", "Gi"])
def test_bad_memory_quantities_are_refused(hub: ModuleType, bad: str) -> None:
    with pytest.raises(ValueError, match="not a memory quantity"):
        hub.memory_bytes(bad)


# ---------------------------------------------------------------------------------------------------------------
# Hub entries: the controller's format, and what happens to broken ones


def test_the_controllers_hub_entry_parses(hub: ModuleType) -> None:
    project = load(Project, EXAMPLES / "diabetes-outcomes.project.yaml")
    context = project_context(project, ClusterConfig(), members=["alice", "bob"])
    (workspace,) = hub.workspaces([make_hub_entry(context)])
    assert workspace.project == "diabetes-outcomes"
    assert workspace.namespace == context.namespace
    assert workspace.members == {"alice", "bob"}
    assert (workspace.cpu, workspace.memory, workspace.storage, workspace.gpu) == ("2", "8Gi", "20Gi", 0)
    assert [p["slug"] for p in hub.profiles_for("alice", [workspace])] == ["diabetes-outcomes"]


def _broken(change: str) -> dict[str, Any]:
    configmap = copy.deepcopy(ENTRIES[0])
    document = json.loads(configmap["data"]["profile.json"])
    if change == "no profile.json":
        configmap["data"] = {}
    elif change == "not JSON":
        configmap["data"]["profile.json"] = "{"
    elif change == "a JSON list":
        configmap["data"]["profile.json"] = "[]"
    elif change == "label names another project":
        configmap["metadata"]["labels"]["tre.dev/project"] = "other"
    else:
        key, value = change.split("=", 1)
        document[key] = json.loads(value)
        configmap["data"]["profile.json"] = json.dumps(document)
    return configmap


BROKEN = [
    "no profile.json",
    "not JSON",
    "a JSON list",
    "label names another project",
    'members="alice"',
    "members=[1]",
    'namespace="Tre_Diabetes"',
    'namespace="tre-x/../kube-system"',
    'serviceAccount=""',
    'cpu="lots"',
    'memory="8GB"',
    "gpu=true",
    "gpu=-1",
    "project=null",
]


@pytest.mark.parametrize("change", BROKEN)
def test_a_broken_entry_offers_nothing_and_says_why(hub: ModuleType, change: str) -> None:
    with pytest.raises(hub.HubEntryError, match="hub entry tre-workspace-diabetes-outcomes"):
        hub.parse_entry(_broken(change))
    assert hub.workspaces([_broken(change), ENTRIES[1]]) == hub.workspaces([ENTRIES[1]])


def test_two_entries_for_one_project_offer_neither(hub: ModuleType) -> None:
    impostor = entry("diabetes-outcomes", ["mallory"])
    impostor["metadata"]["name"] = "tre-workspace-diabetes-outcomes-2"
    found = hub.workspaces([ENTRIES[0], impostor, ENTRIES[1]])
    assert [w.project for w in found] == ["asthma-admissions"]


# ---------------------------------------------------------------------------------------------------------------
# Wiring into the hub: configure(c), the profile list and the pre-spawn hook


class FakeSpawner:
    def __init__(self, user: str, options: dict[str, Any] | None = None) -> None:
        self.user = type("User", (), {"name": user})()
        self.user_options = options or {}


def _reader(hub: ModuleType, configmaps: list[dict[str, Any]]) -> Any:
    async def read() -> list[Any]:
        return hub.workspaces(configmaps)

    return read


def test_the_pre_spawn_hook_refuses_anyone_outside_their_projects(hub: ModuleType) -> None:
    hook = hub.pre_spawn_hook(_reader(hub, ENTRIES))
    asyncio.run(hook(FakeSpawner("alice", {"profile": "diabetes-outcomes"})))
    asyncio.run(hook(FakeSpawner("alice")))  # the single profile is the default
    with pytest.raises(web.HTTPError, match="not a member of any project") as refused:
        asyncio.run(hook(FakeSpawner("mallory")))
    assert refused.value.status_code == 403
    with pytest.raises(web.HTTPError, match="asthma-admissions"):
        asyncio.run(hook(FakeSpawner("alice", {"profile": "asthma-admissions"})))


def test_the_profile_list_is_read_again_for_every_start(hub: ModuleType) -> None:
    configmaps = list(ENTRIES)
    profiles = hub.profile_list(_reader(hub, configmaps))
    assert [p["slug"] for p in asyncio.run(profiles(FakeSpawner("alice")))] == ["diabetes-outcomes"]
    configmaps[0] = entry("diabetes-outcomes", ["bob"])  # alice removed from the project
    assert asyncio.run(profiles(FakeSpawner("alice"))) == []


def test_configure_sets_the_spawner_and_the_airlock_token(hub: ModuleType) -> None:
    c = Config()
    c.JupyterHub.services = [{"name": "airlock", "url": "http://tre-airlock.tre.svc:80", "api_token": "generated"}]
    hub.configure(c, {"POD_NAMESPACE": "jupyterhub", "TRE_AIRLOCK_API_TOKEN": "from-the-secret"})
    assert callable(c.KubeSpawner.profile_list)
    assert callable(c.KubeSpawner.pre_spawn_hook)
    assert c.KubeSpawner.component_label == "workspace"
    assert c.KubeSpawner.container_security_context["capabilities"] == {"drop": ["ALL"]}
    assert c.JupyterHub.services == [
        {"name": "airlock", "url": "http://tre-airlock.tre.svc:80", "api_token": "from-the-secret"}
    ]


def test_configure_refuses_a_token_for_a_service_that_is_not_defined(hub: ModuleType) -> None:
    c = Config()
    c.JupyterHub.services = []
    with pytest.raises(ValueError, match=r"hub\.services"):
        hub.configure(c, {"TRE_AIRLOCK_API_TOKEN": "t"})


# ---------------------------------------------------------------------------------------------------------------
# The pod KubeSpawner builds from a profile


@pytest.fixture
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """KubeSpawner loads a client configuration when constructed; this one points nowhere and is never used."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "none", "user": {"token": "unused"}}],
                "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
                "current-context": "none",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    # kubernetes_asyncio reads KUBECONFIG once, at import, and kubespawner caches the loaded configuration: point
    # both at this file, whatever another test set when they were first used in this process
    import kubernetes_asyncio.config.kube_config as kube_config
    from kubespawner import clients

    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    clients.load_config.cache_clear()


def workspace_pod(hub: ModuleType, values: dict[str, Any], user: str, project: str) -> tuple[dict[str, Any], Any]:
    from kubernetes_asyncio.client import ApiClient
    from kubespawner import KubeSpawner

    c = Config()
    c.JupyterHub.services = []
    singleuser = values["singleuser"]
    c.KubeSpawner.uid = singleuser["uid"]
    c.KubeSpawner.fs_gid = singleuser["fsGid"]
    c.KubeSpawner.extra_labels = {"hub.jupyter.org/network-access-hub": "true"}  # z2jh's default extraLabels
    hub.configure(c, {"POD_NAMESPACE": "jupyterhub"}, read=_reader(hub, ENTRIES))

    async def build() -> tuple[dict[str, Any], Any]:
        spawner = KubeSpawner(config=c, _mock=True)
        spawner.user.name = user
        spawner.user_options = {"profile": project}
        try:
            await spawner.load_user_options()
            spawner.pod_name = spawner._expand_user_properties(spawner.pod_name_template)
            spawner.pvc_name = spawner._expand_user_properties(spawner.pvc_name_template)
            async with ApiClient() as client:
                pod = client.sanitize_for_serialization(await spawner.get_pod_manifest())
                pvc = client.sanitize_for_serialization(spawner.get_pvc_manifest())
            pod["metadata"]["namespace"] = spawner.namespace
            return pod, pvc
        finally:
            await spawner.api.api_client.close()

    return asyncio.run(build())


@pytest.mark.usefixtures("kubeconfig")
def test_the_workspace_pod_passes_the_admission_policies(hub: ModuleType, values: dict[str, Any]) -> None:
    pod, pvc = workspace_pod(hub, values, "bob", "asthma-admissions")
    namespace = {
        "metadata": {
            "name": "tre-asthma-admissions",
            "labels": {"tre.dev/project": "asthma-admissions", "kubernetes.io/metadata.name": "tre-asthma-admissions"},
        }
    }
    hub_user = "system:serviceaccount:jupyterhub:hub"
    for policy in ("tre-workspace-pod-security", "tre-workspace-pod-project-label", "tre-hub-scope"):
        assert admit(policy, Request("CREATE", "pods", hub_user, object=pod, namespace=namespace)) == [], policy
    assert (
        admit("tre-hub-scope", Request("CREATE", "persistentvolumeclaims", hub_user, object=pvc, namespace=namespace))
        == []
    )
    assert pod["metadata"]["namespace"] == "tre-asthma-admissions"
    assert pod["metadata"]["labels"]["tre.dev/project"] == "asthma-admissions"
    assert pod["metadata"]["labels"]["component"] == "workspace"
    assert pod["spec"]["serviceAccountName"] == "tre-workspace"
    assert pod["spec"]["automountServiceAccountToken"] is False
    (container,) = pod["spec"]["containers"]
    assert container["resources"]["limits"] == {"cpu": 0.5, "memory": 2 * 10**9, "nvidia.com/gpu": "1"}
    assert {"mountPath": "/data", "name": "data", "readOnly": True} in container["volumeMounts"]
    assert {"name": "TRE_DATA_DIR", "value": "/data/current"} in container["env"]
    assert container["lifecycle"]["postStart"]["exec"]["command"][:2] == ["sh", "-c"]
    assert pvc["metadata"]["name"] == "outputs-bob"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "20Gi"
    for version in ("1.30.0", "1.34.0"):
        kubernetes_validate.validate(pod | {"apiVersion": "v1", "kind": "Pod"}, version, strict=True)
        kubernetes_validate.validate(pvc | {"apiVersion": "v1", "kind": "PersistentVolumeClaim"}, version, strict=True)


# ---------------------------------------------------------------------------------------------------------------
# The values file for zero-to-jupyterhub


def test_values_embed_this_module_verbatim(values: dict[str, Any]) -> None:
    embedded = values["hub"]["extraFiles"]["tre-hub-config"]
    assert embedded["stringData"] == MODULE.read_text(encoding="utf-8"), (
        "helm/jupyterhub-values.yaml must embed deploy/jupyterhub/tre_hub_config.py verbatim "
        "(hub.extraFiles.tre-hub-config.stringData, indented 8 spaces)"
    )
    compile(embedded["stringData"], "tre_hub_config.py", "exec")


def test_extra_config_compiles_and_configures_the_hub(
    hub: ModuleType, values: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    (source,) = values["hub"]["extraConfig"].values()
    code = compile(source, "hub.extraConfig.tre", "exec")
    mount = Path(values["hub"]["extraFiles"]["tre-hub-config"]["mountPath"])
    assert f'sys.path.insert(0, "{mount.parent}")' in source
    assert mount.name == "tre_hub_config.py"
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("TRE_AIRLOCK_API_TOKEN", raising=False)
    c = Config()
    exec(code, {"c": c})  # noqa: S102 - the hub executes exactly this
    assert callable(c.KubeSpawner.profile_list)
    assert c.KubeSpawner.component_label == "workspace"


def test_workspaces_get_no_privileged_helpers_and_no_egress(values: dict[str, Any]) -> None:
    singleuser = values["singleuser"]
    assert singleuser["cloudMetadata"]["blockWithIptables"] is False  # would add a privileged init container
    assert singleuser["uid"] != 0
    assert singleuser["allowPrivilegeEscalation"] is False
    assert singleuser["storage"]["type"] == "none"
    policy = singleuser["networkPolicy"]
    assert policy["enabled"] is True
    assert policy["ingress"] == []
    rules = policy["egressAllowRules"]
    assert {k for k, v in rules.items() if v} == {"dnsPortsKubeSystemNamespace"}
    (airlock,) = policy["egress"]
    assert airlock["ports"] == [{"protocol": "TCP", "port": 8000}]


@pytest.fixture(scope="module")
def tre_chart_objects() -> list[dict[str, Any]]:
    helm.disable_logging()
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(REQUIRED, name="tre", namespace="tre")
    return [d for p, t in rendered.items() if p.endswith(".yaml") for d in yaml.safe_load_all(t) if d]


def _find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def test_values_point_at_the_tre_charts_airlock(
    values: dict[str, Any], tre_chart_objects: list[dict[str, Any]]
) -> None:
    service = _find(tre_chart_objects, "Service", "tre-airlock")
    deployment = _find(tre_chart_objects, "Deployment", "tre-airlock")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    port = deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
    url = f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc:{service['spec']['ports'][0]['port']}"
    assert values["hub"]["services"]["airlock"]["url"] == url
    assert values["singleuser"]["extraEnv"]["TRE_AIRLOCK_URL"].startswith(url)
    peers = [values["singleuser"]["networkPolicy"]["egress"][0], values["proxy"]["chp"]["networkPolicy"]["egress"][1]]
    for peer in peers:
        (target,) = peer["to"]
        assert target["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "tre"}
        assert target["podSelector"]["matchLabels"].items() <= pod_labels.items()
        assert peer["ports"] == [{"protocol": "TCP", "port": port}]


def test_hub_reads_entries_with_the_role_the_tre_chart_grants(tre_chart_objects: list[dict[str, Any]]) -> None:
    role = _find(tre_chart_objects, "Role", "tre-hub-reader")
    binding = _find(tre_chart_objects, "RoleBinding", "tre-hub-reader")
    assert role["metadata"]["namespace"] == "jupyterhub"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "hub", "namespace": "jupyterhub"}]


def test_hub_secrets_are_referenced_never_inlined(values: dict[str, Any]) -> None:
    for name, variable in values["hub"]["extraEnv"].items():
        assert set(variable) == {"valueFrom"}, name
        assert set(variable["valueFrom"]) == {"secretKeyRef"}, name
    text = json.dumps(values["hub"]["config"]).lower()
    for secret in ("client_secret", "password", "api_token", "cookie_secret"):
        assert secret not in text
    assert "api_token" not in values["hub"]["services"]["airlock"]
    assert "apiToken" not in values["hub"]["services"]["airlock"]
