"""A project's Kubernetes objects: valid on Kubernetes 1.30-1.34, isolated by NetworkPolicy, stable, and reviewable.

The isolation tests read the NetworkPolicy objects the way the network plugin does (which policies select a pod,
which peers and ports their rules allow) and compare what that allows with what the TRE means to allow.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tre.controller
from tests.conftest import EXAMPLES
from tests.support.cli import Tre, assert_refused
from tests.support.controller import KUBERNETES_VERSIONS, kubernetes_errors, valid_project_documents, validate_strictly
from tre.controller import (
    COMPONENT_LABEL,
    CURRENT_DATA_DIR,
    CURRENT_DATA_LINK,
    DATA_CLAIM,
    DATA_MOUNT_PATH,
    HUB_ENTRY_KEY,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    PROJECT_LABEL,
    PROVISIONER,
    WORKSPACE_SERVICE_ACCOUNT,
    ClusterConfig,
    data_request_hash,
    make_hub_entry,
    project_context,
    project_objects,
)
from tre.controller._manifests import NAMESPACE_NAME_LABEL, scale_quantity
from tre.errors import InputError
from tre.spec import Approval, ApprovedDataset, Project, load

EXAMPLE_FILE = EXAMPLES / "diabetes-outcomes.project.yaml"
EXAMPLE = load(Project, EXAMPLE_FILE)
MEMBERS = ("bob", "alice")
METADATA_ADDRESS = ipaddress.ip_address("169.254.169.254")
WORKSPACE_POD = {"app": "jupyterhub", "component": "singleuser-server", PROJECT_LABEL: EXAMPLE.name}
PROVISIONER_POD = {COMPONENT_LABEL: PROVISIONER, PROJECT_LABEL: EXAMPLE.name, "job-name": "tre-provision-x"}
WITH_MIRROR = ClusterConfig(package_mirror_cidr="128.0.0.0/1")  # a range that holds the metadata address
WITH_PROVISIONER_EGRESS = ClusterConfig(
    provisioner_egress_namespaces=("vault", "postgres"), provisioner_egress_cidrs=("10.40.0.0/16", "169.254.0.0/16")
)


def objects(
    config: ClusterConfig | None = None, *, project: Project = EXAMPLE, members: Any = MEMBERS
) -> list[dict[str, Any]]:
    return project_objects(project, config or ClusterConfig(), members=members)


def of_kind(items: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in items if o["kind"] == kind]


def one(items: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = of_kind(items, kind)
    return found


# ---- schema validity ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    "config", [ClusterConfig(), WITH_MIRROR, WITH_PROVISIONER_EGRESS], ids=["default", "mirror", "provisioner"]
)
def test_example_objects_are_valid_kubernetes_objects(version: str, config: ClusterConfig) -> None:
    for obj in objects(config):
        validate_strictly(obj, version)


_configs = st.builds(
    ClusterConfig,
    package_mirror_cidr=st.sampled_from([None, "10.1.0.0/16", "128.0.0.0/1", "fd00:1::/64"]),
    storage_class=st.sampled_from([None, "fast-rwx"]),
    namespace_prefix=st.sampled_from(["tre-", "project-", ""]),
    provisioner_egress_cidrs=st.sampled_from([(), ("10.40.0.0/16",)]),
    provisioner_egress_namespaces=st.sampled_from([(), ("vault",)]),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    valid_project_documents(), _configs, st.lists(st.from_regex(r"[a-z][a-z0-9._-]{0,12}", fullmatch=True), max_size=4)
)
def test_objects_for_any_valid_project_are_valid_on_every_version(
    document: dict[str, Any], config: ClusterConfig, members: list[str]
) -> None:
    project = Project.model_validate(document)
    try:
        built = project_objects(project, config, members=members)
    except InputError:  # the generated name collided with a shared namespace: refused, as it must be
        assert config.namespace_for(project.name) in config.shared_namespaces
        return
    workspace_pod = {**WORKSPACE_POD, PROJECT_LABEL: project.name}
    assert egress_violations(built, config, workspace_pod, expected_workspace_egress(config)) == []
    for obj in built:
        assert kubernetes_errors(obj) == []


# ---- network isolation, read from the policy objects ------------------------------------------------------------

ANY = "<anything>"


@dataclass(frozen=True)
class Peer:
    """One allowed destination (or source): pods by namespace and labels, or an address range; with its ports."""

    namespace: str = ""
    pod_labels: frozenset[tuple[str, str]] = frozenset()
    cidr: str = ""
    excepted: frozenset[str] = frozenset()
    ports: frozenset[tuple[str, int]] | None = None  # None: every port


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"this analysis reads matchLabels only, not {selector}"
    return selector.get("matchLabels", {}).items() <= labels.items()


def _policies_for(items: list[dict[str, Any]], namespace: str, pod: dict[str, str]) -> list[dict[str, Any]]:
    return [
        p
        for p in of_kind(items, "NetworkPolicy")
        if p["metadata"]["namespace"] == namespace and _selects(p["spec"]["podSelector"], pod)
    ]


def _peer(peer: dict[str, Any], ports: frozenset[tuple[str, int]] | None) -> Peer:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        return Peer(cidr=block["cidr"], excepted=frozenset(block.get("except", [])), ports=ports)
    if "namespaceSelector" not in peer:
        namespace = "<the project namespace>"
    else:
        match = peer["namespaceSelector"].get("matchLabels", {})
        assert set(peer["namespaceSelector"]) <= {"matchLabels"}
        namespace = match[NAMESPACE_NAME_LABEL] if set(match) == {NAMESPACE_NAME_LABEL} else "<any namespace>"
    pods = peer.get("podSelector", {})
    assert set(pods) <= {"matchLabels"}
    return Peer(namespace=namespace, pod_labels=frozenset(pods.get("matchLabels", {}).items()), ports=ports)


def allowed(policies: list[dict[str, Any]], direction: str) -> set[Peer] | None:
    """What the policies allow in ``direction`` ("Ingress" or "Egress"); None if they do not isolate the pod."""
    isolating = [p for p in policies if direction in p["spec"]["policyTypes"]]
    if not isolating:
        return None
    peers_key = "to" if direction == "Egress" else "from"
    result: set[Peer] = set()
    for policy in isolating:
        for rule in policy["spec"].get(direction.lower(), []):
            ports = frozenset((p.get("protocol", "TCP"), p["port"]) for p in rule.get("ports", [])) or None
            peers = rule.get(peers_key) or [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}]
            result |= {_peer(peer, ports) for peer in peers}
    return result


def _reaches(peer: Peer, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if not peer.cidr:
        return False
    return address in ipaddress.ip_network(peer.cidr) and not any(
        address in ipaddress.ip_network(e) for e in peer.excepted if ipaddress.ip_network(e).version == address.version
    )


def _pods(namespace: str, labels: dict[str, str], *ports: tuple[str, int]) -> Peer:
    return Peer(namespace=namespace, pod_labels=frozenset(labels.items()), ports=frozenset(ports))


def expected_workspace_egress(config: ClusterConfig) -> set[Peer]:
    """What a workspace may reach, by intent: the hub's API, the airlock, cluster DNS, and the mirror if any."""
    expected = {
        _pods(config.hub_namespace, config.hub_pod_labels, ("TCP", config.hub_port)),
        _pods(config.tre_namespace, config.airlock_pod_labels, ("TCP", config.airlock_port)),
        _pods(config.dns_namespace, config.dns_pod_labels, ("UDP", 53), ("TCP", 53)),
    }
    if config.package_mirror_cidr:
        mirror = ipaddress.ip_network(config.package_mirror_cidr)
        metadata = ipaddress.ip_network(config.metadata_cidr)
        excepted = (
            frozenset({config.metadata_cidr})
            if mirror.version == metadata.version and mirror.overlaps(metadata)
            else frozenset()
        )
        expected.add(
            Peer(
                cidr=config.package_mirror_cidr,
                excepted=excepted,
                ports=frozenset({("TCP", config.package_mirror_port)}),
            )
        )
    return expected


