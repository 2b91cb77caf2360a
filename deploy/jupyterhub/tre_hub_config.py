"""TRE settings for JupyterHub on Kubernetes (zero-to-jupyterhub): who may start which project's workspace.

helm/jupyterhub-values.yaml mounts this file into the hub pod and ``hub.extraConfig`` calls ``configure(c)``.

The TRE controller writes one *hub entry* per approved project: a ConfigMap ``tre-workspace-<project>`` in the
hub's namespace, labelled ``tre.dev/hub-entry: "true"``, whose ``profile.json`` is::

    {"project", "namespace", "serviceAccount", "members": [user, ...], "dataClaim", "cpu", "memory", "storage", "gpu"}

Each user's profile list is built from those entries: a user sees only the projects whose members include them,
and the chosen profile starts the workspace in the project's namespace, as the project's ServiceAccount, with the
project's data volume read-only at /data, a writable outputs volume, and the project's resources. KubeSpawner
reads the list again when a server starts, so someone removed from a project (or a project whose access ended,
which removes its entry) cannot start it from an old form. A user with no project cannot start a server at all.

The data volume holds ``extracts/<id>/`` and a symlink ``current`` that the provisioning Job repoints atomically
once a new extract is complete and verified. A subPath cannot follow a symlink (it would pin one extract), so the
whole volume is mounted at /data and workspaces read ``/data/current``: ``TRE_DATA_DIR`` says so, and a
``~/data`` link to it (made when the container starts) shows it in JupyterLab's file browser, as in embedded mode.

Only the standard library and what the hub image has (tornado, kubespawner): the ``tre`` package is not there.
The pure functions are unit-tested in tests/unit/test_jupyterhub_config.py.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

log = logging.getLogger("tre.hub")

HUB_ENTRY_LABEL = "tre.dev/hub-entry"
PROJECT_LABEL = "tre.dev/project"
PROFILE_KEY = "profile.json"
WORKSPACE_COMPONENT = "workspace"
DATA_MOUNT = "/data"
DATA_DIR = f"{DATA_MOUNT}/current"  # the symlink the provisioning Job swaps to each new, verified extract
DATA_SHORTCUT = 'ln -sfn "$TRE_DATA_DIR" "$HOME/data" 2>/dev/null || true'  # never fails the start
OUTPUTS_MOUNT = "/home/jovyan/outputs"
OUTPUTS_CLAIM_TEMPLATE = "outputs-{user_server}"
GPU_RESOURCE = "nvidia.com/gpu"
AIRLOCK_SERVICE = "airlock"
AIRLOCK_TOKEN_VARIABLE = "TRE_AIRLOCK_API_TOKEN"  # noqa: S105 - the variable's name, not a token

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_USER_NAME = re.compile(r"^[^\s/]{1,255}$")
_CPU = re.compile(r"^(?P<number>[1-9][0-9]*)m$|^(?P<cores>[0-9]+(\.[0-9]+)?)$")
_BYTES = re.compile(r"^(?P<number>[0-9]+(\.[0-9]+)?)(?P<unit>Ki|Mi|Gi|Ti|k|M|G|T)?$")
_BYTE_UNITS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}

# Pod Security Standards "restricted": what project namespaces enforce and the TRE admission policies require.
POD_SECURITY_CONTEXT = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


class HubEntryError(ValueError):
    """A hub entry that cannot be used; the message names the ConfigMap and what is wrong."""


@dataclass(frozen=True)
class Workspace:
    """One project's workspace, as its hub entry describes it."""

    project: str
    namespace: str
    service_account: str
    members: frozenset[str]
    data_claim: str
    cpu: str
    memory: str
    storage: str
    gpu: int


