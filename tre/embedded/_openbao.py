"""The embedded OpenBao: file storage under TRE_HOME, initialised and unsealed automatically."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Callable

from tre.clients.openbao_admin import initialise_and_unseal
from tre.clients.vault import VaultClient
from tre.embedded._layout import Layout
from tre.embedded._process import Child, installed_command

START_TIMEOUT = 30.0


def config_text(layout: Layout, port: int, cluster_port: int, workspace_address: str | None = None) -> str:
    """Single-node integrated (raft) storage under TRE_HOME (OpenBao has no plain file backend); a second
    listener on the sandboxes' hub address when workspaces need their project-scoped tokens to work."""
    data = layout.vault / "data"
    extra = (
        f'listener "tcp" {{\n  address = "{workspace_address}:{port}"\n  tls_disable = true\n}}\n'
        if workspace_address
        else ""
    )
    return (
        f'storage "raft" {{\n  path = "{data}"\n  node_id = "tre"\n}}\n'
        f'listener "tcp" {{\n  address = "127.0.0.1:{port}"\n  cluster_address = "127.0.0.1:{cluster_port}"\n'
        "  tls_disable = true\n}\n"
        f"{extra}"
        f'api_addr = "http://127.0.0.1:{port}"\ncluster_addr = "http://127.0.0.1:{cluster_port}"\n'
        "ui = false\n"
    )


def openbao_child(layout: Layout, port: int, cluster_port: int, workspace_address: str | None) -> Child:
    (layout.vault / "data").mkdir(parents=True, exist_ok=True, mode=0o700)
    config = layout.vault / "config.hcl"
    config.write_text(config_text(layout, port, cluster_port, workspace_address), encoding="utf-8")
    config.chmod(0o600)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(layout.vault)}
    return Child(
        "OpenBao", [installed_command("bao"), "server", f"-config={config}"], layout.logs / "openbao.log", env=env
    )


def listening(url: str) -> Callable[[], bool]:
    """True once OpenBao answers at all: /sys/health is 501 before init and 503 while sealed."""

    def probe() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/v1/sys/health", timeout=1):  # noqa: S310 - loopback URL we built
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    return probe


def active(url: str) -> Callable[[], bool]:
    """True once this node is unsealed and the active (raft leader) node: /sys/health answers 200."""

    def probe() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/v1/sys/health", timeout=1) as response:  # noqa: S310 - loopback
                return int(response.status) == 200
        except OSError:
            return False

    return probe


def prepare_openbao(child: Child, layout: Layout, port: int) -> str:
    """Once the started child listens: initialise on first run, unseal, make sure the KV engine exists; its URL."""
    url = f"http://127.0.0.1:{port}"
    child.wait_ready(listening(url), START_TIMEOUT)
    initialise_and_unseal(url, layout.vault_keys, layout.vault_token)
    child.wait_ready(active(url), START_TIMEOUT)
    with VaultClient(url, layout.vault_token.read_text(encoding="utf-8").strip()) as vault:
        vault.check_ready()
        vault.ensure_kv()
    return url
