"""Every Kubernetes object one approved project needs, as plain dicts from pure ``make_*`` functions.

Nothing here talks to a cluster: the controller applies what ``project_objects`` returns, and
``tre controller manifests`` prints it for review. docs/reference/controller-objects.md says why each object exists.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import yaml

from tre.controller._config import ClusterConfig, network, within
from tre.errors import InputError
from tre.spec import Approval, Project

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "tre-controller"
PROJECT_LABEL = "tre.dev/project"
COMPONENT_LABEL = "tre.dev/component"
HUB_ENTRY_LABEL = "tre.dev/hub-entry"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
PROVISIONER = "provisioner"
WORKSPACE_SERVICE_ACCOUNT = "tre-workspace"
DATA_CLAIM = "tre-data"
DATA_MOUNT_PATH = "/data"
# The provisioning Job publishes each extract under extracts/<id>/ on the data volume and repoints this relative
# symlink at it atomically (tre.data.export_extract); workspaces read the extract through it.
CURRENT_DATA_LINK = "current"
CURRENT_DATA_DIR = f"{DATA_MOUNT_PATH}/{CURRENT_DATA_LINK}"
HUB_ENTRY_KEY = "profile.json"
SCRATCH_MOUNT_PATH = "/tmp"  # noqa: S108 - inside the Job's container, on its own emptyDir volume
GPU_RESOURCE = "nvidia.com/gpu"
PROVISION_JOB_BACKOFF_LIMIT = 2
_POD_SECURITY_LABELS = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")}
_HASH_LENGTH = 10


@dataclass(frozen=True)
class ProjectContext:
    """What one project's objects are built from: the declaration, the cluster, and who may use the workspace."""

    project: Project
    config: ClusterConfig
    members: tuple[str, ...] = ()
    approval: Approval | None = None

    def __post_init__(self) -> None:
        if self.namespace in self.config.shared_namespaces:
            raise InputError(
                f"project {self.name} would run in namespace {self.namespace}, which a shared service uses; "
                "rename the project or change the cluster's namespacePrefix"
            )

    @property
    def name(self) -> str:
        return self.project.name

    @property
    def namespace(self) -> str:
        return self.config.namespace_for(self.project.name)

    def labels(self, **extra: str) -> dict[str, str]:
        """The labels every object of this project carries, plus ``extra``."""
        return {MANAGED_BY_LABEL: MANAGED_BY, PROJECT_LABEL: self.name, **extra}

    def metadata(self, name: str, **extra_labels: str) -> dict[str, Any]:
        """Metadata for an object called ``name`` in the project namespace."""
        return {"name": name, "namespace": self.namespace, "labels": self.labels(**extra_labels)}


def project_context(
    project: Project, config: ClusterConfig, *, members: Iterable[str], approval: Approval | None = None
) -> ProjectContext:
    """The context for ``project``; a suspended project has no one who may use its workspace."""
    seated = () if project.spec.suspended else tuple(sorted(set(members)))
    return ProjectContext(project, config, seated, approval)


def project_objects(
    project: Project, config: ClusterConfig, *, members: Iterable[str], approval: Approval | None = None
) -> list[dict[str, Any]]:
    """Every object for ``project``, in apply order: the Namespace and its NetworkPolicies before anything that runs.

    ``members`` are the people the hub may offer the workspace to (the controller passes only accredited ones);
    ``approval``, when given, makes a change in what was approved re-provision the data like a changed request.
    """
    context = project_context(project, config, members=members, approval=approval)
    return [
        make_namespace(context),
        *make_network_policies(context),
        make_resource_quota(context),
        make_limit_range(context),
        make_service_account(context),
        make_data_volume(context),
        make_provision_job(context),
        make_hub_entry(context),
    ]


def make_namespace(context: ProjectContext) -> dict[str, Any]:
    """The project's own namespace; Pod Security Admission enforces the ``restricted`` profile in it."""
    labels = {**context.labels(), **_POD_SECURITY_LABELS}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": context.namespace, "labels": labels}}


def make_network_policies(context: ProjectContext) -> list[dict[str, Any]]:
    """Deny everything, then allow only: workspaces to the hub, the airlock and DNS (and the package mirror when
    configured); the provisioning Job to its configured destinations; and the hub and its proxy to workspaces."""
    policies = [_network_policy(context, "tre-default-deny", {}, ingress=[], egress=[])]
    for name, peers, ports in _workspace_egress(context.config):
        policies.append(_network_policy(context, name, {}, egress=[{"to": peers, "ports": ports}]))
    policies.append(_ingress_from_hub(context))
    provisioner = _provisioner_egress(context)
    return policies if provisioner is None else [*policies, provisioner]


_Egress = tuple[str, list[dict[str, Any]], list[dict[str, Any]]]