def parse_entry(configmap: Mapping[str, Any]) -> Workspace:
    """The workspace in one hub entry (a ConfigMap as a plain dict); HubEntryError if anything is off."""
    metadata = configmap.get("metadata") or {}
    name = metadata.get("name", "<unnamed>")
    try:
        document = json.loads((configmap.get("data") or {})[PROFILE_KEY])
    except (KeyError, TypeError, ValueError) as exc:
        raise HubEntryError(f"hub entry {name}: no readable {PROFILE_KEY} ({exc})") from None
    if not isinstance(document, dict):
        raise HubEntryError(f"hub entry {name}: {PROFILE_KEY} is not a JSON object")
    workspace = Workspace(
        project=_text(document, "project", _DNS_LABEL, name),
        namespace=_text(document, "namespace", _DNS_LABEL, name),
        service_account=_text(document, "serviceAccount", _DNS_LABEL, name),
        members=_members(document, name),
        data_claim=_text(document, "dataClaim", _DNS_LABEL, name),
        cpu=_text(document, "cpu", _CPU, name),
        memory=_text(document, "memory", _BYTES, name),
        storage=_text(document, "storage", _BYTES, name),
        gpu=_count(document, "gpu", name),
    )
    labelled = (metadata.get("labels") or {}).get(PROJECT_LABEL)
    if labelled != workspace.project:
        raise HubEntryError(f"hub entry {name}: label {PROJECT_LABEL}={labelled!r} but project {workspace.project!r}")
    return workspace


def _text(document: Mapping[str, Any], key: str, pattern: re.Pattern[str], name: str) -> str:
    value = document.get(key)
    if not isinstance(value, str) or not pattern.match(value):
        raise HubEntryError(f"hub entry {name}: {key} {value!r} is missing or malformed")
    return value


def _members(document: Mapping[str, Any], name: str) -> frozenset[str]:
    members = document.get("members")
    if not isinstance(members, list) or not all(isinstance(m, str) and _USER_NAME.match(m) for m in members):
        raise HubEntryError(f"hub entry {name}: members must be a list of user names")
    return frozenset(members)


def _count(document: Mapping[str, Any], key: str, name: str) -> int:
    value = document.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise HubEntryError(f"hub entry {name}: {key} {value!r} is not a whole number")
    return value


_CONFLICT = Workspace("", "", "", frozenset(), "", "0", "0", "0", 0)  # marks a project with two entries


def workspaces(configmaps: Iterable[Mapping[str, Any]]) -> list[Workspace]:
    """The usable workspaces among hub entries, by project name; a malformed entry is logged and offers nothing."""
    found: dict[str, Workspace] = {}
    for configmap in configmaps:
        try:
            workspace = parse_entry(configmap)
        except HubEntryError as exc:
            log.warning("%s", exc)
            continue
        if workspace.project in found:
            log.warning("two hub entries for project %s: offering neither", workspace.project)
            found[workspace.project] = _CONFLICT
            continue
        found[workspace.project] = workspace
    return [found[p] for p in sorted(found) if found[p] is not _CONFLICT]


def profiles_for(user: str, entries: Iterable[Workspace]) -> list[dict[str, Any]]:
    """KubeSpawner profiles for ``user``: one per project that lists them as a member, the first the default."""
    profiles = [profile(w) for w in entries if user in w.members]
    if profiles:
        profiles[0]["default"] = True
    return profiles


def profile(workspace: Workspace) -> dict[str, Any]:
    return {
        "display_name": workspace.project,
        "slug": workspace.project,
        "description": describe(workspace),
        "kubespawner_override": spawner_override(workspace),
    }


def describe(workspace: Workspace) -> str:
    parts = [f"{workspace.cpu} CPU", f"{workspace.memory} memory", f"{workspace.storage} for outputs"]
    if workspace.gpu:
        parts.append(f"{workspace.gpu} GPU")
    return ", ".join(parts)


def spawner_override(workspace: Workspace) -> dict[str, Any]:
    """KubeSpawner settings for a workspace of ``workspace``'s project (dicts merge into the hub's, lists replace)."""
    cores, memory = cpu_cores(workspace.cpu), memory_bytes(workspace.memory)
    override: dict[str, Any] = {
        "namespace": workspace.namespace,
        "service_account": workspace.service_account,
        "automount_service_account_token": False,
        "cpu_limit": cores,
        "cpu_guarantee": cores,
        "mem_limit": memory,
        "mem_guarantee": memory,
        "extra_labels": {PROJECT_LABEL: workspace.project},
        "storage_pvc_ensure": True,
        "pvc_name_template": OUTPUTS_CLAIM_TEMPLATE,
        "storage_capacity": workspace.storage,
        "storage_extra_labels": {PROJECT_LABEL: workspace.project},
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": workspace.data_claim, "readOnly": True}},
            {"name": "outputs", "persistentVolumeClaim": {"claimName": OUTPUTS_CLAIM_TEMPLATE}},
        ],
        "volume_mounts": [
            {"name": "data", "mountPath": DATA_MOUNT, "readOnly": True},
            {"name": "outputs", "mountPath": OUTPUTS_MOUNT},
        ],
        "environment": {"TRE_PROJECT": workspace.project, "TRE_DATA_DIR": DATA_DIR, "TRE_OUTPUTS_DIR": OUTPUTS_MOUNT},
        "lifecycle_hooks": {"postStart": {"exec": {"command": ["sh", "-c", DATA_SHORTCUT]}}},
    }
    if workspace.gpu:
        override["extra_resource_limits"] = {GPU_RESOURCE: str(workspace.gpu)}
        override["extra_resource_guarantees"] = {GPU_RESOURCE: str(workspace.gpu)}
    return override


