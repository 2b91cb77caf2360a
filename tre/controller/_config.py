"""What the controller needs to know about the cluster it runs in: names of the shared services, images, storage.

The file form (the chart mounts it as ``/etc/tre/cluster.yaml``; ``tre controller manifests --values`` reads the
same) is one YAML mapping with camelCase keys, e.g. ``hubNamespace: jupyterhub``; snake_case keys work too.
An empty string for ``packageMirrorCidr`` or ``storageClass`` means none, as Helm values usually say it.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator
from pydantic.alias_generators import to_camel

from tre.spec import parse, read_yaml
from tre.spec._common import DNS_LABEL_PATTERN

Port = Annotated[int, Field(ge=1, le=65535)]
NamespaceName = Annotated[str, StringConstraints(pattern=DNS_LABEL_PATTERN, min_length=1, max_length=63)]
PodLabels = Annotated[dict[str, str], Field(min_length=1)]
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_SMALLEST_ALLOWED_PREFIX = 1  # a /0 would be the whole internet


class ClusterConfig(BaseModel):
    """Cluster-wide settings for every project's objects (the Helm chart's values feed these)."""

    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)

    field_manager: str = "tre-controller"
    namespace_prefix: Annotated[str, StringConstraints(pattern=r"^([a-z0-9][-a-z0-9]{0,22})?$")] = Field(
        default="tre-", description="Project namespaces are named prefix + project name (at most 23 characters)."
    )
    tre_namespace: NamespaceName = Field(default="tre", description="Where the controller and the airlock API run.")
    hub_namespace: NamespaceName = Field(
        default="jupyterhub", description="Where JupyterHub (zero-to-jupyterhub) runs."
    )
    hub_pod_labels: PodLabels = Field(default_factory=lambda: {"app": "jupyterhub", "component": "hub"})
    proxy_pod_labels: PodLabels = Field(default_factory=lambda: {"app": "jupyterhub", "component": "proxy"})
    hub_port: Port = 8081
    workspace_port: Port = Field(default=8888, description="The port a workspace's notebook server listens on.")
    airlock_pod_labels: PodLabels = Field(
        default_factory=lambda: {"app.kubernetes.io/name": "tre", "app.kubernetes.io/component": "airlock"}
    )
    airlock_port: Port = 8000
    dns_namespace: NamespaceName = "kube-system"
    dns_pod_labels: PodLabels = Field(default_factory=lambda: {"k8s-app": "kube-dns"})
    package_mirror_cidr: str | None = Field(default=None, description="Allow-listed package mirror CIDR.")
    package_mirror_port: Port = 443
    metadata_cidr: str = "169.254.169.254/32"
    provisioner_image: str = Field(default="ghcr.io/tre-dev/tre:0.1.0", min_length=1)
    provisioner_secret: NamespaceName = Field(
        default="tre-provisioner",
        description="Secret in the project namespace with the provisioning Job's settings (database, store, Vault).",
    )
    provisioner_egress_cidrs: tuple[str, ...] = Field(
        default=(), description="Addresses outside the cluster the provisioning Job may reach (database, S3, Vault)."
    )
    provisioner_egress_namespaces: tuple[NamespaceName, ...] = Field(
        default=(), description="Namespaces whose pods the provisioning Job may reach (an in-cluster database, Vault)."
    )
    provision_job_ttl_seconds: int = Field(default=86400, ge=0, description="How long a finished Job is kept.")
    run_as_user: int = Field(default=10001, ge=1, description="The non-root user (and group) Jobs run as.")
    storage_class: str | None = None
    data_access_mode: Literal["ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"] = Field(
        default="ReadWriteMany",
        description="Access mode of data volumes: ReadWriteMany lets workspaces on different nodes share one.",
    )
    vault_auth_mount: str = "kubernetes"

    @field_validator("package_mirror_cidr", "storage_class", mode="before")
    @classmethod
    def _empty_means_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("hub_pod_labels", "proxy_pod_labels", "airlock_pod_labels", "dns_pod_labels")
    @classmethod
    def _label_values(cls, labels: dict[str, str]) -> dict[str, str]:
        bad = sorted(value for value in labels.values() if len(value) > 63 or not _LABEL_VALUE.match(value))
        if bad:
            raise ValueError(f"not a valid label value: {bad[0]!r}")
        return labels

    @field_validator("metadata_cidr")
    @classmethod
    def _valid_metadata_cidr(cls, value: str) -> str:
        return str(network(value))

    @field_validator("package_mirror_cidr")
    @classmethod
    def _valid_mirror_cidr(cls, value: str | None) -> str | None:
        return None if value is None else str(_specific_network(value))

    @field_validator("provisioner_egress_cidrs")
    @classmethod
    def _valid_egress_cidrs(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(str(_specific_network(value)) for value in values)

    @model_validator(mode="after")
    def _metadata_never_allowed(self) -> Self:
        metadata = network(self.metadata_cidr)
        for cidr in (self.package_mirror_cidr, *self.provisioner_egress_cidrs):
            if cidr is not None and within(network(cidr), metadata):
                raise ValueError(f"{cidr} lies inside the cloud metadata range {metadata}; it can never be allowed")
        return self

    def namespace_for(self, project: str) -> str:
        """The namespace a project's workspaces run in."""
        return self.namespace_prefix + project

    @property
    def shared_namespaces(self) -> frozenset[str]:
        """Namespaces of shared services, which no project namespace may ever be."""
        return frozenset(
            {self.tre_namespace, self.hub_namespace, self.dns_namespace, *self.provisioner_egress_namespaces}
        )


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def network(cidr: str) -> IPNetwork:
    """``cidr`` as a network; ValueError (with the reason) if it is not one, or has host bits set."""
    try:
        return ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        raise ValueError(f"{cidr!r} is not a CIDR range such as 10.20.0.0/16 ({exc})") from None


def _specific_network(cidr: str) -> IPNetwork:
    parsed = network(cidr)
    if parsed.prefixlen < _SMALLEST_ALLOWED_PREFIX:
        raise ValueError(f"{cidr} is the whole internet; name the mirror's own range")
    return parsed


def within(inner: IPNetwork, outer: IPNetwork) -> bool:
    """True if every address of ``inner`` is in ``outer`` (ranges of different IP versions never nest)."""
    if isinstance(inner, ipaddress.IPv4Network) and isinstance(outer, ipaddress.IPv4Network):
        return inner.subnet_of(outer)
    if isinstance(inner, ipaddress.IPv6Network) and isinstance(outer, ipaddress.IPv6Network):
        return inner.subnet_of(outer)
    return False


def load_cluster_config(path: Path) -> ClusterConfig:
    """Read a cluster settings file; SpecError with one line naming each problem."""
    data: dict[str, Any] = read_yaml(path)
    return parse(ClusterConfig, data, source=str(path))
