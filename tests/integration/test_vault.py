"""The Vault adapter against a real OpenBao dev server: secrets, keys, isolation by policy, and failures."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import hvac  # type: ignore[import-untyped]
import hvac.exceptions  # type: ignore[import-untyped]
import pytest

from tests.integration.conftest import unique
from tests.support import openbao
from tre.clients.vault import PseudonymKey, VaultClient
from tre.errors import InputError, NotFoundError, PermissionDeniedError, TemporaryError


def test_ready_and_kv_mounts_are_idempotent(vault: VaultClient, bao: openbao.OpenBaoServer, root: Any) -> None:
    vault.check_ready()
    vault.ensure_kv()
    vault.ensure_kv()
    mount = unique("kv")
    with VaultClient(bao.url, bao.root_token, mount=mount) as other:
        other.ensure_kv()
        other.ensure_kv()
        other.write_project_secret("alpha", "db", {"password": "pw"})
        assert other.read_project_secret("alpha", "db") == {"password": "pw"}
    engine = root.sys.list_mounted_secrets_engines()["data"][f"{mount}/"]
    assert (engine["type"], engine["options"]["version"]) == ("kv", "2")


def test_a_kv_version_1_mount_is_refused(bao: openbao.OpenBaoServer, root: Any) -> None:
    mount = unique("kv1")
    root.sys.enable_secrets_engine("kv", path=mount, options={"version": "1"})
    with (
        VaultClient(bao.url, bao.root_token, mount=mount) as client,
        pytest.raises(InputError, match="not KV version 2"),
    ):
        client.ensure_kv()


def test_project_secrets_round_trip(vault: VaultClient) -> None:
    project = unique("p")
    vault.write_project_secret(project, "db", {"user": "reader", "password": "s3cret"})
    assert vault.read_project_secret(project, "db") == {"user": "reader", "password": "s3cret"}
    vault.write_project_secret(project, "db", {"user": "reader", "password": "rotated"})
    assert vault.read_project_secret(project, "db") == {"user": "reader", "password": "rotated"}


def test_a_missing_secret_is_not_found(vault: VaultClient) -> None:
    project = unique("p")
    with pytest.raises(NotFoundError, match=f"no secret db of project {project}"):
        vault.read_project_secret(project, "db")
    vault.write_project_secret(project, "db", {"a": "b"})
    with pytest.raises(NotFoundError):
        vault.read_project_secret(project, "other")


def test_the_key_is_created_once_and_never_shown(vault: VaultClient, root: Any) -> None:
    project = unique("p")
    first = vault.pseudonymisation_key(project)
    assert first.version == 1
    assert len(first.key) == 32
    assert vault.pseudonymisation_key(project) == first
    assert vault.pseudonymisation_key(project, version=1) == first
    for shown in (repr(first), str(first)):
        assert first.key.hex() not in shown
        assert repr(first.key) not in shown
        assert "key=" not in shown
    stored = root.secrets.kv.v2.read_secret_version(
        path=f"pseudonymisation/{project}", mount_point="secret", raise_on_deleted_version=True
    )
    assert stored["data"]["metadata"]["version"] == 1
    with pytest.raises(NotFoundError):  # the key is not kept where the project's own token can read
        vault.read_project_secret(project, "pseudonymisation")


def test_rotation_adds_a_version_and_keeps_the_old_one(vault: VaultClient) -> None:
    project = unique("p")
    old = vault.pseudonymisation_key(project)
    new = vault.rotate_pseudonymisation_key(project)
    assert new.version == old.version + 1
    assert new.key != old.key
    assert len(new.key) == 32
    assert vault.pseudonymisation_key(project) == new
    assert vault.pseudonymisation_key(project, version=old.version) == old
    with pytest.raises(NotFoundError):
        vault.pseudonymisation_key(project, version=99)
    with pytest.raises(InputError):
        vault.pseudonymisation_key(project, version=0)


def test_a_key_version_is_never_created_by_asking_for_it(vault: VaultClient) -> None:
    project = unique("p")
    with pytest.raises(NotFoundError):
        vault.pseudonymisation_key(project, version=1)
    assert vault.pseudonymisation_key(project).version == 1


def race_for_key(bao: openbao.OpenBaoServer, project: str, workers: int) -> list[PseudonymKey | BaseException]:
    """Ask for a project's key from ``workers`` threads, each with its own client, released at once."""
    barrier = threading.Barrier(workers)
    results: list[PseudonymKey | BaseException] = []

    def first_call() -> None:
        with VaultClient(bao.url, bao.root_token) as client:
            barrier.wait()
            try:
                results.append(client.pseudonymisation_key(project))
            except BaseException as exc:
                results.append(exc)

    threads = [threading.Thread(target=first_call) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_concurrent_first_calls_agree_on_one_key(bao: openbao.OpenBaoServer, root: Any) -> None:
    for _ in range(3):
        project = unique("race")
        results = race_for_key(bao, project, workers=8)
        assert len(results) == 8
        keys = {(result.version, result.key) for result in results if isinstance(result, PseudonymKey)}
        assert len(keys) == 1, results
        assert all(isinstance(result, PseudonymKey) for result in results), results
        metadata = root.secrets.kv.v2.read_secret_metadata(path=f"pseudonymisation/{project}", mount_point="secret")
        assert metadata["data"]["current_version"] == 1


def test_a_project_token_reads_only_its_own_secrets(vault: VaultClient, bao: openbao.OpenBaoServer, root: Any) -> None:
    alpha, beta = unique("alpha"), unique("beta")
    vault.write_project_secret(alpha, "db", {"password": "alpha-pw"})
    vault.write_project_secret(beta, "db", {"password": "beta-pw"})
    vault.pseudonymisation_key(alpha)
    token = vault.create_project_token(alpha)
    looked_up = root.auth.token.lookup(token)["data"]
    assert looked_up["policies"] == [f"tre-project-{alpha}"]
    assert looked_up["renewable"] is False
    assert 0 < looked_up["ttl"] <= 3600

    with VaultClient(bao.url, token) as scoped:
        assert token not in repr(scoped)
        assert scoped.read_project_secret(alpha, "db") == {"password": "alpha-pw"}
        denied: list[Callable[[], object]] = [
            lambda: scoped.read_project_secret(beta, "db"),
            lambda: scoped.pseudonymisation_key(alpha),
            lambda: scoped.pseudonymisation_key(alpha, version=1),
            lambda: scoped.write_project_secret(alpha, "db", {"password": "overwritten"}),
            lambda: scoped.write_project_secret(alpha, "new", {"x": "y"}),
            lambda: scoped.ensure_project_policy(beta),
            lambda: scoped.create_project_token(beta),
        ]
        for attempt in denied:
            with pytest.raises(PermissionDeniedError) as caught:
                attempt()
            assert token not in str(caught.value)
            assert "pw" not in str(caught.value)
    assert vault.read_project_secret(alpha, "db") == {"password": "alpha-pw"}


def test_the_project_policy_grants_read_and_list_on_its_paths_only(vault: VaultClient, root: Any) -> None:
    project = unique("p")
    name = vault.ensure_project_policy(project)
    assert vault.ensure_project_policy(project) == name == f"tre-project-{project}"
    document = root.sys.read_acl_policy(name)["data"]["policy"]
    paths = [line for line in document.splitlines() if line.startswith("path ")]
    assert paths == [
        f'path "secret/data/projects/{project}/*" {{',
        f'path "secret/metadata/projects/{project}/*" {{',
    ]
    assert document.count('capabilities = ["read", "list"]') == 2


def test_delete_project_removes_access_and_secrets_but_keeps_the_key(
    vault: VaultClient, bao: openbao.OpenBaoServer, root: Any
) -> None:
    project, other = unique("gone"), unique("kept")
    vault.write_project_secret(project, "db", {"password": "pw"})
    vault.write_project_secret(project, "api", {"token": "t"})
    vault.write_project_secret(other, "db", {"password": "other"})
    key = vault.pseudonymisation_key(project)
    token = vault.create_project_token(project)

    vault.delete_project(project)
    vault.delete_project(project)

    with VaultClient(bao.url, token) as scoped, pytest.raises(PermissionDeniedError):
        scoped.read_project_secret(project, "db")
    for name in ("db", "api"):
        with pytest.raises(NotFoundError):
            vault.read_project_secret(project, name)
    with pytest.raises(hvac.exceptions.InvalidPath):
        root.secrets.kv.v2.list_secrets(path=f"projects/{project}", mount_point="secret")
    assert f"tre-project-{project}" not in root.sys.list_acl_policies()["data"]["keys"]
    assert vault.pseudonymisation_key(project) == key
    assert vault.read_project_secret(other, "db") == {"password": "other"}


BAD_PROJECTS = ["../beta", "beta/x", "A", "", "a" * 41, "alpha\n", "-alpha", "alpha-", "al pha", "alpha/../beta"]


@pytest.mark.parametrize("project", BAD_PROJECTS)
def test_a_bad_project_name_is_refused_before_any_request(project: str) -> None:
    # Nothing listens on the port: a request would raise TemporaryError, not InputError.
    with VaultClient(f"http://127.0.0.1:{openbao.free_port()}", "token", timeout=1.0) as client:
        calls: list[Callable[[], object]] = [
            lambda: client.write_project_secret(project, "db", {"a": "b"}),
            lambda: client.read_project_secret(project, "db"),
            lambda: client.pseudonymisation_key(project),
            lambda: client.pseudonymisation_key(project, version=1),
            lambda: client.rotate_pseudonymisation_key(project),
            lambda: client.ensure_project_policy(project),
            lambda: client.create_project_token(project),
            lambda: client.delete_project(project),
        ]
        for call in calls:
            with pytest.raises(InputError, match="Project name"):
                call()


@pytest.mark.parametrize("name", ["../x", "a/b", "", "DB", "x" * 64])
def test_a_bad_secret_name_is_refused_before_any_request(name: str) -> None:
    with VaultClient(f"http://127.0.0.1:{openbao.free_port()}", "token", timeout=1.0) as client:
        with pytest.raises(InputError, match="Secret name"):
            client.read_project_secret("alpha", name)
        with pytest.raises(InputError, match="Secret name"):
            client.write_project_secret("alpha", name, {"a": "b"})


@pytest.mark.parametrize("ttl", ["", "1 h", "-1h", "1h; x", "0"])
def test_a_bad_ttl_is_refused(ttl: str) -> None:
    with (
        VaultClient(f"http://127.0.0.1:{openbao.free_port()}", "token", timeout=1.0) as client,
        pytest.raises(InputError, match="TTL"),
    ):
        client.create_project_token("alpha", ttl=ttl)


@pytest.mark.parametrize("url", ["localhost:8200", "ftp://host", "http://", "http://host:99999"])
def test_a_bad_url_is_refused(url: str) -> None:
    with pytest.raises(InputError, match="Vault URL"):
        VaultClient(url, "token")


def test_an_unreachable_vault_is_a_temporary_error() -> None:
    url = f"http://127.0.0.1:{openbao.free_port()}"
    with VaultClient(url, "hvs.do-not-show", timeout=1.0) as client:
        for call in (client.check_ready, lambda: client.read_project_secret("alpha", "db")):
            with pytest.raises(TemporaryError, match=f"Vault at {url} is unreachable .*; is it running") as caught:
                call()
            assert "do-not-show" not in str(caught.value)
            assert "\n" not in str(caught.value)


def test_a_sealed_vault_is_a_temporary_error() -> None:
    server = openbao.start_server()
    try:
        with VaultClient(server.url, server.root_token) as client:
            client.check_ready()
            client.write_project_secret("alpha", "db", {"a": "b"})
            raw = hvac.Client(url=server.url, token=server.root_token)
            raw.sys.seal()
            for call in (client.check_ready, lambda: client.read_project_secret("alpha", "db")):
                with pytest.raises(TemporaryError, match=f"Vault at {server.url} is sealed; unseal it and retry"):
                    call()
            assert server.unseal_key is not None
            raw.sys.submit_unseal_key(server.unseal_key)
            raw.adapter.close()
            client.check_ready()
            assert client.read_project_secret("alpha", "db") == {"a": "b"}
    finally:
        server.stop()