def egress_violations(
    items: list[dict[str, Any]], config: ClusterConfig, pod: dict[str, str], expected: set[Peer]
) -> list[str]:
    """Every way the policies let ``pod`` send traffic other than to ``expected``."""
    namespace = config.namespace_for(pod[PROJECT_LABEL])
    egress = allowed(_policies_for(items, namespace, pod), "Egress")
    if egress is None:
        return ["egress is not denied by default"]
    problems = [f"allowed but not intended: {p}" for p in egress - expected]
    problems += [f"intended but not allowed: {p}" for p in expected - egress]
    problems += [f"reaches the cloud metadata address: {p}" for p in egress if _reaches(p, METADATA_ADDRESS)]
    problems += [f"selects a project namespace: {p}" for p in egress if _is_project_namespace(p.namespace, config)]
    return problems


def _is_project_namespace(namespace: str, config: ClusterConfig) -> bool:
    """Any namespace a project could own: anything but a named shared one (or an address range)."""
    return namespace != "" and namespace not in config.shared_namespaces


def test_workspace_egress_is_denied_except_to_hub_airlock_and_dns() -> None:
    config = ClusterConfig()
    assert egress_violations(objects(config), config, WORKSPACE_POD, expected_workspace_egress(config)) == []
    destinations = allowed(_policies_for(objects(config), config.namespace_for(EXAMPLE.name), WORKSPACE_POD), "Egress")
    assert destinations is not None
    assert {p.namespace for p in destinations} == {"jupyterhub", "tre", "kube-system"}
    assert not any(p.cidr for p in destinations)


