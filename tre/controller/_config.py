"""What the controller needs to know about the cluster it runs in: names of the shared services, images, storage."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ClusterConfig(BaseModel):
    """Cluster-wide settings for every project's objects (the Helm chart's values feed these)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    field_manager: str = "tre-controller"
    namespace_prefix: str = Field(default="tre-", description="Project namespaces are named prefix + project name.")
    tre_namespace: str = Field(default="tre", description="Where the controller and the airlock API run.")
    hub_namespace: str = Field(default="jupyterhub", description="Where JupyterHub (zero-to-jupyterhub) runs.")
    hub_pod_labels: dict[str, str] = Field(default_factory=lambda: {"app": "jupyterhub", "component": "hub"})
    proxy_pod_labels: dict[str, str] = Field(default_factory=lambda: {"app": "jupyterhub", "component": "proxy"})
    hub_port: int = 8081
    airlock_pod_labels: dict[str, str] = Field(
        default_factory=lambda: {"app.kubernetes.io/name": "tre", "app.kubernetes.io/component": "airlock"}
    )
    airlock_port: int = 8000
    dns_namespace: str = "kube-system"
    dns_pod_labels: dict[str, str] = Field(default_factory=lambda: {"k8s-app": "kube-dns"})
    package_mirror_cidr: str | None = Field(default=None, description="Allow-listed package mirror CIDR.")
    package_mirror_port: int = 443
    metadata_cidr: str = "169.254.169.254/32"
    provisioner_image: str = "ghcr.io/tre-dev/tre:0.1.0"
    storage_class: str | None = None
    vault_auth_mount: str = "kubernetes"
