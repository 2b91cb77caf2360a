"""``SandboxSpawner``: JupyterHub starts each researcher's server inside their project's sandbox (embedded mode).

Before anything starts, the TRE is asked (``SandboxSpawner.gate``) whether the user may run a workspace of the
chosen project now: a member, accredited today, a project with no governance blockers and not suspended, data
provisioned. Otherwise the spawn fails with one sentence the hub shows. The server then runs in a
``tre.workspaces.sandbox.Sandbox`` with the project's current extract read-only at ``/data``.

The hub configuration this spawner needs (``tre up`` writes it; ``HUB`` is the sandbox hub address, by default
``10.213.255.254``, the pool's last address but one)::

    c.JupyterHub.spawner_class = "tre.workspaces.local_spawner.SandboxSpawner"
    c.JupyterHub.hub_bind_url = "http://HUB:8081"    # the hub API listens on the hub address (put on lo
                                                     # by tre.workspaces.sandbox.prepare_host before the hub starts)
    c.JupyterHub.bind_url = "http://127.0.0.1:8000"  # the public proxy: anywhere you like
    # optional, for the airlock service through the proxy from inside workspaces: make the proxy listen on all
    # addresses (bind_url "http://0.0.0.0:8000") and allow its port: c.SandboxSpawner.allowed_ports = [8000]

The hub API URL's host must be the hub address (the spawner checks, and refuses to start otherwise).

Without root (``c.SandboxSpawner.sandbox_mode = "rootless"``, the default for an ordinary user) there is no pool:
the hub address is ``127.0.0.1``, so the hub's own default ``hub_bind_url`` (``http://127.0.0.1:8081``) is right,
and every allowed port is reached through a Unix socket relay (see ``tre.workspaces._relay``). The server listens
on ``127.0.0.1:workspace_port`` inside its sandbox; the hub and proxy reach it on a free loopback port.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import os
import re
import shutil
import sys
import time
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from jupyterhub.spawner import Spawner, SpawnException  # type: ignore[import-untyped]
from traitlets import Any as AnyTrait
from traitlets import Callable, Enum, Float, Integer, List, Unicode, default

from tre.errors import TreError
from tre.workspaces._access import TreStoreGate, WorkspaceGate, WorkspaceGrant
from tre.workspaces._firewall import ensure_table
from tre.workspaces._host import DEFAULT_POOL, DEFAULT_STATE_DIR, DEFAULT_UID_BASE
from tre.workspaces._limits import Limits, parse_bytes, parse_cpus
from tre.workspaces.sandbox import (
    MODES,
    PreparedSandbox,
    Sandbox,
    SandboxError,
    SandboxHost,
    SandboxMode,
    SandboxSpec,
    prepare_host,
    resolve_mode,
)

_UNSAFE = re.compile(r"[^a-z0-9._-]")
_PATH_INSIDE = "/usr/local/bin:/usr/bin:/bin"


def safe_name(name: str) -> str:
    """A name usable in paths and sandbox ids; a short hash keeps names that differ only in odd characters apart."""
    cleaned = _UNSAFE.sub("-", name.lower()).strip("-.") or "user"
    if cleaned == name:
        return name
    return f"{cleaned[:40]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _project_from_form(form_data: dict[str, list[str]]) -> dict[str, str]:
    return {"project": (form_data.get("project") or [""])[0]}


def _check_user_options(spawner: Any, user_options: dict[str, Any]) -> None:
    """Accept only ``{"project": NAME}`` (JupyterHub turns the ValueError into a 400 for the user)."""
    unknown = sorted(set(user_options) - {"project"})
    if unknown:
        raise ValueError(f"unknown workspace option {', '.join(unknown)}: only 'project' can be chosen")
    if not isinstance(user_options.get("project", ""), str):
        raise ValueError("the workspace option 'project' must be a project name")


class SandboxSpawner(Spawner):  # type: ignore[misc]  # JupyterHub ships no type information
    """Start the single-user server in a sandbox of the chosen project (``user_options["project"]``)."""

    gate = AnyTrait(
        None,
        allow_none=True,
        help="""What decides who may start a workspace: an object with projects_for(user), check(user, project)
        and record(action, user, project, details) (see tre.workspaces._access.WorkspaceGate). Default: the TRE's
        store and local object store named by the TRE_* environment of the hub (TRE_HOME, TRE_DATABASE_URL).""",
    ).tag(config=True)
    workspace_root = Unicode(
        "",
        help="""Where workspaces keep their files: {root}/{project}/{user}/home and .../outputs, owned by the
        sandbox's uid. Default: $TRE_HOME/workspaces.""",
    ).tag(config=True)
    sandbox_mode = Enum(
        list(MODES),
        "auto",
        help="""How workspaces are isolated: "root" (network namespace, veth and nftables; each workspace its own
        uid; the hub must run as root), "rootless" (unprivileged user and network namespaces with bubblewrap, Unix
        sockets to the hub; the hub must not run as root), or "auto": root for root, rootless otherwise. If the
        mode cannot work on this machine every spawn is refused.""",
    ).tag(config=True)
    sandbox_pool = Unicode(
        str(DEFAULT_POOL),
        help="""Private IPv4 network cut into one /30 per workspace; its last address but one is the hub address,
        where the hub (hub_bind_url) must listen. Must not overlap any network of the host.""",
    ).tag(config=True)
    sandbox_table = Unicode("tre_sandbox", help="The nftables table (family inet) the sandboxes' rules live in.").tag(
        config=True
    )
    sandbox_prefix = Unicode(
        "tre-w", help="Prefix of the sandboxes' network namespace and host veth names (2 to 10 characters)."
    ).tag(config=True)
    sandbox_state_dir = Unicode(
        str(DEFAULT_STATE_DIR),
        help="Where slot allocations, generated /etc files and workspace logs live (root only).",
    ).tag(config=True)
    sandbox_uid_base = Integer(
        DEFAULT_UID_BASE, help="Workspace n runs as uid and gid sandbox_uid_base + n; pick a range no one uses."
    ).tag(config=True)
    allowed_ports = List(
        Integer(),
        help="""TCP ports of the hub address a workspace may connect to, besides the hub API's own: e.g. the
        proxy's port (for hub services such as the airlock API) or OpenBao's, if they listen on that address.""",
    ).tag(config=True)
    read_only_paths = List(
        Unicode(),
        help="Host directories mounted read-only at the same path (this Python and its venv always are).",
    ).tag(config=True)
    workspace_port = Integer(
        8888,
        help="""The port the server listens on inside its own network namespace (rootless: on 127.0.0.1 there,
        so it must differ from every port forwarded to the hub).""",
    ).tag(config=True)
    vault_addr = Unicode(
        "",
        help="""Vault (OpenBao) URL as seen from inside a workspace, e.g. http://HUB:8200 (allow its port in
        allowed_ports). When set, the workspace gets VAULT_ADDR and a VAULT_TOKEN scoped to its project only.""",
    ).tag(config=True)
    vault_token_ttl = Unicode("8h", help="Lifetime of a workspace's Vault token (not renewable).").tag(config=True)
    project_token = Callable(
        None,
        allow_none=True,
        help="""callable(project) -> str: a Vault token for the project. Default: minted with the TRE's Vault
        credentials (TRE_VAULT_ADDR, TRE_VAULT_TOKEN_FILE) by tre.clients.vault, with the project's policy only.""",
    ).tag(config=True)
    gate_check_interval = Float(
        60.0,
        help="""Seconds between re-checks of a running workspace (done when the hub polls it): a workspace whose
        project expired or was suspended, or whose user's accreditation lapsed, is stopped.""",
    ).tag(config=True)
    stop_grace = Float(10.0, help="Seconds between SIGTERM and SIGKILL when a workspace is stopped.").tag(config=True)
    tasks_limit = Integer(1024, help="Most processes and threads a workspace may run.").tag(config=True)
    tmp_size = Unicode(
        "1Gi", help="Size of each of the workspace's private /tmp and /dev/shm (memory-backed), e.g. 512Mi."
    ).tag(config=True)

    @default("options_form")
    def _default_options_form(self) -> Any:
        return self.project_form

    @default("options_from_form")
    def _default_options_from_form(self) -> Any:
        return _project_from_form

    @default("apply_user_options")
    def _default_apply_user_options(self) -> Any:
        return _check_user_options

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sandbox: Sandbox | None = None
        self.project = ""
        self._starting = False
        self._checked_at = 0.0

    # configuration helpers

    def sandbox_host(self) -> SandboxHost:
        return SandboxHost(
            pool=IPv4Network(self.sandbox_pool), table=self.sandbox_table, prefix=self.sandbox_prefix,
            state_dir=Path(self.sandbox_state_dir), uid_base=self.sandbox_uid_base,
            mode=resolve_mode(self.sandbox_mode),
        )  # fmt: skip

    def workspace_gate(self) -> WorkspaceGate:
        if self.gate is None:
            self.gate = TreStoreGate.from_settings()
        gate: WorkspaceGate = self.gate
        return gate

    def _root(self) -> Path:
        if self.workspace_root:
            return Path(self.workspace_root)
        from tre.config import Settings

        return Settings().home / "workspaces"

    @property
    def login(self) -> str:
        return safe_name(self.user.name)

    def sandbox_id(self, project: str) -> str:
        server = f".{safe_name(self.name)}" if self.name else ""
        return f"{project}.{self.login}{server}"

    # the options form

    def project_form(self, spawner: Any = None) -> str:
        """A choice of project when the user belongs to several; none (spawn at once) otherwise."""
        projects = self.workspace_gate().projects_for(self.user.name)
        if len(projects) < 2:
            return ""
        options = "".join(f'<option value="{html.escape(p)}">{html.escape(p)}</option>' for p in projects)
        return f'<label for="tre-project">Project</label><select id="tre-project" name="project">{options}</select>'

    async def _chosen_project(self) -> str:
        chosen = str((self.user_options or {}).get("project") or "")
        if chosen:
            return chosen
        projects = await asyncio.to_thread(self.workspace_gate().projects_for, self.user.name)
        if len(projects) == 1:
            return projects[0]
        if not projects:
            raise _refused(f"{self.user.name} is not a member of any project; ask a project's lead to add them")
        raise _refused(f"{self.user.name} belongs to several projects ({', '.join(projects)}): choose one")

    # start, poll, stop

    async def start(self) -> tuple[str, int]:
        self._starting = True
        try:
            return await self._start()
        finally:
            self._starting = False

    async def _start(self) -> tuple[str, int]:
        began = time.perf_counter()
        grant = await self._check(await self._chosen_project())
        try:
            host = self.sandbox_host()
            spec = self._spec(host, grant)
            sandbox = Sandbox(host, spec.sandbox_id)
            await asyncio.to_thread(_ready_host, host)
            prepared = await asyncio.to_thread(sandbox.prepare, spec)
        except TreError as exc:
            raise _unavailable(exc) from exc
        try:
            await self._launch(sandbox, prepared, spec, grant)
        except BaseException as exc:
            await asyncio.to_thread(sandbox.stop, 0.0)
            if isinstance(exc, TreError):
                raise _unavailable(exc) from exc
            raise
        self.sandbox, self._checked_at = sandbox, time.monotonic()
        elapsed = (time.perf_counter() - began) * 1000
        self.log.info("Sandbox %s set up in %.0f ms; its server starts now", spec.sandbox_id, elapsed)
        return self.ip, self.port

    async def _launch(
        self, sandbox: Sandbox, prepared: PreparedSandbox, spec: SandboxSpec, grant: WorkspaceGrant
    ) -> None:
        """Audit the start, then start the server in the prepared sandbox (on the event loop's own thread, which
        lives as long as the hub: the sandbox dies with the thread that started it)."""
        self.ip, self.port = prepared.server  # where the server listens (JUPYTERHUB_SERVICE_URL)
        self.project = grant.project
        env = await self._workspace_env(spec, grant.project)
        details = {"extract": grant.extract, "sandbox": spec.sandbox_id, "server": self.name or ""}
        await asyncio.to_thread(
            self.workspace_gate().record, "workspace.started", self.user.name, grant.project, details
        )
        log_path = sandbox.host.state_dir / "logs" / f"{spec.sandbox_id}.log"
        sandbox.launch(prepared, self._command(), env, log_path=log_path)
        if sandbox.endpoint is not None:
            self.ip, self.port = sandbox.endpoint  # where the hub and proxy reach it (rootless: the relay)

    async def _check(self, project: str) -> WorkspaceGrant:
        try:
            return await asyncio.to_thread(self.workspace_gate().check, self.user.name, project)
        except TreError as exc:
            raise _refused(str(exc)) from exc

    def _spec(self, host: SandboxHost, grant: WorkspaceGrant) -> SandboxSpec:
        home = self._root() / grant.project / self.login
        return SandboxSpec(
            sandbox_id=self.sandbox_id(grant.project), login=self.login, data_dir=grant.data_dir,
            outputs_dir=home / "outputs", home_dir=home / "home", hub_ports=self._hub_ports(host),
            limits=self._limits(grant), read_only_paths=tuple(Path(p) for p in self.read_only_paths),
            server_port=self.workspace_port,
        )  # fmt: skip

    def _hub_ports(self, host: SandboxHost) -> tuple[int, ...]:
        url = self.hub_connect_url or self.hub.api_url
        parsed = urlparse(url)
        names = {str(host.hub_address)} | ({"localhost"} if host.mode is SandboxMode.ROOTLESS else set())
        if parsed.hostname not in names:
            raise SpawnException(
                f"workspaces can reach the hub only at {host.hub_address}, but its API is at {url}: set "
                f"c.JupyterHub.hub_bind_url = 'http://{host.hub_address}:8081'",
                reason="sandbox",
                status_code=500,
            )
        return (parsed.port or 80, *self.allowed_ports)

    def _limits(self, grant: WorkspaceGrant) -> Limits:
        memory = int(self.mem_limit) if self.mem_limit else parse_bytes(grant.memory)
        cpus = float(self.cpu_limit) if self.cpu_limit else parse_cpus(grant.cpu)
        return Limits(memory_bytes=memory, cpus=cpus, tasks=self.tasks_limit, tmp_bytes=parse_bytes(self.tmp_size))

    def _command(self) -> list[str]:
        argv = [*self.cmd, *self.get_args()]
        if not os.path.isabs(argv[0]):
            search = f"{Path(sys.prefix) / 'bin'}:{_PATH_INSIDE}"
            argv[0] = shutil.which(argv[0], path=search) or argv[0]
        return argv

    async def _workspace_env(self, spec: SandboxSpec, project: str) -> dict[str, str]:
        env: dict[str, str] = self.get_env()
        env |= {
            "PATH": f"{Path(sys.prefix) / 'bin'}:{_PATH_INSIDE}",
            "HOME": spec.home_inside,
            "USER": spec.login,
            "LOGNAME": spec.login,
            "SHELL": "/bin/bash",
            "LANG": "C.UTF-8",
            "TRE_PROJECT": project,
            "TRE_DATA_DIR": "/data",
            "TRE_OUTPUTS_DIR": "/outputs",
        }
        if self.vault_addr:
            token = await asyncio.to_thread(self._project_token, project)
            env |= {"VAULT_ADDR": self.vault_addr, "VAULT_TOKEN": token}
        return env

    def _project_token(self, project: str) -> str:
        if self.project_token is not None:
            return str(self.project_token(project))
        from tre.clients.vault import VaultClient
        from tre.config import Settings

        url, token = Settings().vault_credentials()
        with VaultClient(url, token) as vault:
            return vault.create_project_token(project, ttl=self.vault_token_ttl)

    async def poll(self) -> int | None:
        if self._starting:
            return None
        if self.sandbox is None:
            return 0
        status = self.sandbox.poll()
        if status is not None:
            await self._stop_sandbox(0.0, reason=f"exited with status {status}")  # leftovers of a killed workspace
            self.clear_state()
            return status
        if time.monotonic() - self._checked_at >= self.gate_check_interval:
            return await self._recheck()
        return None

    async def _recheck(self) -> int | None:
        """Stop the workspace if its user may no longer run it; None while it may."""
        self._checked_at = time.monotonic()
        reason = await self.revalidate()
        return None if reason is None else 1

    async def revalidate(self) -> str | None:
        """Check the running workspace against the TRE now; stop it (and say why) if it must stop."""
        if self.sandbox is None or not self.project:
            return None
        try:
            await asyncio.to_thread(self.workspace_gate().check, self.user.name, self.project)
        except TreError as exc:
            self.log.warning("Stopping %s's workspace of %s: %s", self.user.name, self.project, exc)
            await self._stop_sandbox(0.0, reason=str(exc))
            return str(exc)
        return None

    async def stop(self, now: bool = False) -> None:
        await self._stop_sandbox(0.0 if now else self.stop_grace, reason="stopped")

    async def _stop_sandbox(self, grace: float, *, reason: str) -> None:
        sandbox, project = self.sandbox, self.project
        if sandbox is None:
            return
        try:
            await asyncio.to_thread(sandbox.stop, grace)
        except SandboxError as exc:
            raise SpawnException(str(exc), reason="sandbox", status_code=500) from exc
        self.sandbox = None
        details = {"sandbox": sandbox.sandbox_id, "reason": reason}
        try:
            await asyncio.to_thread(self.workspace_gate().record, "workspace.stopped", self.user.name, project, details)
        except TreError:
            self.log.exception("Could not audit the stop of %s", sandbox.sandbox_id)

    # state across hub restarts

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()
        if self.sandbox is not None:
            state |= {"sandbox": self.sandbox.state(), "project": self.project}
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        if "sandbox" in state:
            self.sandbox = Sandbox.from_state(self.sandbox_host(), state["sandbox"])
            self.project = str(state.get("project", ""))

    def clear_state(self) -> None:
        super().clear_state()
        self.sandbox = None
        self.project = ""


_READY_HOSTS: set[SandboxHost] = set()


def _ready_host(host: SandboxHost) -> None:
    """``prepare_host`` once per hub process; after that only re-assert the firewall (atomic and idempotent), so a
    table removed behind our back is back before the next workspace starts."""
    if host in _READY_HOSTS:
        if host.mode is SandboxMode.ROOT:
            ensure_table(host)
        return
    prepare_host(host)
    _READY_HOSTS.add(host)


def _unavailable(error: TreError) -> SpawnException:
    return SpawnException(str(error), reason="sandbox", status_code=503)


def _refused(message: str) -> SpawnException:
    return SpawnException(message, reason="tre-access", status_code=403)
