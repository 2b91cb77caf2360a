"""``tre up``: the whole TRE on one machine, in the foreground (Ctrl-C or SIGTERM stops all of it)."""

from __future__ import annotations

import logging
import signal
import threading
from enum import StrEnum
from types import FrameType
from typing import Annotated, Any

import typer

from tre.cli._context import load_settings

Port = Annotated[int, typer.Option(min=1, max=65535)]


class SandboxModeOption(StrEnum):
    auto = "auto"
    root = "root"
    rootless = "rootless"


MODE_HELP = (
    "How workspaces are isolated: root (network namespaces, veth, nftables; needs root), rootless (unprivileged "
    "user namespaces with bubblewrap and Unix sockets; not as root), or auto (root for root, else rootless)."
)


def up(
    demo: Annotated[bool, typer.Option("--demo", help="Seed a demo project, users and data (once).")] = False,
    hub_port: Port = 8000,
    airlock_port: Port = 8010,
    vault_port: Port = 8200,
    vault_cluster_port: Port = 8201,
    hub_api_port: Port = 8081,
    proxy_api_port: Port = 8001,
    public_ip: Annotated[str, typer.Option(help="Address JupyterHub listens on for people.")] = "127.0.0.1",
    controller_interval: Annotated[float, typer.Option(min=1.0, help="Seconds between controller passes.")] = 30.0,
    sandbox_pool: Annotated[
        str | None, typer.Option(help="Private IPv4 network for workspace links (default 10.213.0.0/16).")
    ] = None,
    sandbox_mode: Annotated[SandboxModeOption, typer.Option(help=MODE_HELP)] = SandboxModeOption.auto,
) -> None:
    """Start OpenBao, the airlock API, JupyterHub with sandboxed workspaces, and the controller."""
    from tre.embedded import Ports, UpOptions, run_up

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ports = Ports(
        hub=hub_port,
        airlock=airlock_port,
        vault=vault_port,
        vault_cluster=vault_cluster_port,
        hub_api=hub_api_port,
        proxy_api=proxy_api_port,
    )
    options = UpOptions(
        home=load_settings().home,
        ports=ports,
        demo=demo,
        public_ip=public_ip,
        controller_interval=controller_interval,
        sandbox_pool=sandbox_pool,
        sandbox_mode=sandbox_mode.value,
    )
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    run_up(options, stop, _announce)
    typer.echo("tre up: stopped")


MODE_LINES = {
    "root": "root mode (own network namespace, veth and firewall; one uid per workspace)",
    "rootless": "rootless mode (user and network namespaces, Unix sockets to the hub; your uid)",
}


def _announce(endpoints: dict[str, Any]) -> None:
    typer.echo(f"JupyterHub:  {endpoints['hub']}")
    typer.echo(f"Airlock API: {endpoints['airlock']}")
    typer.echo(f"Workspaces:  sandboxed, {MODE_LINES[endpoints['sandboxMode']]}")
    for user in endpoints.get("demoUsers", []):
        typer.echo(f"  demo user {user['name']:<6} ({', '.join(user['roles'])}): log in with token {user['token']}")
    typer.echo("Endpoints and tokens are in $TRE_HOME/run/endpoints.json (mode 0600). Ctrl-C stops everything.")
