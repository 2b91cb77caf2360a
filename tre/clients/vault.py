"""The Vault (OpenBao) adapter: project secrets, pseudonymisation keys, per-project policies and tokens.

This is the only module that imports hvac. KV layout, all in one KV version 2 engine at ``mount``::

    projects/<project>/<name>      a project's own secrets; its workspace token may read and list them
    pseudonymisation/<project>     the project's pseudonymisation key, one KV version per key version;
                                   never readable by the project, or a researcher could re-identify people
                                   by hashing candidate identifiers with it

Every ``project`` and secret ``name`` is checked to be a DNS-1123 label before a path is built, so no
argument can reach another path. Errors are mapped to :mod:`tre.errors` in one place, and no message,
log line or repr ever shows a token or a secret.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import secrets
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import hvac  # type: ignore[import-untyped]
import hvac.exceptions  # type: ignore[import-untyped]
import requests

from tre.data._keys import PseudonymKey
from tre.errors import InputError, IntegrityError, NotFoundError, PermissionDeniedError, TemporaryError
from tre.spec._common import DNS_LABEL_PATTERN

__all__ = ["KEY_BYTES", "PseudonymKey", "VaultClient"]

log = logging.getLogger(__name__)

KEY_BYTES = 32
PROJECT_NAME_MAX = 40
SECRET_NAME_MAX = 63
_LABEL = re.compile(DNS_LABEL_PATTERN)
_MOUNT = re.compile(r"[a-z0-9]([-_a-z0-9]*[a-z0-9])?")
_TTL = re.compile(r"[1-9][0-9]*[smh]?")
_KEY_FIELD = "key"


class _CasMismatchError(Exception):
    """A check-and-set write found the secret already at another version."""


def _check_label(value: str, what: str, max_length: int) -> str:
    """``value`` if it is a DNS-1123 label of at most ``max_length`` characters, else InputError."""
    if len(value) > max_length or not _LABEL.fullmatch(value):
        raise InputError(
            f"{what} {value[:80]!r} is not valid: use at most {max_length} lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return value


def _project(project: str) -> str:
    return _check_label(project, "Project name", PROJECT_NAME_MAX)


def _shown_url(url: str) -> str:
    """The URL without any user-info, for messages."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _check_url(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:
        valid = False
    if not valid:
        raise InputError("The Vault URL is not valid: use http(s)://host[:port]")
    return url


def _errors_text(exc: Any) -> str:
    """Vault's own error strings, lower-cased, for matching (never shown to people)."""
    return " ".join(str(error) for error in (getattr(exc, "errors", None) or [])).lower()


def _encode_key(key: bytes) -> dict[str, str]:
    return {_KEY_FIELD: base64.b64encode(key).decode("ascii")}


def _seconds(ttl: str) -> int:
    """A checked TTL (``900``, ``15m``, ``1h``) in seconds, as Vault reports it back."""
    units = {"s": 1, "m": 60, "h": 3600}
    return int(ttl[:-1]) * units[ttl[-1]] if ttl[-1] in units else int(ttl)


