"""Kubernetes auth roles against a real OpenBao: bound to one ServiceAccount, the project's policy only, removable."""

from __future__ import annotations

from typing import Any

import hvac  # type: ignore[import-untyped]
import pytest

from tests.integration.conftest import unique
from tests.support import openbao
from tre.clients.vault import VaultClient
from tre.errors import InputError, PermissionDeniedError

DUMMY_CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def ensure(vault: VaultClient, project: str, mount: str, **kwargs: Any) -> bool:
    return vault.ensure_kubernetes_role(
        project, f"tre-{project}", "tre-workspace", mount=mount, kubernetes_host="https://127.0.0.1:6443",
        kubernetes_ca_cert=DUMMY_CA, **kwargs,
    )  # fmt: skip


def test_the_mount_is_enabled_and_configured_once(vault: VaultClient, root: Any) -> None:
    mount = unique("k8s")
    assert ensure(vault, unique("p"), mount) is True
    method = root.sys.list_auth_methods()["data"][f"{mount}/"]
    assert method["type"] == "kubernetes"
    config = root.auth.kubernetes.read_config(mount_point=mount)
    assert config["kubernetes_host"] == "https://127.0.0.1:6443"
    root.auth.kubernetes.configure(
        kubernetes_host="https://operator-set:6443", kubernetes_ca_cert=DUMMY_CA, disable_local_ca_jwt=True,
        mount_point=mount,
    )  # fmt: skip
    ensure(vault, unique("p"), mount)
    assert root.auth.kubernetes.read_config(mount_point=mount)["kubernetes_host"] == "https://operator-set:6443"


def test_the_role_binds_exactly_one_service_account_with_the_project_policy(vault: VaultClient, root: Any) -> None:
    mount, project = unique("k8s"), unique("alpha")
    assert ensure(vault, project, mount) is True
    role = root.auth.kubernetes.read_role(f"tre-project-{project}", mount_point=mount)
    assert role["bound_service_account_names"] == ["tre-workspace"]
    assert role["bound_service_account_namespaces"] == [f"tre-{project}"]
    assert role["token_policies"] == [f"tre-project-{project}"]
    assert role["token_no_default_policy"] is True
    assert (role["token_ttl"], role["token_max_ttl"]) == (900, 3600)
    assert f"tre-project-{project}" in root.sys.list_acl_policies()["data"]["keys"]
    assert ensure(vault, project, mount) is False  # unchanged: nothing written


def test_a_changed_binding_is_rewritten(vault: VaultClient, root: Any) -> None:
    mount, project = unique("k8s"), unique("alpha")
    ensure(vault, project, mount)
    root.write_data(
        f"auth/{mount}/role/tre-project-{project}",
        data={"bound_service_account_names": ["*"], "bound_service_account_namespaces": ["*"]},
    )
    assert ensure(vault, project, mount) is True
    role = root.auth.kubernetes.read_role(f"tre-project-{project}", mount_point=mount)
    assert (role["bound_service_account_names"], role["bound_service_account_namespaces"]) == (
        ["tre-workspace"],
        [f"tre-{project}"],
    )


def test_each_project_role_grants_only_its_own_policy(vault: VaultClient, root: Any) -> None:
    mount, alpha, beta = unique("k8s"), unique("alpha"), unique("beta")
    ensure(vault, alpha, mount)
    ensure(vault, beta, mount)
    roles = {name: root.auth.kubernetes.read_role(f"tre-project-{name}", mount_point=mount) for name in (alpha, beta)}
    assert roles[alpha]["token_policies"] == [f"tre-project-{alpha}"]
    assert roles[beta]["token_policies"] == [f"tre-project-{beta}"]
    assert roles[alpha]["bound_service_account_namespaces"] == [f"tre-{alpha}"]
    document = root.sys.read_acl_policy(f"tre-project-{alpha}")["data"]["policy"]
    assert beta not in document
    assert f"projects/{alpha}/*" in document


def test_removal_is_idempotent_and_cuts_issued_tokens_off(
    vault: VaultClient, bao: openbao.OpenBaoServer, root: Any
) -> None:
    mount, project, other = unique("k8s"), unique("gone"), unique("kept")
    ensure(vault, project, mount)
    ensure(vault, other, mount)
    vault.write_project_secret(project, "db", {"password": "pw"})
    token = vault.create_project_token(project)  # a token carrying the same policy a role login would get

    assert vault.remove_kubernetes_role(project, mount=mount) is True
    assert vault.remove_kubernetes_role(project, mount=mount) is False
    assert vault.remove_kubernetes_role(unique("never"), mount=unique("absent")) is False

    with pytest.raises(hvac.exceptions.InvalidPath):
        root.auth.kubernetes.read_role(f"tre-project-{project}", mount_point=mount)
    assert f"tre-project-{project}" not in root.sys.list_acl_policies()["data"]["keys"]
    with VaultClient(bao.url, token) as scoped, pytest.raises(PermissionDeniedError):
        scoped.read_project_secret(project, "db")
    assert vault.read_project_secret(project, "db") == {"password": "pw"}  # the data is kept
    assert root.auth.kubernetes.read_role(f"tre-project-{other}", mount_point=mount)["token_policies"] == [
        f"tre-project-{other}"
    ]
    assert ensure(vault, project, mount) is True  # access can be restored: role and policy come back
    assert f"tre-project-{project}" in root.sys.list_acl_policies()["data"]["keys"]


def test_keeping_the_policy_removes_only_the_role(vault: VaultClient, root: Any) -> None:
    mount, project = unique("k8s"), unique("p")
    ensure(vault, project, mount)
    assert vault.remove_kubernetes_role(project, mount=mount, revoke_policy=False) is True
    assert f"tre-project-{project}" in root.sys.list_acl_policies()["data"]["keys"]


def test_a_mount_holding_another_auth_method_is_refused(vault: VaultClient, root: Any) -> None:
    mount = unique("userpass")
    root.sys.enable_auth_method("userpass", path=mount)
    with pytest.raises(InputError, match="not kubernetes"):
        ensure(vault, unique("p"), mount)


@pytest.mark.parametrize(
    ("namespace", "service_account", "ttl", "match"),
    [
        ("tre-a/../b", "tre-workspace", "15m", "Namespace"),
        ("tre-a", "*", "15m", "Service account"),
        ("tre-a", "tre-workspace", "forever", "TTL"),
    ],
)
def test_bad_arguments_are_refused_first(namespace: str, service_account: str, ttl: str, match: str) -> None:
    with VaultClient(f"http://127.0.0.1:{openbao.free_port()}", "token", timeout=1.0) as client:
        with pytest.raises(InputError, match=match):
            client.ensure_kubernetes_role("alpha", namespace, service_account, ttl=ttl)
        with pytest.raises(InputError, match="Project name"):
            client.ensure_kubernetes_role("../beta", "tre-a", "tre-workspace")
        with pytest.raises(InputError, match="Project name"):
            client.remove_kubernetes_role("../beta")
