"""``tre up``: start the whole embedded TRE in the foreground, and stop all of it cleanly.

Order: lock the home and clear a killed run's leftovers → open (and migrate) the store, refusing a newer
one → choose the sandbox mode (root or rootless) and check this machine can do it → check every port → stop
any workspace sandbox a killed run left → prepare the host for sandboxes → OpenBao (initialise/unseal) → demo
seed → airlock API → JupyterHub (with its proxy) → first controller pass (provisions approved projects) →
endpoints.json → wait. Stopping goes in reverse. A child that dies stops the whole TRE with a message naming
its log.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import sys
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from tre.clients.vault import VaultClient
from tre.data import EngineLimits
from tre.data.provision import DataServices
from tre.embedded._hub import CONTROLLER_SERVICE, HubSettings, hub_child
from tre.embedded._layout import Layout, Ports, check_ports_free, hub_secrets, write_private_json
from tre.embedded._local_controller import HubServers, LocalController, run_forever
from tre.embedded._openbao import openbao_child, prepare_openbao
from tre.embedded._pids import exclusive, record, stop_leftovers
from tre.embedded._process import Child, http_ok
from tre.embedded._seed import DemoUser, seed_demo
from tre.errors import InputError, TemporaryError
from tre.services import utcnow
from tre.storage import ObjectStore, open_object_store
from tre.store import Store, sqlite_url
from tre.workspaces._host import SandboxHost, SandboxMode
from tre.workspaces.sandbox import (
    check_sandbox_support,
    clear_leftovers,
    prepare_host,
    resolve_mode,
    teardown_host,
)

log = logging.getLogger(__name__)
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class UpOptions:
    home: Path
    ports: Ports = field(default_factory=Ports)
    demo: bool = False
    public_ip: str = "127.0.0.1"
    controller_interval: float = 30.0
    sandbox_pool: str | None = None
    sandbox_mode: str = "auto"


@dataclass
class _Running:
    layout: Layout
    children: list[Child] = field(default_factory=list)

    def start(self, child: Child) -> Child:
        """Start the child, owned from now on (stopped with the rest), and record its pid for leftover clean-up."""
        self.children.append(child)
        child.start()
        record(self.layout, {c.name: c.process.pid for c in self.children if c.process is not None})
        return child

    def stop_all(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.layout.pids.unlink(missing_ok=True)

    def dead(self) -> Child | None:
        return next((c for c in self.children if not c.running()), None)


def up(options: UpOptions, stop: threading.Event, on_ready: Callable[[dict[str, Any]], None]) -> None:
    """Run the TRE until ``stop`` is set; ``on_ready`` gets the endpoints once everything answers."""
    layout = Layout(options.home.resolve())
    layout.create()
    with exclusive(layout), ExitStack() as cleanup:
        for name in stop_leftovers(layout):
            log.warning("stopped %s left running by an earlier 'tre up' that was killed", name)
        store = Store(sqlite_url(layout.home / "tre.db"))
        cleanup.callback(store.close)
        store.migrate()
        host = sandbox_host(options, layout)
        check_sandbox_support(host.mode).require()
        check_ports_free(options.ports)
        for sandbox_id in clear_leftovers(host):
            log.warning("removed workspace sandbox %s left by an earlier 'tre up' that was killed", sandbox_id)
        prepare_host(host)
        cleanup.callback(teardown_host, host)
        running = _Running(layout)
        cleanup.callback(running.stop_all)
        cleanup.callback(layout.endpoints.unlink, missing_ok=True)
        endpoints = _start(options, layout, store, running, stop, host)
        on_ready(endpoints)
        while not stop.wait(0.5):
            dead = running.dead()
            if dead is not None:
                raise TemporaryError(f"{dead.name} stopped unexpectedly; see {dead.log_path}")


def sandbox_host(options: UpOptions, layout: Layout) -> SandboxHost:
    """The workspace sandboxes' shared settings, in the chosen mode; their state lives in the home. A non-default
    pool also gets its own nftables table and interface prefix, so two TREs on one machine never share them."""
    state_dir = layout.workspaces / "sandbox"
    mode = resolve_mode(options.sandbox_mode)
    if not options.sandbox_pool:
        return SandboxHost(state_dir=state_dir, mode=mode)
    try:
        pool = IPv4Network(options.sandbox_pool)
    except ValueError as error:
        raise InputError(f"--sandbox-pool {options.sandbox_pool}: not an IPv4 network ({error})") from None
    tag = hashlib.sha256(str(pool).encode()).hexdigest()[:6]
    return SandboxHost(pool=pool, table=f"tre_sandbox_{tag}", prefix=f"tw{tag}", state_dir=state_dir, mode=mode)


def _start(
    options: UpOptions, layout: Layout, store: Store, running: _Running, stop: threading.Event, host: SandboxHost
) -> dict[str, Any]:
    hub_address = str(host.hub_address)
    objects = open_object_store((layout.home / "objects").as_uri())
    ports = options.ports
    workspace_listener = hub_address if host.mode is SandboxMode.ROOT else None  # rootless: 127.0.0.1 already
    bao = running.start(openbao_child(layout, ports.vault, ports.vault_cluster, workspace_listener))
    vault_url = prepare_openbao(bao, layout, ports.vault)
    users = seed_demo(layout, store, objects, now=utcnow()) if options.demo else []
    env = _environment(layout, vault_url)
    _start_airlock(options, layout, env, running, hub_address)
    secrets = hub_secrets(layout)
    _start_hub(options, layout, store, env, running, host)
    hub = HubServers(f"http://{hub_address}:{options.ports.hub_api}/hub/api", secrets["controller_service_token"])
    controller = LocalController(store, objects, lambda: _data_services(layout, vault_url, objects), hub)
    controller.run_once()
    worker = threading.Thread(
        target=run_forever, args=(controller, stop, options.controller_interval), name="controller", daemon=True
    )
    worker.start()
    endpoints = _endpoints(options, vault_url, users, host)
    write_private_json(layout.endpoints, endpoints)
    return endpoints


def _environment(layout: Layout, vault_url: str) -> dict[str, str]:
    """What the children need, and nothing else (no inherited secrets)."""
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "HOME", "USER", "LOGNAME")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "/usr/bin:/bin")])
    env.update(
        TRE_HOME=str(layout.home),
        TRE_VAULT_ADDR=vault_url,
        TRE_VAULT_TOKEN_FILE=str(layout.vault_token),
    )
    return env


def _start_airlock(
    options: UpOptions, layout: Layout, env: dict[str, str], running: _Running, hub_address: str
) -> None:
    """The airlock listens on the sandboxes' hub address only: the hub's proxy and workspaces reach it there."""
    hub_api = f"http://{hub_address}:{options.ports.hub_api}/hub/api"
    argv = [sys.executable, "-m", "tre.embedded.airlock_server", "--host", hub_address]
    argv += ["--port", str(options.ports.airlock), "--hub-api", hub_api]
    child = running.start(Child("airlock API", argv, layout.logs / "airlock.log", env=env))
    child.wait_ready(http_ok(f"http://{hub_address}:{options.ports.airlock}/healthz"), START_TIMEOUT)


def _start_hub(
    options: UpOptions, layout: Layout, store: Store, env: dict[str, str], running: _Running, host: SandboxHost
) -> None:
    ports, hub_address = options.ports, str(host.hub_address)
    spawner = (
        ("sandbox_mode", host.mode.value),
        ("workspace_root", str(layout.workspaces)),
        ("sandbox_pool", str(host.pool)),
        ("sandbox_table", host.table),
        ("sandbox_prefix", host.prefix),
        ("sandbox_state_dir", str(host.state_dir)),
        ("allowed_ports", [ports.airlock, ports.vault]),
        ("read_only_paths", [_package_directory()]),
        ("vault_addr", f"http://{hub_address}:{ports.vault}"),
        ("gate_check_interval", options.controller_interval),
    )
    settings = HubSettings(
        layout, ports, store.url, hub_address=hub_address, public_ip=options.public_ip, spawner_config=spawner
    )
    child = running.start(hub_child(settings, env))
    child.wait_ready(http_ok(f"http://{hub_address}:{ports.hub_api}/hub/health"), START_TIMEOUT)
    child.wait_ready(http_ok(f"http://127.0.0.1:{options.ports.hub}/hub/health"), START_TIMEOUT)


def _package_directory() -> str:
    """The ``tre`` package's own directory, so ``tre airlock`` works in workspaces of a source checkout
    (only the package: the checkout may hold a TRE home with secrets)."""
    return str(Path(__file__).resolve().parent.parent)


def _data_services(layout: Layout, vault_url: str, objects: ObjectStore) -> DataServices:
    vault = VaultClient(vault_url, layout.vault_token.read_text(encoding="utf-8").strip())
    return DataServices(
        objects=objects,
        keys=vault,
        work_root=layout.home / "work",
        open_source_store=lambda bucket: open_object_store(f"s3://{bucket}"),
        limits=EngineLimits(),
    )


def _endpoints(options: UpOptions, vault_url: str, users: list[DemoUser], host: SandboxHost) -> dict[str, Any]:
    hub_url, hub_address = f"http://{_shown_host(options.public_ip)}:{options.ports.hub}", host.hub_address
    document: dict[str, Any] = {
        "hub": f"{hub_url}/hub/",
        "airlock": f"{hub_url}/services/airlock/api/v1/airlock",
        "airlockDirect": f"http://{hub_address}:{options.ports.airlock}/api/v1/airlock",
        "hubApi": f"http://{hub_address}:{options.ports.hub_api}/hub/api",
        "vault": vault_url,
        "controllerService": CONTROLLER_SERVICE,
        "sandboxMode": host.mode.value,
        "startedAt": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if users:
        document["demoUsers"] = [{"name": u.name, "roles": list(u.roles), "token": u.token} for u in users]
    return document


def _shown_host(ip: str) -> str:
    return "127.0.0.1" if ip in ("0.0.0.0", "") else ip  # noqa: S104 - shown, not bound