def test_a_package_mirror_is_allowed_without_the_metadata_address() -> None:
    built = objects(WITH_MIRROR)
    assert egress_violations(built, WITH_MIRROR, WORKSPACE_POD, expected_workspace_egress(WITH_MIRROR)) == []
    (mirror,) = [
        p for p in of_kind(built, "NetworkPolicy") if p["metadata"]["name"] == "tre-allow-egress-package-mirror"
    ]
    assert mirror["spec"]["egress"][0]["to"] == [{"ipBlock": {"cidr": "128.0.0.0/1", "except": ["169.254.169.254/32"]}}]


def test_the_provisioning_job_alone_reaches_its_configured_destinations() -> None:
    config = WITH_PROVISIONER_EGRESS
    built = objects(config)
    assert egress_violations(built, config, WORKSPACE_POD, expected_workspace_egress(config)) == []
    extra = {
        Peer(namespace="postgres"),
        Peer(namespace="vault"),
        Peer(cidr="10.40.0.0/16"),
        Peer(cidr="169.254.0.0/16", excepted=frozenset({"169.254.169.254/32"})),
    }
    assert egress_violations(built, config, PROVISIONER_POD, expected_workspace_egress(config) | extra) == []


def test_ingress_comes_only_from_the_hub_and_its_proxy_on_the_notebook_port() -> None:
    config = ClusterConfig()
    for pod in (WORKSPACE_POD, PROVISIONER_POD):
        ingress = allowed(_policies_for(objects(config), config.namespace_for(EXAMPLE.name), pod), "Ingress")
        assert ingress == {
            _pods("jupyterhub", config.proxy_pod_labels, ("TCP", 8888)),
            _pods("jupyterhub", config.hub_pod_labels, ("TCP", 8888)),
        }


def _with_policy(items: list[dict[str, Any]], spec: dict[str, Any]) -> list[dict[str, Any]]:
    extra = {"kind": "NetworkPolicy", "metadata": {"name": "extra", "namespace": "tre-diabetes-outcomes"}, "spec": spec}
    return [*items, extra]


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (
            lambda items: _with_policy(items, {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}),
            "not intended",
        ),
        (
            lambda items: _with_policy(
                items,
                {
                    "podSelector": {},
                    "policyTypes": ["Egress"],
                    "egress": [{"to": [{"ipBlock": {"cidr": "169.254.0.0/16"}}]}],
                },
            ),
            "metadata",
        ),
        (
            lambda items: _with_policy(
                items, {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": {}}]}]}
            ),
            "project namespace",
        ),
        (
            lambda items: [
                {**o, "spec": {**o["spec"], "policyTypes": ["Ingress"]}} if o["kind"] == "NetworkPolicy" else o
                for o in items
            ],
            "not denied by default",
        ),
        (
            lambda items: [o for o in items if o["metadata"]["name"] != "tre-allow-egress-dns"],
            "intended but not allowed",
        ),
    ],
)
def test_the_isolation_check_notices_a_leak(mutate: Any, problem: str) -> None:
    config = ClusterConfig()
    problems = egress_violations(mutate(objects(config)), config, WORKSPACE_POD, expected_workspace_egress(config))
    assert any(problem in p for p in problems), problems


# ---- the other objects ------------------------------------------------------------------------------------------


def test_objects_come_in_apply_order_with_the_project_labels() -> None:
    built = objects()
    kinds = [o["kind"] for o in built]
    assert kinds[0] == "Namespace"
    assert kinds.index("Job") > max(i for i, k in enumerate(kinds) if k == "NetworkPolicy")
    assert kinds[-1] == "ConfigMap"
    for obj in built:
        labels = obj["metadata"]["labels"]
        assert labels[MANAGED_BY_LABEL] == MANAGED_BY
        assert labels[PROJECT_LABEL] == "diabetes-outcomes"
        if obj["kind"] not in ("Namespace", "ConfigMap"):
            assert obj["metadata"]["namespace"] == "tre-diabetes-outcomes"