def cpu_cores(quantity: str) -> float:
    """A Kubernetes CPU quantity (``500m``, ``2``, ``1.5``) in cores, as KubeSpawner's cpu_limit takes it."""
    match = _CPU.match(quantity)
    if match is None:
        raise ValueError(f"not a CPU quantity: {quantity!r}")
    if match.group("number") is not None:
        return float(Decimal(match.group("number")) / 1000)
    return float(Decimal(match.group("cores")))


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (``8Gi``, ``500M``) in bytes (KubeSpawner's K/M/G mean powers of 1024)."""
    match = _BYTES.match(quantity)
    if match is None:
        raise ValueError(f"not a memory quantity: {quantity!r}")
    return int(Decimal(match.group("number")) * _BYTE_UNITS[match.group("unit") or ""])


def with_service_token(services: list[dict[str, Any]], name: str, token: str) -> list[dict[str, Any]]:
    """``services`` with service ``name``'s api_token replaced; ValueError if there is no such service."""
    if not any(service.get("name") == name for service in services):
        raise ValueError(f"no JupyterHub service named {name!r}: define it under hub.services")
    return [{**s, "api_token": token} if s.get("name") == name else dict(s) for s in services]


# ----------------------------------------------------------------------------------------------------------------
# The hub side: read the entries with KubeSpawner's own Kubernetes client, and wire everything into the config.

Reader = Callable[[], Awaitable[list[Workspace]]]


def entry_reader(namespace: str) -> Reader:
    """Reads the hub entries in ``namespace`` (the hub's Role allows get and list on ConfigMaps there)."""

    async def read() -> list[Workspace]:
        from kubespawner.clients import shared_client

        api = shared_client("CoreV1Api")
        listing = await api.list_namespaced_config_map(namespace, label_selector=f"{HUB_ENTRY_LABEL}=true")
        return workspaces(api.api_client.sanitize_for_serialization(listing).get("items", []))

    return read


def profile_list(read: Reader) -> Callable[[Any], Awaitable[list[dict[str, Any]]]]:
    async def profiles(spawner: Any) -> list[dict[str, Any]]:
        return profiles_for(spawner.user.name, await read())

    return profiles


def pre_spawn_hook(read: Reader) -> Callable[[Any], Awaitable[None]]:
    """Refuse a start outside the user's projects (with no profile KubeSpawner would start its default pod)."""

    async def hook(spawner: Any) -> None:
        from tornado import web

        slugs = [p["slug"] for p in profiles_for(spawner.user.name, await read())]
        if not slugs:
            raise web.HTTPError(403, "You are not a member of any project with an approved workspace.")
        chosen = (spawner.user_options or {}).get("profile")
        if chosen and chosen not in slugs:
            raise web.HTTPError(403, f"You may not start a workspace for project {chosen}.")

    return hook


def configure(c: Any, environ: Mapping[str, str] = os.environ, read: Reader | None = None) -> None:
    """Apply the TRE settings to the hub's config object ``c`` (called from hub.extraConfig)."""
    reader = read or entry_reader(environ.get("POD_NAMESPACE", "jupyterhub"))
    spawner = c.KubeSpawner
    spawner.profile_list = profile_list(reader)
    spawner.pre_spawn_hook = pre_spawn_hook(reader)
    spawner.component_label = WORKSPACE_COMPONENT
    spawner.enable_user_namespaces = False
    spawner.automount_service_account_token = False
    spawner.allow_privilege_escalation = False
    spawner.pod_security_context = dict(POD_SECURITY_CONTEXT)
    spawner.container_security_context = dict(CONTAINER_SECURITY_CONTEXT)
    token = environ.get(AIRLOCK_TOKEN_VARIABLE)
    if token:
        c.JupyterHub.services = with_service_token(list(c.JupyterHub.services), AIRLOCK_SERVICE, token)
