"""``tre controller run``: the Kubernetes controller, in the foreground until stopped.

kopf, the Kubernetes client and hvac load only when this command runs, so every other command starts without them.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tre.cli._context import load_settings, open_store
from tre.controller import ClusterConfig, load_cluster_config
from tre.controller._reconcile import Retention

if TYPE_CHECKING:
    from tre.workspaces.kubernetes import VaultRoles

log = logging.getLogger(__name__)


def run(
    kubeconfig: Annotated[
        Path | None,
        typer.Option("--kubeconfig", help="Credentials for the cluster; default: in-cluster, else $KUBECONFIG."),
    ] = None,
    namespace: Annotated[
        str | None,
        typer.Option("--namespace", help="The controller's own namespace, for its Events (default: $POD_NAMESPACE)."),
    ] = None,
    values: Annotated[
        Path | None, typer.Option("--values", help="Cluster settings (YAML, the chart's cluster.yaml).")
    ] = None,
    interval: Annotated[
        float, typer.Option("--interval", min=5, help="Seconds between passes over each Project (expiry, drift).")
    ] = 60.0,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Projects reconciled at once.")] = 4,
    retention: Annotated[
        Retention, typer.Option("--retention", help="Data when access ends (expiry, blockers): keep or delete.")
    ] = Retention.KEEP,
    retention_on_delete: Annotated[
        Retention, typer.Option("--retention-on-delete", help="Data when a Project is deleted: keep or delete.")
    ] = Retention.DELETE,
    liveness: Annotated[
        str | None, typer.Option("--liveness", help="Serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz.")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", min=1, max=65535, help="Serve Prometheus metrics on this port.")
    ] = None,
) -> None:
    """Run the controller: turn approved Projects into isolated workspaces, and tear access down when it ends."""
    from tre.clients.kube import KubernetesClient
    from tre.controller._retry import Backoff
    from tre.workspaces._kopf import run_operator
    from tre.workspaces.kubernetes import ControllerSettings, Reconciler, StoreGovernance

    config = ClusterConfig() if values is None else load_cluster_config(values)
    if kubeconfig is not None:
        os.environ["KUBECONFIG"] = str(kubeconfig)  # kopf's own login reads it too
    kube = KubernetesClient.from_environment(field_manager=config.field_manager, kubeconfig=kubeconfig)
    settings = ControllerSettings(
        retention_on_block=retention,
        retention_on_delete=retention_on_delete,
        backoff=Backoff(),
        event_namespace=namespace or os.environ.get("POD_NAMESPACE") or config.tre_namespace,
        reporting_instance=os.environ.get("POD_NAME") or socket.gethostname(),
    )
    with open_store() as store:
        reconciler = Reconciler(kube, StoreGovernance(store), _vault(), config, settings)
        run_operator(reconciler, interval=interval, workers=workers, liveness=liveness, metrics_port=metrics_port)


def _vault() -> VaultRoles:
    from tre.clients.vault import VaultClient
    from tre.workspaces.kubernetes import NoVault

    settings = load_settings()
    if not settings.vault_addr:
        log.warning("TRE_VAULT_ADDR is not set: projects get no Vault role, so workspaces get no secrets")
        return NoVault()
    url, token = settings.vault_credentials()
    return VaultClient(url, token)