def test_project_objects_is_stable() -> None:
    first = objects()
    assert first == objects(members=reversed(MEMBERS))
    assert json.dumps(first) == json.dumps(objects(members=["alice", "bob", "alice"]))


def test_namespace_enforces_the_restricted_pod_security_profile() -> None:
    namespace = one(objects(), "Namespace")
    assert namespace["metadata"]["name"] == "tre-diabetes-outcomes"
    for mode in ("enforce", "audit", "warn"):
        assert namespace["metadata"]["labels"][f"pod-security.kubernetes.io/{mode}"] == "restricted"


def test_quota_gives_each_member_a_workspace_and_the_job_a_seat() -> None:
    hard = one(objects(), "ResourceQuota")["spec"]["hard"]
    assert (hard["requests.cpu"], hard["limits.memory"], hard["requests.storage"]) == ("6", "24Gi", "60Gi")
    assert (hard["pods"], hard["persistentvolumeclaims"], hard["requests.nvidia.com/gpu"]) == ("3", "3", "0")
    assert hard["services.nodeports"] == hard["services.loadbalancers"] == "0"


def test_gpus_go_to_members_workspaces() -> None:
    project = EXAMPLE.model_copy(
        update={
            "spec": EXAMPLE.spec.model_copy(update={"workspace": EXAMPLE.spec.workspace.model_copy(update={"gpu": 2})})
        }
    )
    assert one(objects(project=project), "ResourceQuota")["spec"]["hard"]["requests.nvidia.com/gpu"] == "4"


def test_limit_range_sizes_every_container_like_the_workspace() -> None:
    container, claim = one(objects(), "LimitRange")["spec"]["limits"]
    assert container["default"] == container["defaultRequest"] == container["max"] == {"cpu": "2", "memory": "8Gi"}
    assert claim == {"type": "PersistentVolumeClaim", "max": {"storage": "20Gi"}}


@pytest.mark.parametrize(
    ("quantity", "factor", "scaled"),
    [("2", 3, "6"), ("500m", 3, "1500m"), ("1.5", 2, "3"), ("0.5Gi", 3, "1.5Gi"), ("8Gi", 1, "8Gi"), ("0", 4, "0")],
)
def test_scale_quantity(quantity: str, factor: int, scaled: str) -> None:
    assert scale_quantity(quantity, factor) == scaled


def test_service_account_mounts_no_token() -> None:
    account = one(objects(), "ServiceAccount")
    assert account["metadata"]["name"] == WORKSPACE_SERVICE_ACCOUNT
    assert account["automountServiceAccountToken"] is False


def test_data_volume_uses_the_storage_class_when_set() -> None:
    assert "storageClassName" not in one(objects(), "PersistentVolumeClaim")["spec"]
    claim = one(objects(ClusterConfig(storage_class="fast-rwx")), "PersistentVolumeClaim")
    assert claim["spec"]["storageClassName"] == "fast-rwx"
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert claim["metadata"]["name"] == DATA_CLAIM