class VaultClient:
    """A Vault or OpenBao server, seen through one token and one KV version 2 mount."""

    def __init__(self, url: str, token: str, *, mount: str = "secret", timeout: float = 5.0) -> None:
        if not _MOUNT.fullmatch(mount) or len(mount) > 63:
            raise InputError(f"Vault mount {mount[:80]!r} is not valid: use lowercase letters, digits, '-' and '_'")
        self._url = _shown_url(_check_url(url))
        self._mount = mount
        self._timeout = timeout
        self._client = hvac.Client(url=url, token=token, timeout=timeout)

    def __repr__(self) -> str:
        return f"VaultClient(url={self._url!r}, mount={self._mount!r})"

    def close(self) -> None:
        """Close the HTTP session."""
        self._client.adapter.close()

    def __enter__(self) -> VaultClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # Readiness and setup

    def check_ready(self) -> None:
        """Raise TemporaryError unless Vault answers, is initialised and is unsealed."""
        with self._mapped("seal status"):
            status = self._client.sys.read_seal_status()
        if not isinstance(status, dict):
            raise self._unexpected("seal status")
        if status.get("initialized") is False:
            raise TemporaryError(f"Vault at {self._url} is not initialised; initialise and unseal it and retry")
        if status.get("sealed") is not False:
            raise TemporaryError(f"Vault at {self._url} is sealed; unseal it and retry")

    def ensure_kv(self) -> None:
        """Enable a KV version 2 engine at the mount unless one is already there."""
        if self._mount_entry() is None:
            with self._mapped(f"mount {self._mount}/"):
                try:
                    self._client.sys.enable_secrets_engine(
                        "kv", path=self._mount, options={"version": "2"}, description="TRE secrets"
                    )
                    log.info("enabled a KV version 2 engine at %s/", self._mount)
                except hvac.exceptions.InvalidRequest:
                    if self._mount_entry() is None:  # not a concurrent enable: a real refusal
                        raise
        self._check_kv2(self._mount_entry())

    def _mount_entry(self) -> dict[str, Any] | None:
        with self._mapped("the list of secrets engines"):
            response = self._client.sys.list_mounted_secrets_engines()
        mounts = response.get("data") if isinstance(response, dict) else None
        if not isinstance(mounts, dict):
            raise self._unexpected("the list of secrets engines")
        entry = mounts.get(f"{self._mount}/")
        return entry if isinstance(entry, dict) else None

    def _check_kv2(self, entry: dict[str, Any] | None) -> None:
        options = (entry or {}).get("options") or {}
        if not entry or entry.get("type") != "kv" or str(options.get("version")) != "2":
            kind = f"{(entry or {}).get('type')} version {options.get('version')}"
            raise InputError(
                f"Vault mount {self._mount}/ holds a {kind} engine, not KV version 2; choose another mount"
            )

    # Project secrets

    def write_project_secret(self, project: str, name: str, data: dict[str, str]) -> None:
        """Store ``data`` as a new version of the project's secret ``name``."""
        path = self._secret_path(project, name)
        with self._mapped(f"secret {name} of project {project}"):
            self._client.secrets.kv.v2.create_or_update_secret(path=path, secret=dict(data), mount_point=self._mount)

    def read_project_secret(self, project: str, name: str) -> dict[str, str]:
        """The latest version of the project's secret ``name``; NotFoundError if there is none."""
        what = f"secret {name} of project {project}"
        data = self._read(self._secret_path(project, name), None, what)
        return {str(key): str(value) for key, value in data.items()}

    def _secret_path(self, project: str, name: str) -> str:
        return f"projects/{_project(project)}/{_check_label(name, 'Secret name', SECRET_NAME_MAX)}"

    # Pseudonymisation keys

    def pseudonymisation_key(self, project: str, version: int | None = None) -> PseudonymKey:
        """The project's pseudonymisation key: the latest (created on first use) or a given version."""
        path = self._key_path(project)
        what = f"pseudonymisation key of project {project}"
        if version is not None:
            if version < 1:
                raise InputError(f"Key version {version} is not valid: versions start at 1")
            return self._read_key(path, version, what)
        try:
            return self._read_key(path, None, what)
        except NotFoundError:
            return self._create_key(path, what)

    def rotate_pseudonymisation_key(self, project: str) -> PseudonymKey:
        """Store a new random key as the project's latest key version and return it."""
        path = self._key_path(project)
        key = secrets.token_bytes(KEY_BYTES)
        version = self._write_key(path, key, None, f"pseudonymisation key of project {project}")
        log.info("rotated the pseudonymisation key of project %s to version %d", project, version)
        return PseudonymKey(version=version, key=key)

    def _key_path(self, project: str) -> str:
        return f"pseudonymisation/{_project(project)}"

    def _create_key(self, path: str, what: str) -> PseudonymKey:
        """Create version 1 with check-and-set, so concurrent first calls agree on one key."""
        key = secrets.token_bytes(KEY_BYTES)
        try:
            version = self._write_key(path, key, 0, what)
        except _CasMismatchError:
            return self._read_key(path, None, what)  # another caller created it first
        log.info("created the %s", what)
        return PseudonymKey(version=version, key=key)

    def _write_key(self, path: str, key: bytes, cas: int | None, what: str) -> int:
        with self._mapped(what):
            try:
                response = self._client.secrets.kv.v2.create_or_update_secret(
                    path=path, secret=_encode_key(key), cas=cas, mount_point=self._mount
                )
            except hvac.exceptions.InvalidRequest as exc:
                if cas is not None and "check-and-set" in _errors_text(exc):
                    raise _CasMismatchError from None
                raise
        return self._version(self._walk(response, what, "data"), what)

    def _read_key(self, path: str, version: int | None, what: str) -> PseudonymKey:
        response = self._read_response(path, version, what)
        data = self._walk(response, what, "data", "data")
        version_read = self._version(self._walk(response, what, "data", "metadata"), what)
        try:
            key = base64.b64decode(str(data.get(_KEY_FIELD)), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != KEY_BYTES:
            raise IntegrityError(
                f"The stored {what} (version {version_read}) is malformed; it is not {KEY_BYTES} bytes"
            )
        return PseudonymKey(version=version_read, key=key)

    # Policies, tokens and removal

    def ensure_project_policy(self, project: str) -> str:
        """Write the ACL policy that lets a token read and list only the project's secrets; return its name."""
        name = self._policy_name(project)
        document = "\n".join(
            f'path "{self._mount}/{kind}/projects/{project}/*" {{\n  capabilities = ["read", "list"]\n}}\n'
            for kind in ("data", "metadata")
        )
        with self._mapped(f"policy {name}"):
            self._client.sys.create_or_update_acl_policy(name=name, policy=document)
        return name

    def create_project_token(self, project: str, ttl: str = "1h") -> str:
        """A non-renewable token with only the project's policy (not even ``default``), for its workspace."""
        if not _TTL.fullmatch(ttl):
            raise InputError(f"Token TTL {ttl[:40]!r} is not valid: use a number of seconds, or e.g. 30m or 8h")
        policy = self.ensure_project_policy(project)
        with self._mapped(f"token creation for project {project}"):
            response = self._client.auth.token.create(
                policies=[policy],
                no_default_policy=True,
                renewable=False,
                ttl=ttl,
                display_name=policy,
                meta={"project": project},
            )
        token = self._walk(response, f"token creation for project {project}", "auth").get("client_token")
        if not isinstance(token, str) or not token:
            raise self._unexpected(f"token creation for project {project}")
        log.info("created a %s token for project %s", ttl, project)
        return token

    def delete_project(self, project: str) -> None:
        """Delete the project's policy and every secret under ``projects/<project>/``, all versions.

        The policy goes first, so tokens already issued lose all access at once (they are not revoked; they
        expire with their TTL, and would regain access if a project of the same name got the policy again).
        The pseudonymisation key is kept on purpose: it is needed to reproduce the project's extracts, and
        the project could never read it anyway.
        """
        name = self._policy_name(project)
        with self._mapped(f"policy {name}"):
            self._client.sys.delete_acl_policy(name=name)
        self._delete_tree(f"projects/{project}/", f"secrets of project {project}")
        log.info("deleted the policy and secrets of project %s", project)

    def _policy_name(self, project: str) -> str:
        return f"tre-project-{_project(project)}"

    def _delete_tree(self, prefix: str, what: str) -> None:
        try:
            with self._mapped(what):
                response = self._client.secrets.kv.v2.list_secrets(path=prefix, mount_point=self._mount)
        except NotFoundError:
            return
        keys = self._walk(response, what, "data").get("keys") or []
        for key in (str(key) for key in keys):
            if key.endswith("/"):
                self._delete_tree(prefix + key, what)
            else:
                with self._mapped(what):
                    self._client.secrets.kv.v2.delete_metadata_and_all_versions(
                        path=prefix + key, mount_point=self._mount
                    )

    # Kubernetes auth: a role per project, bound to its workspace ServiceAccount

    def ensure_kubernetes_role(
        self,
        project: str,
        namespace: str,
        service_account: str,
        *,
        mount: str = "kubernetes",
        kubernetes_host: str | None = None,
        kubernetes_ca_cert: str | None = None,
        ttl: str = "15m",
        max_ttl: str = "1h",
    ) -> bool:
        """Let pods running as ``service_account`` in ``namespace`` log in with the project's policy only.

        Enables the kubernetes auth method at ``mount`` when missing, and configures it when it has no
        configuration and ``kubernetes_host`` is given (with ``kubernetes_ca_cert``; without one, Vault uses
        its own pod's CA and token, as when it runs in the cluster). Writes the role only when it differs:
        returns True if anything changed.
        """
        _project(project)
        _check_label(namespace, "Namespace", SECRET_NAME_MAX)
        _check_label(service_account, "Service account name", SECRET_NAME_MAX)
        for value, what in ((ttl, "Token TTL"), (max_ttl, "Token maximum TTL")):
            if not _TTL.fullmatch(value):
                raise InputError(f"{what} {value[:40]!r} is not valid: use a number of seconds, or e.g. 15m or 1h")
        changed = self._ensure_kubernetes_auth(mount, kubernetes_host, kubernetes_ca_cert)
        policy = self.ensure_project_policy(project)
        wanted: dict[str, Any] = {
            "bound_service_account_names": [service_account],
            "bound_service_account_namespaces": [namespace],
            "token_policies": [policy],
            "token_no_default_policy": True,
            "token_ttl": _seconds(ttl),
            "token_max_ttl": _seconds(max_ttl),
        }
        current = self._kubernetes_role(mount, policy)
        if current is not None and all(current.get(key) == value for key, value in wanted.items()):
            return changed
        with self._mapped(f"Kubernetes auth role {policy}"):
            self._client.write_data(f"auth/{mount}/role/{policy}", data=wanted)
        log.info("wrote the Kubernetes auth role of project %s (%s/%s)", project, namespace, service_account)
        return True

    def remove_kubernetes_role(self, project: str, *, mount: str = "kubernetes", revoke_policy: bool = True) -> bool:
        """Delete the project's Kubernetes auth role; True if there was one. Idempotent.

        With ``revoke_policy`` (the default) the project's policy goes too, so tokens the role already issued
        lose all access at once (Vault checks policies on every request); ``ensure_kubernetes_role`` writes it
        again. The project's secrets and pseudonymisation key are kept.
        """
        name = self._policy_name(project)
        removed = False
        if self._mount_type(mount) == "kubernetes" and self._kubernetes_role(mount, name) is not None:
            with self._mapped(f"Kubernetes auth role {name}"):
                self._client.auth.kubernetes.delete_role(name, mount_point=mount)
            removed = True
        if revoke_policy and self._policy_exists(name):
            with self._mapped(f"policy {name}"):
                self._client.sys.delete_acl_policy(name=name)
            removed = True
        if removed:
            log.info("removed the Kubernetes auth role and policy of project %s", project)
        return removed

    def _ensure_kubernetes_auth(self, mount: str, host: str | None, ca_cert: str | None) -> bool:
        if not _MOUNT.fullmatch(mount) or len(mount) > 63:
            raise InputError(f"Vault auth mount {mount[:80]!r} is not valid: use lowercase letters, digits, '-', '_'")
        kind = self._mount_type(mount)
        if kind not in (None, "kubernetes"):
            raise InputError(f"Vault auth mount {mount}/ holds a {kind} auth method, not kubernetes; choose another")
        changed = False
        if kind is None:
            with self._mapped(f"auth mount {mount}/"):
                try:
                    self._client.sys.enable_auth_method("kubernetes", path=mount, description="TRE workspaces")
                    changed = True
                except hvac.exceptions.InvalidRequest:
                    if self._mount_type(mount) != "kubernetes":  # not a concurrent enable: a real refusal
                        raise
        if host is not None and not self._kubernetes_configured(mount):
            with self._mapped(f"configuration of auth mount {mount}/"):
                self._client.auth.kubernetes.configure(
                    kubernetes_host=host,
                    kubernetes_ca_cert=ca_cert,
                    disable_local_ca_jwt=ca_cert is not None,
                    mount_point=mount,
                )
            changed = True
        return changed

    def _mount_type(self, mount: str) -> str | None:
        with self._mapped("the list of auth methods"):
            response = self._client.sys.list_auth_methods()
        methods = response.get("data") if isinstance(response, dict) else None
        if not isinstance(methods, dict):
            raise self._unexpected("the list of auth methods")
        entry = methods.get(f"{mount}/")
        return str(entry.get("type")) if isinstance(entry, dict) else None

    def _kubernetes_configured(self, mount: str) -> bool:
        try:
            with self._mapped(f"configuration of auth mount {mount}/"):
                config = self._client.auth.kubernetes.read_config(mount_point=mount)
        except NotFoundError:
            return False
        return bool(isinstance(config, dict) and config.get("kubernetes_host"))

    def _kubernetes_role(self, mount: str, name: str) -> dict[str, Any] | None:
        try:
            with self._mapped(f"Kubernetes auth role {name}"):
                response = self._client.auth.kubernetes.read_role(name, mount_point=mount)
        except NotFoundError:
            return None
        return response if isinstance(response, dict) else None

    def _policy_exists(self, name: str) -> bool:
        try:
            with self._mapped(f"policy {name}"):
                self._client.sys.read_acl_policy(name)
        except NotFoundError:
            return False
        return True

    # Reading, responses and errors

    def _read(self, path: str, version: int | None, what: str) -> dict[str, Any]:
        return self._walk(self._read_response(path, version, what), what, "data", "data")

    def _read_response(self, path: str, version: int | None, what: str) -> Any:
        with self._mapped(what):
            return self._client.secrets.kv.v2.read_secret_version(
                path=path, version=version, mount_point=self._mount, raise_on_deleted_version=True
            )

    def _walk(self, response: Any, what: str, *keys: str) -> dict[str, Any]:
        """``response[keys[0]][keys[1]]...``, which must be a mapping."""
        node = response
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            raise self._unexpected(what)
        return node

    def _version(self, metadata: dict[str, Any], what: str) -> int:
        version = metadata.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise self._unexpected(what)
        return version

    def _unexpected(self, what: str) -> IntegrityError:
        return IntegrityError(f"Vault at {self._url} sent an unexpected answer about {what}; is it Vault or OpenBao?")

    @contextmanager
    def _mapped(self, what: str) -> Iterator[None]:
        """Turn hvac and requests errors about ``what`` into TRE errors with one-line messages."""
        try:
            yield
        except requests.exceptions.Timeout as exc:
            raise TemporaryError(
                f"Vault at {self._url} is unreachable (no answer within {self._timeout:g}s); is it running?"
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise TemporaryError(f"Vault at {self._url} is unreachable (connection failed); is it running?") from exc
        except hvac.exceptions.VaultDown as exc:
            if "sealed" in _errors_text(exc):
                raise TemporaryError(f"Vault at {self._url} is sealed; unseal it and retry") from exc
            raise TemporaryError(f"Vault at {self._url} is unavailable (standby or starting); retry later") from exc
        except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized) as exc:
            raise PermissionDeniedError(
                f"Vault denied access to {what}; its policies do not allow it, or the token is invalid or expired"
            ) from exc
        except hvac.exceptions.InvalidPath as exc:
            raise NotFoundError(f"Vault has no {what}") from exc
        except (hvac.exceptions.InvalidRequest, hvac.exceptions.ParamValidationError) as exc:
            raise InputError(f"Vault refused the request about {what} as invalid") from exc
        except hvac.exceptions.VaultError as exc:
            raise TemporaryError(f"Vault at {self._url} failed on {what} ({type(exc).__name__}); retry later") from exc
