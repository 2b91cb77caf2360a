"""Where ``tre up`` keeps everything under ``TRE_HOME``, and the ports it listens on."""

from __future__ import annotations

import json
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tre.errors import InputError
from tre.private_files import write_private


@dataclass(frozen=True)
class Ports:
    """Loopback ports of the embedded services (the hub's public port is what people open)."""

    hub: int = 8000
    airlock: int = 8010
    vault: int = 8200
    vault_cluster: int = 8201
    hub_api: int = 8081
    proxy_api: int = 8001

    def named(self) -> dict[str, int]:
        return {
            "JupyterHub (--hub-port)": self.hub,
            "airlock API (--airlock-port)": self.airlock,
            "OpenBao (--vault-port)": self.vault,
            "OpenBao's cluster port (--vault-cluster-port)": self.vault_cluster,
            "JupyterHub's internal API (--hub-api-port)": self.hub_api,
            "the proxy's API (--proxy-api-port)": self.proxy_api,
        }


def check_ports_free(ports: Ports, host: str = "127.0.0.1") -> None:
    """InputError naming the first port already in use (or given twice), before anything starts."""
    seen: dict[int, str] = {}
    for what, port in ports.named().items():
        if port in seen:
            raise InputError(f"port {port} is given for both {seen[port]} and {what}: choose different ports")
        seen[port] = what
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                raise InputError(
                    f"port {port} for {what} is in use on {host}: stop what uses it or choose another port"
                ) from None


@dataclass(frozen=True)
class Layout:
    """Paths under the TRE home. Everything secret is mode 0600 in a 0700 directory."""

    home: Path

    @property
    def run(self) -> Path:
        return self.home / "run"

    @property
    def endpoints(self) -> Path:
        return self.run / "endpoints.json"

    @property
    def pids(self) -> Path:
        return self.run / "pids.json"

    @property
    def lock(self) -> Path:
        return self.run / "up.lock"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def vault(self) -> Path:
        return self.home / "openbao"

    @property
    def vault_keys(self) -> Path:
        return self.vault / "init.json"

    @property
    def vault_token(self) -> Path:
        return self.vault / "root-token"

    @property
    def hub(self) -> Path:
        return self.home / "hub"

    @property
    def hub_secrets(self) -> Path:
        return self.hub / "secrets.json"

    @property
    def workspaces(self) -> Path:
        return self.home / "workspaces"

    def create(self) -> None:
        for directory in (self.home, self.run, self.logs, self.vault, self.hub, self.workspaces):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)


HUB_SECRET_NAMES = ("cookie_secret", "airlock_service_token", "controller_service_token", "proxy_auth_token")


def hub_secrets(layout: Layout) -> dict[str, str]:
    """The hub's secrets, created once (random, 0600) and reused on every start so sessions survive."""
    try:
        stored: dict[str, Any] = json.loads(layout.hub_secrets.read_text(encoding="utf-8"))
    except FileNotFoundError:
        stored = {}
    except (OSError, ValueError) as exc:
        raise InputError(f"{layout.hub_secrets}: cannot read the hub's secrets ({exc})") from None
    values = {name: str(stored[name]) for name in HUB_SECRET_NAMES if isinstance(stored.get(name), str)}
    if len(values) < len(HUB_SECRET_NAMES):
        for name in HUB_SECRET_NAMES:
            values.setdefault(name, secrets.token_hex(32))
        write_private_json(layout.hub_secrets, values)
    return values


def write_private_json(path: Path, document: Any) -> None:
    """Write JSON atomically with mode 0600."""
    write_private(path, json.dumps(document, indent=2, sort_keys=True) + "\n")