def _restricted_violations(pod: dict[str, Any]) -> Iterator[str]:
    """The Pod Security 'restricted' profile, checked on a pod spec."""
    security = pod.get("securityContext", {})
    if security.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
        yield "seccompProfile"
    allowed_volumes = {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
    yield from (f"volume {v['name']}" for v in pod.get("volumes", []) if not set(v) - {"name"} <= allowed_volumes)
    for container in pod["containers"]:
        context = container.get("securityContext", {})
        if context.get("allowPrivilegeEscalation") is not False:
            yield "allowPrivilegeEscalation"
        if context.get("capabilities", {}).get("drop") != ["ALL"]:
            yield "capabilities"
        if not (context.get("runAsNonRoot") or security.get("runAsNonRoot")):
            yield "runAsNonRoot"
    if any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")):
        yield "host namespaces"


def test_provision_job_runs_tre_provision_under_the_restricted_profile() -> None:
    job = one(objects(ClusterConfig(provisioner_image="registry.example/tre:1.2")), "Job")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert [*container["command"], *container["args"]] == ["tre", "provision", "diabetes-outcomes", "--to", "/data"]
    assert container["image"] == "registry.example/tre:1.2"
    assert list(_restricted_violations(pod)) == []
    assert pod["automountServiceAccountToken"] is False
    assert {"name": "data", "persistentVolumeClaim": {"claimName": DATA_CLAIM}} in pod["volumes"]
    # the data volume is mounted writable exactly where --to points, so the extract lands on the volume
    assert {"name": "data", "mountPath": DATA_MOUNT_PATH} in container["volumeMounts"]
    assert container["args"][container["args"].index("--to") + 1] == DATA_MOUNT_PATH
    assert job["spec"]["backoffLimit"] >= 1
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    assert job["spec"]["template"]["metadata"]["labels"][COMPONENT_LABEL] == PROVISIONER


def test_workspaces_read_the_extract_the_job_publishes() -> None:
    """The Job publishes DATA_MOUNT_PATH/current through tre.data's exporter; the name and path must agree."""
    from tre.data import _export

    assert CURRENT_DATA_LINK == _export.CURRENT
    assert f"{DATA_MOUNT_PATH}/{_export.CURRENT}" == CURRENT_DATA_DIR


def test_the_jobs_command_is_one_the_tre_cli_accepts() -> None:
    import typer.main
    from typer.core import TyperGroup

    from tre.cli import app

    (container,) = one(objects(), "Job")["spec"]["template"]["spec"]["containers"]
    command = typer.main.get_command(app)
    with command.make_context("tre", list(container["args"])) as context:
        assert isinstance(command, TyperGroup)
        name, subcommand, rest = command.resolve_command(context, list(container["args"]))
        assert name == "provision"
        assert subcommand is not None
        with subcommand.make_context(name, rest, parent=context) as parsed:
            assert parsed.params == {"project": EXAMPLE.name, "stale": False, "to": Path(DATA_MOUNT_PATH)}


def test_restricted_check_notices_a_privileged_container() -> None:
    pod = one(objects(), "Job")["spec"]["template"]["spec"]
    pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    assert set(_restricted_violations(pod)) == {"allowPrivilegeEscalation", "volume host"}


def _job_name(project: Project, approval: Approval | None = None) -> str:
    return str(one(project_objects(project, ClusterConfig(), members=[], approval=approval), "Job")["metadata"]["name"])


def test_a_changed_data_request_makes_a_new_provision_job() -> None:
    name = _job_name(EXAMPLE)
    assert name == f"tre-provision-{data_request_hash(EXAMPLE)}"
    retitled = EXAMPLE.model_copy(update={"spec": EXAMPLE.spec.model_copy(update={"title": "Another title"})})
    assert _job_name(retitled) == name
    request = EXAMPLE.spec.datasets[0]
    narrower = request.model_copy(update={"columns": request.columns[:-1]})
    changed = EXAMPLE.model_copy(update={"spec": EXAMPLE.spec.model_copy(update={"datasets": [narrower]})})
    assert _job_name(changed) != name


def test_a_changed_approval_makes_a_new_provision_job() -> None:
    def approval(columns: set[str]) -> Approval:
        dataset = ApprovedDataset(name="hospital-episodes", columns=frozenset(columns))
        return Approval(
            project=EXAMPLE.name,
            approver="carol",
            reference="R",
            decided="2026-01-01",
            expires="2027-01-01",
            datasets=(dataset,),
        )

    wide, narrow = approval({"sex", "hba1c", "nhs_number"}), approval({"sex", "hba1c"})
    assert _job_name(EXAMPLE, wide) == _job_name(EXAMPLE, approval({"nhs_number", "hba1c", "sex"}))
    assert _job_name(EXAMPLE, wide) != _job_name(EXAMPLE, narrow)


def test_hub_entry_lists_sorted_members_in_the_documented_format() -> None:
    entry = one(objects(members=["bob", "alice", "bob"]), "ConfigMap")
    assert entry["metadata"]["namespace"] == "jupyterhub"
    assert entry["metadata"]["name"] == "tre-workspace-diabetes-outcomes"
    assert entry["metadata"]["labels"]["tre.dev/hub-entry"] == "true"
    assert json.loads(entry["data"][HUB_ENTRY_KEY]) == {
        "project": "diabetes-outcomes",
        "namespace": "tre-diabetes-outcomes",
        "serviceAccount": "tre-workspace",
        "members": ["alice", "bob"],
        "dataClaim": "tre-data",
        "cpu": "2",
        "memory": "8Gi",
        "storage": "20Gi",
        "gpu": 0,
    }


def test_hub_entry_format_is_the_documented_one() -> None:
    """docs/reference/controller-objects.md documents profile.json; the hub configuration reads exactly that."""
    doc = (Path(__file__).resolve().parents[2] / "docs/reference/controller-objects.md").read_text(encoding="utf-8")
    profile = json.loads(
        make_hub_entry(project_context(EXAMPLE, ClusterConfig(), members=MEMBERS))["data"][HUB_ENTRY_KEY]
    )
    for key in profile:
        assert f"`{key}`" in doc


def test_a_suspended_project_offers_its_workspace_to_no_one() -> None:
    suspended = EXAMPLE.model_copy(update={"spec": EXAMPLE.spec.model_copy(update={"suspended": True})})
    built = objects(project=suspended)
    assert json.loads(one(built, "ConfigMap")["data"][HUB_ENTRY_KEY])["members"] == []
    assert one(built, "ResourceQuota")["spec"]["hard"]["pods"] == "1"


def test_a_project_namespace_may_not_be_a_shared_one() -> None:
    with pytest.raises(InputError, match="shared service"):
        objects(ClusterConfig(namespace_prefix="", hub_namespace="diabetes-outcomes"))


# ---- cluster settings -------------------------------------------------------------------------------------------


def test_cluster_settings_read_camel_case_and_empty_means_none() -> None:
    config = ClusterConfig.model_validate({"hubNamespace": "hub", "packageMirrorCidr": "", "storageClass": ""})
    assert (config.hub_namespace, config.package_mirror_cidr, config.storage_class) == ("hub", None, None)
    assert ClusterConfig(hub_namespace="hub") == config


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"packageMirrorCidr": "169.254.169.254/32"}, "metadata"),
        ({"packageMirrorCidr": "169.254.169.0/24", "metadataCidr": "169.254.0.0/16"}, "metadata"),
        ({"provisionerEgressCidrs": ["169.254.169.254/32"]}, "metadata"),
        ({"packageMirrorCidr": "0.0.0.0/0"}, "whole internet"),
        ({"packageMirrorCidr": "10.0.0.1/8"}, "not a CIDR"),
        ({"hubPodLabels": {}}, "at least 1"),
        ({"namespacePrefix": "Tre-"}, "pattern"),
        ({"hubPort": 0}, "greater than or equal to 1"),
    ],
)
def test_cluster_settings_refuse_unsafe_values(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClusterConfig.model_validate(settings)


# ---- the command --------------------------------------------------------------------------------------------------


def test_tre_controller_manifests_prints_every_object(tre: Tre) -> None:
    result = tre("controller", "manifests", "-f", str(EXAMPLE_FILE))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("# Objects the controller applies")
    assert list(yaml.safe_load_all(result.stdout)) == objects(members=EXAMPLE.spec.all_members)


def test_tre_controller_manifests_reads_cluster_settings(tre: Tre, tmp_path: Path) -> None:
    values = tmp_path / "cluster.yaml"
    values.write_text("hubNamespace: hub\npackageMirrorCidr: 10.8.0.0/16\n", encoding="utf-8")
    result = tre("controller", "manifests", "-f", str(EXAMPLE_FILE), "--values", str(values))
    assert result.exit_code == 0, result.stderr
    printed = list(yaml.safe_load_all(result.stdout))
    assert one(printed, "ConfigMap")["metadata"]["namespace"] == "hub"
    assert "tre-allow-egress-package-mirror" in {o["metadata"]["name"] for o in printed}


def test_tre_controller_manifests_refuses_bad_input_in_one_line(tre: Tre, tmp_path: Path) -> None:
    assert_refused(tre("controller", "manifests", "-f", str(tmp_path / "missing.yaml")), "cannot read file")
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE_FILE.read_text(encoding="utf-8").replace("lead: alice", "lead: Alice"), encoding="utf-8")
    assert_refused(tre("controller", "manifests", "-f", str(bad)), "spec.lead")
    values = tmp_path / "cluster.yaml"
    values.write_text("hubNamespce: hub\n", encoding="utf-8")
    assert_refused(
        tre("controller", "manifests", "-f", str(EXAMPLE_FILE), "--values", str(values)), "unknown field 'hubNamespce'"
    )


def test_the_public_surface_is_what_it_says() -> None:
    assert tre.controller.__all__ == sorted(tre.controller.__all__, key=lambda n: (not n.isupper(), n))
    assert all(hasattr(tre.controller, name) for name in tre.controller.__all__)
