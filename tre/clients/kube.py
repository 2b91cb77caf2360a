"""The Kubernetes adapter: our small ``KubeClient`` protocol, and its implementation on the official client.

This is the only module that imports ``kubernetes``. Objects are plain dicts; every call names one by apiVersion,
kind, namespace and name. Writes are server-side apply with the one field manager the client was made with
(``force`` only where the caller owns the object outright), JSON merge patches (for the finalizer, with a
``resourceVersion`` precondition), creates (for Events) and deletes.

API errors reach callers as :mod:`tre.errors`, mapped in one place (:func:`_mapped_error`)::

    404   get -> None; delete -> False; apply, patch, create -> NotFoundError (e.g. the namespace is missing)
    409   KubeConflictError (a ConflictError): stale resourceVersion, field-manager conflict, already exists;
          re-read and retry
    410   WatchExpiredError (a TemporaryError) from watch: list again and watch from the new resourceVersion
    400, 422  InputError: the API server refused the object as invalid
    401   AuthenticationError; 403 PermissionDeniedError (the controller's RBAC does not allow it)
    429, 5xx, timeouts, refused connections   TemporaryError (``retry_after`` from a Retry-After header)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import urllib3
import yaml
from kubernetes import config as kube_config  # type: ignore[import-untyped]
from kubernetes.client import ApiClient, Configuration  # type: ignore[import-untyped]
from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped]

from tre.errors import (
    AuthenticationError,
    ConflictError,
    InputError,
    NotFoundError,
    PermissionDeniedError,
    TemporaryError,
    TreError,
)

__all__ = [
    "KNOWN_RESOURCES",
    "KubeClient",
    "KubeConflictError",
    "KubernetesClient",
    "ResourceInfo",
    "WatchEvent",
    "WatchExpiredError",
    "label_selector",
]

APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
LIST_PAGE = 500
MESSAGE_LIMIT = 300


class KubeConflictError(ConflictError):
    """409 from the API server: re-read the object and try again."""


class WatchExpiredError(TemporaryError):
    """410 Gone: the watch's resourceVersion is too old; list again, then watch from the list's version."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after=0.0)


@dataclass(frozen=True)
class WatchEvent:
    """One watch event: ADDED, MODIFIED, DELETED or BOOKMARK, with the object as the server sent it."""

    type: str
    object: dict[str, Any]


@dataclass(frozen=True)
class ResourceInfo:
    """How a kind is reached over HTTP: its plural resource name, and whether it lives in a namespace."""

    plural: str
    namespaced: bool = True
    subresources: frozenset[str] = field(default_factory=frozenset)