def _workspace_egress(config: ClusterConfig) -> list[_Egress]:
    """(policy name, peers, ports) for each destination every pod in a project namespace may reach."""
    allowed = [
        ("tre-allow-egress-hub", [_pods_in(config.hub_namespace, config.hub_pod_labels)], _tcp(config.hub_port)),
        (
            "tre-allow-egress-airlock",
            [_pods_in(config.tre_namespace, config.airlock_pod_labels)],
            _tcp(config.airlock_port),
        ),
        ("tre-allow-egress-dns", [_pods_in(config.dns_namespace, config.dns_pod_labels)], _dns_ports()),
    ]
    if config.package_mirror_cidr is not None:
        mirror = [_ip_block(config.package_mirror_cidr, config)]
        allowed.append(("tre-allow-egress-package-mirror", mirror, _tcp(config.package_mirror_port)))
    return allowed


def _network_policy(
    context: ProjectContext,
    name: str,
    pod_selector: dict[str, Any],
    *,
    ingress: list[dict[str, Any]] | None = None,
    egress: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": pod_selector, "policyTypes": []}
    for policy_type, rules in (("Ingress", ingress), ("Egress", egress)):
        if rules is not None:
            spec["policyTypes"].append(policy_type)
            spec[policy_type.lower()] = rules
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": context.metadata(name),
        "spec": spec,
    }


def _ingress_from_hub(context: ProjectContext) -> dict[str, Any]:
    """The proxy forwards users to a workspace; the hub must also reach it, to see that a started server is up."""
    config = context.config
    peers = [
        _pods_in(config.hub_namespace, config.proxy_pod_labels),
        _pods_in(config.hub_namespace, config.hub_pod_labels),
    ]
    rule = {"from": peers, "ports": _tcp(config.workspace_port)}
    return _network_policy(context, "tre-allow-ingress-from-hub", {}, ingress=[rule])


def _provisioner_egress(context: ProjectContext) -> dict[str, Any] | None:
    config = context.config
    peers = [_namespace(name) for name in sorted(config.provisioner_egress_namespaces)]
    peers += [_ip_block(cidr, config) for cidr in config.provisioner_egress_cidrs]
    if not peers:
        return None
    selector = {"matchLabels": {COMPONENT_LABEL: PROVISIONER}}
    return _network_policy(context, "tre-allow-egress-provisioner", selector, egress=[{"to": peers}])


def _namespace(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: name}}}


def _pods_in(namespace: str, labels: Mapping[str, str]) -> dict[str, Any]:
    return {**_namespace(namespace), "podSelector": {"matchLabels": dict(sorted(labels.items()))}}


def _ip_block(cidr: str, config: ClusterConfig) -> dict[str, Any]:
    """``cidr``, minus the cloud metadata range when it lies inside (the config refuses the reverse)."""
    block: dict[str, Any] = {"cidr": cidr}
    if within(network(config.metadata_cidr), network(cidr)):
        block["except"] = [config.metadata_cidr]
    return {"ipBlock": block}


def _tcp(port: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port}]


def _dns_ports() -> list[dict[str, Any]]:
    return [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]


def make_resource_quota(context: ProjectContext) -> dict[str, Any]:
    """The namespace's total: one workspace of the declared size per member, plus the provisioning Job.

    Storage counts the data volume and one volume per member; GPUs go to members' workspaces only, so a
    project that declares none can use none. Services that expose a node or a load balancer are refused.
    """
    workspace = context.project.spec.workspace
    seats = len(context.members) + 1
    hard = {
        "requests.cpu": scale_quantity(workspace.cpu, seats),
        "limits.cpu": scale_quantity(workspace.cpu, seats),
        "requests.memory": scale_quantity(workspace.memory, seats),
        "limits.memory": scale_quantity(workspace.memory, seats),
        "requests.storage": scale_quantity(workspace.storage, seats),
        "persistentvolumeclaims": str(seats),
        "pods": str(seats),
        f"requests.{GPU_RESOURCE}": str(workspace.gpu * len(context.members)),
        "services.loadbalancers": "0",
        "services.nodeports": "0",
    }
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": context.metadata("tre-quota"),
        "spec": {"hard": hard},
    }


def make_limit_range(context: ProjectContext) -> dict[str, Any]:
    """Every container gets the declared workspace size unless it says otherwise, and none may exceed it."""
    workspace = context.project.spec.workspace
    size = {"cpu": workspace.cpu, "memory": workspace.memory}
    limits = [
        {"type": "Container", "default": dict(size), "defaultRequest": dict(size), "max": dict(size)},
        {"type": "PersistentVolumeClaim", "max": {"storage": workspace.storage}},
    ]
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": context.metadata("tre-limits"),
        "spec": {"limits": limits},
    }


def make_service_account(context: ProjectContext) -> dict[str, Any]:
    """The identity workspaces run as. No API token is mounted by default: a workspace mounts a projected token
    explicitly, only to log in to Vault (the project's Kubernetes-auth role is bound to this account)."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": context.metadata(WORKSPACE_SERVICE_ACCOUNT),
        "automountServiceAccountToken": False,
    }


def make_data_volume(context: ProjectContext) -> dict[str, Any]:
    """The project's dataset area: the provisioning Job fills it, workspaces mount it read-only."""
    config = context.config
    spec: dict[str, Any] = {
        "accessModes": [config.data_access_mode],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": context.project.spec.workspace.storage}},
    }
    if config.storage_class is not None:
        spec["storageClassName"] = config.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": context.metadata(DATA_CLAIM),
        "spec": spec,
    }