KNOWN_RESOURCES: dict[tuple[str, str], ResourceInfo] = {
    ("v1", "Namespace"): ResourceInfo("namespaces", namespaced=False, subresources=frozenset({"status"})),
    ("v1", "ConfigMap"): ResourceInfo("configmaps"),
    ("v1", "ServiceAccount"): ResourceInfo("serviceaccounts"),
    ("v1", "PersistentVolumeClaim"): ResourceInfo("persistentvolumeclaims", subresources=frozenset({"status"})),
    ("v1", "Pod"): ResourceInfo("pods", subresources=frozenset({"status"})),
    ("v1", "ResourceQuota"): ResourceInfo("resourcequotas", subresources=frozenset({"status"})),
    ("v1", "LimitRange"): ResourceInfo("limitranges"),
    ("v1", "Event"): ResourceInfo("events"),
    ("events.k8s.io/v1", "Event"): ResourceInfo("events"),
    ("networking.k8s.io/v1", "NetworkPolicy"): ResourceInfo("networkpolicies"),
    ("batch/v1", "Job"): ResourceInfo("jobs", subresources=frozenset({"status"})),
    ("rbac.authorization.k8s.io/v1", "Role"): ResourceInfo("roles"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ResourceInfo("rolebindings"),
    ("tre.dev/v1alpha1", "Project"): ResourceInfo("projects", namespaced=False, subresources=frozenset({"status"})),
}


def label_selector(labels: Mapping[str, str] | None) -> str:
    """``{"a": "1", "b": "2"}`` as the API's equality selector ``a=1,b=2``."""
    return ",".join(f"{key}={value}" for key, value in sorted((labels or {}).items()))


class KubeClient(Protocol):
    """What the controller needs from a Kubernetes API server, and nothing more."""

    @property
    def field_manager(self) -> str: ...

    def apply(self, obj: Mapping[str, Any], *, force: bool = False, subresource: str | None = None) -> dict[str, Any]:
        """Server-side apply ``obj`` as this client's field manager; the object as stored afterwards."""
        ...

    def patch(
        self, api_version: str, kind: str, name: str, patch: Mapping[str, Any], *, namespace: str | None = None
    ) -> dict[str, Any]:
        """A JSON merge patch; a ``metadata.resourceVersion`` in it is a precondition (409 when stale)."""
        ...

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create a new object (``metadata.generateName`` allowed); 409 if the name is taken."""
        ...

    def get(self, api_version: str, kind: str, name: str, *, namespace: str | None = None) -> dict[str, Any] | None:
        """The object, or None if there is none."""
        ...

    def delete(
        self, api_version: str, kind: str, name: str, *, namespace: str | None = None, propagation: str = "Background"
    ) -> bool:
        """Ask for the object's deletion; False if it was already gone."""
        ...

    def list(
        self, api_version: str, kind: str, *, namespace: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Every object of a kind carrying all ``labels``, in one namespace or (None) in all of them."""
        ...

    def watch(
        self,
        api_version: str,
        kind: str,
        *,
        namespace: str | None = None,
        labels: Mapping[str, str] | None = None,
        resource_version: str | None = None,
        timeout_seconds: int | None = None,
    ) -> Iterator[WatchEvent]:
        """Changes after ``resource_version`` until the server ends the stream."""
        ...


def _status_message(exc: ApiException) -> str:
    """The API server's own message from a Status body, on one line and bounded."""
    try:
        message = str(json.loads(exc.body or "{}").get("message") or exc.reason or "")
    except (ValueError, AttributeError):
        message = str(exc.reason or "")
    return " ".join(message.split())[:MESSAGE_LIMIT]


def _retry_after(exc: ApiException, default: float) -> float:
    try:
        return float((exc.headers or {}).get("Retry-After", default))
    except (TypeError, ValueError):
        return default


def _mapped_error(exc: ApiException, what: str) -> TreError:
    """One API error as a TRE error; the message names the object and quotes the server."""
    status, message = int(exc.status or 0), _status_message(exc)
    if status == 404:
        return NotFoundError(f"the Kubernetes API has no {what}: {message}")
    if status == 409:
        return KubeConflictError(f"conflict on {what}: {message}")
    if status == 410:
        return WatchExpiredError(f"the watch of {what} expired: {message}")
    if status in (400, 422):
        return InputError(f"the Kubernetes API refused {what} as invalid: {message}")
    if status == 401:
        return AuthenticationError(f"the Kubernetes API refused the controller's credentials for {what}: {message}")
    if status == 403:
        return PermissionDeniedError(f"the controller may not touch {what} (check its RBAC): {message}")
    if status == 429 or status >= 500 or status == 0:
        busy = f"the Kubernetes API is busy or failing on {what} ({status}): {message}"
        return TemporaryError(busy, retry_after=_retry_after(exc, 1.0))
    return TemporaryError(f"the Kubernetes API answered {status} on {what}: {message}")


def _describe(api_version: str, kind: str, name: str | None, namespace: str | None) -> str:
    where = f"{namespace}/" if namespace else ""
    return f"{kind} {where}{name}" if name else f"{kind} ({api_version})"


class KubernetesClient:
    """``KubeClient`` over HTTP with the official client's configuration, TLS and authentication."""

    def __init__(
        self,
        api_client: ApiClient,
        *,
        field_manager: str,
        timeout: float = 30.0,
        resources: Mapping[tuple[str, str], ResourceInfo] | None = None,
    ) -> None:
        self._api = api_client
        self._field_manager = field_manager
        self._timeout = timeout
        self._resources = {**KNOWN_RESOURCES, **(resources or {})}

    @classmethod
    def from_environment(
        cls,
        *,
        field_manager: str,
        kubeconfig: Path | None = None,
        context: str | None = None,
        timeout: float = 30.0,
        resources: Mapping[tuple[str, str], ResourceInfo] | None = None,
    ) -> KubernetesClient:
        """In-cluster credentials when running in a pod and no kubeconfig is given; else the kubeconfig."""
        configuration = Configuration()
        try:
            if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                kube_config.load_incluster_config(client_configuration=configuration)
            else:
                path = str(kubeconfig) if kubeconfig else None
                kube_config.load_kube_config(config_file=path, context=context, client_configuration=configuration)
        except (kube_config.ConfigException, OSError, TypeError, ValueError, yaml.YAMLError) as exc:
            raise InputError(f"cannot load Kubernetes credentials: {' '.join(str(exc).split())[:200]}") from exc
        configuration.retries = False  # our reconcile loop retries, with backoff
        client = ApiClient(configuration)
        return cls(client, field_manager=field_manager, timeout=timeout, resources=resources)

    @property
    def field_manager(self) -> str:
        return self._field_manager

    def close(self) -> None:
        self._api.close()

    def __repr__(self) -> str:
        return f"KubernetesClient(host={self._api.configuration.host!r}, field_manager={self._field_manager!r})"

    # Paths

    def _info(self, api_version: str, kind: str) -> ResourceInfo:
        info = self._resources.get((api_version, kind))
        if info is None:
            raise InputError(f"the controller does not know the kind {kind} ({api_version}); add it to the table")
        return info

    def _path(
        self, api_version: str, kind: str, name: str | None, namespace: str | None, subresource: str | None = None
    ) -> str:
        info = self._info(api_version, kind)
        if info.namespaced and namespace is None and name is not None:
            raise InputError(f"{kind} {name} needs a namespace")
        base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        if info.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        path = f"{base}/{info.plural}"
        if name is not None:
            path += f"/{name}"
        if subresource is not None:
            if subresource not in info.subresources:
                raise InputError(f"{kind} has no {subresource} subresource")
            path += f"/{subresource}"
        return path

    @staticmethod
    def _identity(obj: Mapping[str, Any]) -> tuple[str, str, str, str | None]:
        metadata = obj.get("metadata") or {}
        try:
            return str(obj["apiVersion"]), str(obj["kind"]), str(metadata["name"]), metadata.get("namespace")
        except KeyError as exc:
            raise InputError(f"an object without {exc.args[0]} cannot be sent to the Kubernetes API") from None

    # Requests

    def _call(
        self,
        method: str,
        path: str,
        what: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        stream: bool = False,
        timeout: float | None = None,
    ) -> Any:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            response = self._api.call_api(
                path,
                method,
                query_params=query or [],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
                _request_timeout=timeout or self._timeout,
            )
        except ApiException as exc:
            raise _mapped_error(exc, what) from exc
        except urllib3.exceptions.HTTPError as exc:
            host = self._api.configuration.host
            raise TemporaryError(f"the Kubernetes API at {host} is unreachable ({type(exc).__name__})") from exc
        if stream:
            return response
        data = response.data
        return json.loads(data) if data else {}

    def apply(self, obj: Mapping[str, Any], *, force: bool = False, subresource: str | None = None) -> dict[str, Any]:
        api_version, kind, name, namespace = self._identity(obj)
        query = [("fieldManager", self._field_manager)] + ([("force", "true")] if force else [])
        path = self._path(api_version, kind, name, namespace, subresource)
        what = _describe(api_version, kind, name, namespace)
        return dict(self._call("PATCH", path, what, query=query, body=dict(obj), content_type=APPLY_PATCH))

    def patch(
        self, api_version: str, kind: str, name: str, patch: Mapping[str, Any], *, namespace: str | None = None
    ) -> dict[str, Any]:
        path = self._path(api_version, kind, name, namespace)
        what = _describe(api_version, kind, name, namespace)
        query = [("fieldManager", self._field_manager)]
        return dict(self._call("PATCH", path, what, query=query, body=dict(patch), content_type=MERGE_PATCH))

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        metadata = obj.get("metadata") or {}
        api_version, kind = str(obj.get("apiVersion")), str(obj.get("kind"))
        namespace = metadata.get("namespace")
        path = self._path(api_version, kind, None, namespace)
        what = _describe(api_version, kind, metadata.get("name") or metadata.get("generateName"), namespace)
        query = [("fieldManager", self._field_manager)]
        return dict(self._call("POST", path, what, query=query, body=dict(obj)))

    def get(self, api_version: str, kind: str, name: str, *, namespace: str | None = None) -> dict[str, Any] | None:
        path = self._path(api_version, kind, name, namespace)
        try:
            return dict(self._call("GET", path, _describe(api_version, kind, name, namespace)))
        except NotFoundError:
            return None

    def delete(
        self, api_version: str, kind: str, name: str, *, namespace: str | None = None, propagation: str = "Background"
    ) -> bool:
        path = self._path(api_version, kind, name, namespace)
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation}
        try:
            self._call("DELETE", path, _describe(api_version, kind, name, namespace), body=body)
        except NotFoundError:
            return False
        return True

    def list(
        self, api_version: str, kind: str, *, namespace: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        path = self._path(api_version, kind, None, namespace)
        what = _describe(api_version, kind, None, namespace)
        items: list[dict[str, Any]] = []
        cursor = ""
        while True:
            query = [("labelSelector", label_selector(labels)), ("limit", str(LIST_PAGE))]
            query += [("continue", cursor)] if cursor else []
            page = self._call("GET", path, what, query=query)
            items += [{"apiVersion": api_version, "kind": kind, **item} for item in page.get("items") or []]
            cursor = str((page.get("metadata") or {}).get("continue") or "")
            if not cursor:
                return items

    def watch(
        self,
        api_version: str,
        kind: str,
        *,
        namespace: str | None = None,
        labels: Mapping[str, str] | None = None,
        resource_version: str | None = None,
        timeout_seconds: int | None = None,
    ) -> Iterator[WatchEvent]:
        path = self._path(api_version, kind, None, namespace)
        what = _describe(api_version, kind, None, namespace)
        query = [("watch", "true"), ("labelSelector", label_selector(labels)), ("allowWatchBookmarks", "true")]
        query += [("resourceVersion", resource_version)] if resource_version else []
        query += [("timeoutSeconds", str(timeout_seconds))] if timeout_seconds else []
        timeout = float(timeout_seconds + 5) if timeout_seconds else None
        response = self._call("GET", path, what, query=query, stream=True, timeout=timeout)
        try:
            yield from _watch_events(response, what)
        except urllib3.exceptions.HTTPError as exc:
            raise TemporaryError(f"the watch of {what} broke off ({type(exc).__name__})") from exc
        finally:
            response.release_conn()


def _watch_events(response: Any, what: str) -> Iterator[WatchEvent]:
    buffer = b""
    for chunk in response.stream(amt=None, decode_content=True):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield _watch_event(json.loads(line), what)
    if buffer.strip():
        yield _watch_event(json.loads(buffer), what)


def _watch_event(raw: Mapping[str, Any], what: str) -> WatchEvent:
    event_type, obj = str(raw.get("type")), dict(raw.get("object") or {})
    if event_type == "ERROR":
        exc = ApiException(status=int(obj.get("code") or 500), reason=str(obj.get("reason") or ""))
        exc.body = json.dumps(obj)
        raise _mapped_error(exc, what)
    return WatchEvent(event_type, obj)