def make_provision_job(context: ProjectContext) -> dict[str, Any]:
    """A Job running ``tre provision <project> --to /data``: it builds the extract in the object store, then copies
    it onto the data volume, verified, and publishes it as ``/data/current``. Its name ends in a hash of what was
    requested (and approved, when known), so a changed request makes a new Job and the data is provisioned again."""
    name = f"tre-provision-{data_request_hash(context.project, context.approval)}"
    labels = context.labels(**{COMPONENT_LABEL: PROVISIONER})
    job_spec = {
        "backoffLimit": PROVISION_JOB_BACKOFF_LIMIT,
        "ttlSecondsAfterFinished": context.config.provision_job_ttl_seconds,
        "template": {"metadata": {"labels": labels}, "spec": _provisioner_pod_spec(context)},
    }
    metadata = context.metadata(name, **{COMPONENT_LABEL: PROVISIONER})
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}


def _provisioner_pod_spec(context: ProjectContext) -> dict[str, Any]:
    config = context.config
    workspace = context.project.spec.workspace
    size = {"cpu": workspace.cpu, "memory": workspace.memory}
    container = {
        "name": "provision",
        "image": config.provisioner_image,
        "command": ["tre"],
        "args": ["provision", context.name, "--to", DATA_MOUNT_PATH],
        "env": [{"name": "TRE_HOME", "value": f"{SCRATCH_MOUNT_PATH}/tre"}],
        "envFrom": [{"secretRef": {"name": config.provisioner_secret}}],
        "resources": {"requests": dict(size), "limits": dict(size)},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
        },
        "volumeMounts": [
            {"name": "data", "mountPath": DATA_MOUNT_PATH},
            {"name": "tmp", "mountPath": SCRATCH_MOUNT_PATH},
        ],
    }
    uid = config.run_as_user
    return {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": uid,
            "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": DATA_CLAIM}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }


def make_hub_entry(context: ProjectContext) -> dict[str, Any]:
    """The project's entry for JupyterHub, in the hub's namespace: which members may start which workspace, where,
    and how big. The hub configuration reads ``profile.json``; its format is documented and must stay stable."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"tre-workspace-{context.name}",
            "namespace": context.config.hub_namespace,
            "labels": context.labels(**{HUB_ENTRY_LABEL: "true"}),
        },
        "data": {HUB_ENTRY_KEY: json.dumps(hub_profile(context), sort_keys=True, indent=2) + "\n"},
    }


def hub_profile(context: ProjectContext) -> dict[str, Any]:
    """The hub entry's ``profile.json`` document."""
    workspace = context.project.spec.workspace
    return {
        "project": context.name,
        "namespace": context.namespace,
        "serviceAccount": WORKSPACE_SERVICE_ACCOUNT,
        "members": list(context.members),
        "dataClaim": DATA_CLAIM,
        "cpu": workspace.cpu,
        "memory": workspace.memory,
        "storage": workspace.storage,
        "gpu": workspace.gpu,
    }


def data_request_hash(project: Project, approval: Approval | None = None) -> str:
    """A short hash of the data a project asks for and, when given, of what its approval allows."""
    requested = [request.model_dump(mode="json", by_alias=True) for request in project.spec.datasets]
    approved = [] if approval is None else _approved_datasets(approval)
    canonical = json.dumps({"requested": requested, "approved": approved}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:_HASH_LENGTH]


def _approved_datasets(approval: Approval) -> list[dict[str, Any]]:
    return [
        {
            "name": dataset.name,
            "columns": sorted(dataset.columns),
            "filter": [condition.model_dump(mode="json", by_alias=True) for condition in dataset.filter],
        }
        for dataset in sorted(approval.datasets, key=lambda d: d.name)
    ]


def scale_quantity(quantity: str, factor: int) -> str:
    """A Kubernetes quantity (``500m``, ``1.5``, ``8Gi``) multiplied by a whole number, keeping its unit."""
    digits = len(quantity) - len(quantity.lstrip("0123456789."))
    number, unit = Decimal(quantity[:digits]), quantity[digits:]
    scaled = (number * factor).normalize()
    return f"{scaled:f}{unit}"


class _NoAliasDumper(yaml.SafeDumper):
    """Writes a repeated dict out in full each time instead of as a YAML anchor and alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    """Multi-line text (the hub entry's JSON) as a literal block, so it reads as it is."""
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_NoAliasDumper.add_representer(str, _represent_str)


def yaml_documents(documents: Iterable[Mapping[str, Any]]) -> str:
    """Objects as multi-document YAML, keys in the order they were built (apiVersion, kind, metadata, spec)."""
    return yaml.dump_all(list(documents), Dumper=_NoAliasDumper, sort_keys=False, explicit_start=True, width=120)
