"""A workspace sandbox for one (project, user): a process isolated in network, mounts, PIDs, identity and resources.

Two modes (``SandboxMode``; see docs/explanation/workspace-sandbox.md), one mount layout:

**root** (the hub runs as root), layers outermost first:

- **network**: its own network namespace; one veth pair with a /30 from a private pool; no default route, only a
  route to the hub address; IPv6 off; an nftables table that lets a sandbox open TCP connections only to the
  allowed ports of the hub address and drops everything else, and forwards nothing to or from any sandbox;
- **mounts and PIDs**: bubblewrap (run as root, no user namespace) with the project's data read-only at
  ``/data``, writable ``/outputs`` and home, private ``/tmp``, new ``/proc`` and PID namespace, a minimal
  ``/dev``, ``--die-with-parent``;
- **identity**: the command runs as the slot's own unprivileged uid and gid, no capabilities, ``no_new_privs``;
- **resources**: a cgroup v2 with memory, CPU and task limits where the kernel allows, else RLIMIT_AS and
  RLIMIT_NPROC;
- **environment**: exactly the variables the caller passes (never the hub's own).

**rootless** (the hub runs as an ordinary user): bubblewrap in new user, network, PID, IPC and UTS namespaces, all
capabilities dropped, no further user namespaces; the network namespace holds only ``lo``, and the allowed hub
ports are reached through Unix sockets and two relays (:mod:`tre.workspaces._relay`); the same mounts and
environment; RLIMIT_AS and RLIMIT_NPROC; every sandbox runs as the hub's own uid outside its user namespace.

``resolve_mode("auto")`` is root for root and rootless otherwise. If the chosen mode cannot work here
(``check_sandbox_support``) the spawn is refused: a workspace never runs unsandboxed. Setup is blocking;
``launch`` must run on a thread that lives as long as the workspace (the event loop's), because the sandbox dies
with the thread that started it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tre.errors import InputError
from tre.workspaces import _claims, _firewall, _network, _rootless
from tre.workspaces._dirs import prepare_directories
from tre.workspaces._host import DEFAULT_POOL, LOOPBACK, SandboxHost, SandboxMode, SlotLink
from tre.workspaces._limits import CGROUP_ROOT, Cgroup, Limits, cgroup_v2_available, prlimit_argv
from tre.workspaces._mounts import Layout, bwrap_argv, root_entries, setpriv_argv, write_etc
from tre.workspaces._process import ProcessRef, command_name, send, wait_until
from tre.workspaces._slots import SlotRegistry, check_sandbox_id
from tre.workspaces._system import TOOLS, SandboxError, missing_tools, run, tool

__all__ = [
    "DEFAULT_POOL",
    "Limits",
    "PreparedSandbox",
    "Sandbox",
    "SandboxError",
    "SandboxHost",
    "SandboxMode",
    "SandboxSpec",
    "SandboxSupport",
    "SlotLink",
    "check_sandbox_support",
    "clear_leftovers",
    "prepare_host",
    "python_paths",
    "resolve_mode",
    "teardown_host",
]

log = logging.getLogger(__name__)
KILL_ROUNDS = 20
MODES = ("auto", "root", "rootless")
PRIVILEGED_PORTS = 1024


@dataclass(frozen=True)
class SandboxSpec:
    """What one sandbox is given. ``hub_ports`` are the TCP ports of the hub address it may connect to;
    ``server_port`` is where its server listens inside."""

    sandbox_id: str
    login: str
    data_dir: Path
    outputs_dir: Path
    home_dir: Path
    hub_ports: tuple[int, ...]
    limits: Limits = field(default_factory=Limits)
    read_only_paths: tuple[Path, ...] = ()
    server_port: int = 8888

    @property
    def home_inside(self) -> str:
        return f"/home/{self.login}"


@dataclass(frozen=True)
class PreparedSandbox:
    """A sandbox whose network (firewall, or socket directory), directories and cgroup are ready, waiting for
    ``launch``. ``server`` is the (address, port) its server must listen on inside (the single-user server's
    ``JUPYTERHUB_SERVICE_URL``)."""

    link: SlotLink
    layout: Layout
    limits: Limits
    cgroup: Cgroup | None
    server: tuple[str, int]
    hub_ports: tuple[int, ...] = ()
    sockets: Path | None = None


@dataclass(frozen=True)
class SandboxSupport:
    """Whether this machine can sandbox a workspace; ``problems`` says why not, one sentence each."""

    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def require(self) -> None:
        if self.problems:
            raise SandboxError(f"cannot start a sandboxed workspace: {self.problems[0]}")


def resolve_mode(requested: str) -> SandboxMode:
    """``auto`` is the root mode for root and the rootless mode otherwise; InputError for anything else."""
    if requested not in MODES:
        raise InputError(f"sandbox mode {requested!r}: use one of {', '.join(MODES)}")
    if requested == "auto":
        return SandboxMode.ROOT if os.geteuid() == 0 else SandboxMode.ROOTLESS
    return SandboxMode(requested)


@functools.cache
def check_sandbox_support(mode: SandboxMode = SandboxMode.ROOT) -> SandboxSupport:
    """Check, once per process, that workspaces can be isolated here in ``mode``: for the root mode root, the
    tools, namespaces and nftables; for the rootless mode not root, bubblewrap, and unprivileged namespaces."""
    if not sys.platform.startswith("linux") or not Path("/proc/self/ns/net").exists():
        return SandboxSupport(("the kernel has no network namespaces (Linux is required)",))
    if mode is SandboxMode.ROOTLESS:
        return SandboxSupport(tuple(_rootless.rootless_problems()))
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append(
            "the root sandbox mode needs root (network namespaces, veth and nftables): run as root, or use the "
            "rootless mode (--sandbox-mode rootless); a workspace never runs unsandboxed"
        )
    problems += missing_tools(TOOLS)
    if not problems:
        try:
            run(["nft", "list", "tables"], what="nftables")
        except SandboxError as exc:
            problems.append(f"{exc} (is the nf_tables kernel module available?)")
    return SandboxSupport(tuple(problems))


def prepare_host(host: SandboxHost) -> None:
    """Make the host ready for sandboxes; idempotent. Root mode: refused if another TRE on this machine uses the
    same pool, table or name prefix. Call it before the hub starts: it puts the hub address on ``lo`` (the hub
    must listen there), routes the rest of the pool nowhere, and installs the firewall before any sandbox link
    exists. Rootless mode: only checks that sandboxes can run, and makes the state directory."""
    check_sandbox_support(host.mode).require()
    if host.mode is SandboxMode.ROOTLESS:
        try:
            host.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise SandboxError(
                f"cannot make the sandbox state directory {host.state_dir} ({exc.strerror}): set "
                "SandboxSpawner.sandbox_state_dir to a directory the hub's user may write"
            ) from None
        return
    _claims.claim(host)
    _network.check_pool_is_free(host)
    _firewall.ensure_table(host)
    _network.add_host_routes(host)


def clear_leftovers(host: SandboxHost) -> list[str]:
    """Stop every sandbox this host knows of, and remove what they left (a killed hub's namespaces, sockets,
    relays); the ids of those that had anything. Only when no hub uses this state directory (``tre up`` holds
    the home's lock)."""
    registry = SlotRegistry(host.state_dir, host.capacity)
    cleared = []
    for sandbox_id in registry.all():
        sandbox = Sandbox(host, sandbox_id)
        if sandbox.stop(grace=0.0):
            cleared.append(sandbox_id)
    return cleared


def teardown_host(host: SandboxHost, *, forget: bool = False) -> None:
    """Stop every sandbox this host knows, then (root mode) remove the firewall table, the hub address and the pool
    route. ``forget`` also drops the slot allocations (their uids may then be reused)."""
    registry = SlotRegistry(host.state_dir, host.capacity)
    for sandbox_id in registry.all():
        Sandbox(host, sandbox_id).stop(grace=2.0)
        if forget:
            registry.release(sandbox_id)
    if host.mode is SandboxMode.ROOTLESS:
        return
    _firewall.remove_table(host)
    _network.remove_host_routes(host)
    _claims.release(host)


def python_paths() -> tuple[Path, ...]:
    """The directories this Python (and its virtual environment) lives in, outside /usr: both as named and as
    resolved, so a virtual environment reached through a symbolic link works inside the sandbox too."""
    named = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).absolute().parent.parent]
    candidates = {*(p.absolute() for p in named), *(p.resolve() for p in named)}
    paths: list[Path] = []
    for path in sorted(candidates, key=lambda p: (len(p.parts), str(p))):
        if path.is_relative_to("/usr") or any(path.is_relative_to(kept) for kept in paths):
            continue
        paths.append(path)
    return tuple(paths)


class Sandbox:
    """One sandbox, by id. ``prepare`` then ``launch`` start it; ``poll`` and ``stop`` work after a hub restart
    too (from ``state()``), and ``stop`` also removes leftovers of a sandbox whose process is already gone."""

    def __init__(self, host: SandboxHost, sandbox_id: str, process: ProcessRef | None = None) -> None:
        self.host = host
        self.sandbox_id = check_sandbox_id(sandbox_id)
        self.process = process
        self.endpoint: tuple[str, int] | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._registry = SlotRegistry(host.state_dir, host.capacity)

    @property
    def rootless(self) -> bool:
        return self.host.mode is SandboxMode.ROOTLESS

    @classmethod
    def from_state(cls, host: SandboxHost, state: Mapping[str, Any]) -> Sandbox:
        process = ProcessRef(int(state["pid"]), int(state["start_ticks"])) if state.get("pid") else None
        return cls(host, str(state["sandbox_id"]), process)

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"sandbox_id": self.sandbox_id}
        if self.process is not None:
            state |= {"pid": self.process.pid, "start_ticks": self.process.start_ticks}
        return state

    @property
    def link(self) -> SlotLink | None:
        slot = self._registry.find(self.sandbox_id)
        return None if slot is None else self.host.link(slot)

    def prepare(self, spec: SandboxSpec) -> PreparedSandbox:
        """Remove leftovers of an earlier sandbox with this id, then build the network (root: namespace, veth,
        firewall allowances; rootless: the socket directory), the directories and the cgroup. Blocking;
        SandboxError (after cleaning up) if any step fails."""
        if spec.sandbox_id != self.sandbox_id:
            raise SandboxError(f"spec for {spec.sandbox_id} given to sandbox {self.sandbox_id}")
        check_sandbox_support(self.host.mode).require()
        self.stop(grace=0.0)
        link = self.host.link(self._registry.slot_for(self.sandbox_id))
        try:
            if self.rootless:
                return self._prepare_rootless(spec, link)
            _network.create(self.host, link)
            _firewall.allow(self.host, link.name, spec.hub_ports)
            layout = self._layout(spec, link)
            server = (str(link.workspace_address), spec.server_port)
            return PreparedSandbox(link, layout, spec.limits, self._cgroup(link, spec.limits), server, spec.hub_ports)
        except BaseException:
            self._teardown(link)
            raise

    def _prepare_rootless(self, spec: SandboxSpec, link: SlotLink) -> PreparedSandbox:
        if spec.server_port in spec.hub_ports:
            raise SandboxError(
                f"port {spec.server_port} is both the workspace server's and one it forwards to the hub: "
                "choose another SandboxSpawner.workspace_port"
            )
        privileged = sorted(port for port in (spec.server_port, *spec.hub_ports) if port < PRIVILEGED_PORTS)
        if privileged:
            raise SandboxError(
                f"port {privileged[0]} is below {PRIVILEGED_PORTS}: a rootless workspace has no privilege to listen "
                "there on its own loopback; use ports from 1024 up"
            )
        layout = self._layout(spec, link)
        sockets = _rootless.prepare_sockets(self.host, link)
        server = (str(LOOPBACK), spec.server_port)
        return PreparedSandbox(link, layout, spec.limits, None, server, spec.hub_ports, sockets)

    def launch(
        self, prepared: PreparedSandbox, argv: Sequence[str], env: Mapping[str, str], *, log_path: Path | None = None
    ) -> ProcessRef:
        """Start ``argv`` inside the prepared sandbox with exactly ``env``; afterwards ``endpoint`` is where the
        hub reaches its server. Call it from a long-lived thread."""
        link = prepared.link
        try:
            if self.rootless:
                self._popen = self._start_rootless(prepared, argv, env, log_path)
            else:
                self._popen = self._start_root(prepared, argv, env, log_path)
                self.endpoint = prepared.server
        except BaseException:
            self._teardown(link)
            raise
        self.process = ProcessRef.of(self._popen.pid) or ProcessRef(self._popen.pid, 0)
        if self.rootless:
            _rootless.write_record(self.host, link, self.process)
        log.info("sandbox %s started as pid %d (%s mode, uid %d)", self.sandbox_id, self._popen.pid,
                 self.host.mode.value, link.uid)  # fmt: skip
        return self.process

    def _start_root(
        self, prepared: PreparedSandbox, argv: Sequence[str], env: Mapping[str, str], log_path: Path | None
    ) -> subprocess.Popen[bytes]:
        command = [
            tool("nsenter"),
            f"--net={prepared.link.netns_path}",
            "--",
            *bwrap_argv(prepared.layout, root_entries()),
        ]
        command += prlimit_argv(tool("prlimit"), prepared.limits, address_space=prepared.cgroup is None)
        command += [*setpriv_argv(tool("setpriv"), prepared.link.uid), *argv]
        with _log_file(log_path) as output, _joining(prepared.cgroup) as join:
            return subprocess.Popen(
                command, env=dict(env), stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True, preexec_fn=join,
            )  # fmt: skip

    def _start_rootless(
        self, prepared: PreparedSandbox, argv: Sequence[str], env: Mapping[str, str], log_path: Path | None
    ) -> subprocess.Popen[bytes]:
        """The outside relay, with the hub's listener (loopback, a free port) handed over, runs bubblewrap, which
        runs the inside relay, which runs ``argv``."""
        assert prepared.sockets is not None
        inside = prlimit_argv(tool("prlimit"), prepared.limits, address_space=True)
        inside += _rootless.inside_argv(prepared.hub_ports, prepared.server[1], argv)
        sandbox = [*bwrap_argv(prepared.layout, root_entries(), _rootless.mounts(prepared.sockets)), *inside]
        with socket.socket() as listener, _log_file(log_path) as output:
            listener.bind((str(LOOPBACK), 0))
            listener.listen(128)
            hub = str(self.host.hub_address)
            command = _rootless.outside_argv(prepared.sockets, hub, prepared.hub_ports, listener.fileno(), sandbox)
            popen = subprocess.Popen(
                command, env=dict(env), stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True, pass_fds=(listener.fileno(),),
            )  # fmt: skip
            self.endpoint = (str(LOOPBACK), int(listener.getsockname()[1]))
        return popen

    def poll(self) -> int | None:
        """None while the sandbox's process runs; its exit status (0 if unknown) once it has stopped."""
        if self._popen is not None:
            return self._popen.poll()
        if self.process is None:
            return 0
        return None if self.process.alive() else 0

    def stop(self, grace: float = 10.0) -> bool:
        """Stop every process of the sandbox (SIGTERM, then after ``grace`` seconds SIGKILL), then remove its
        network namespace, veth, firewall allowances and cgroup, or its relays and sockets. Idempotent. The slot
        stays allocated. True if there was anything to stop or remove."""
        link = self.link
        found = False
        if link is not None and self.rootless:
            found = self._stop_rootless(link, grace)
        elif link is not None and (self.process is not None or _network.exists(link)):
            self._terminate(link, grace)
            self._teardown(link)
            found = True
        elif self.process is not None:
            self.process.signal(signal.SIGKILL)
        if self._popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=KILL_ROUNDS)
        return found

    # internals

    def _layout(self, spec: SandboxSpec, link: SlotLink) -> Layout:
        prepare_directories(spec, link.uid)
        etc_dir = self.host.state_dir / link.name / "etc"
        inside = LOOPBACK if self.rootless else link.workspace_address
        write_etc(
            etc_dir, login=spec.login, uid=link.uid, home_inside=spec.home_inside, hub=self.host.hub_address,
            workspace=inside, gid=os.getgid() if self.rootless else None,
        )  # fmt: skip
        read_only = tuple(dict.fromkeys((*python_paths(), *spec.read_only_paths)))
        return Layout(
            bwrap=tool("bwrap"), etc_dir=etc_dir, data_dir=spec.data_dir, outputs_dir=spec.outputs_dir,
            home_dir=spec.home_dir, home_inside=spec.home_inside, read_only=read_only,
            tmp_bytes=spec.limits.tmp_bytes,
        )  # fmt: skip

    def _cgroup(self, link: SlotLink, limits: Limits) -> Cgroup | None:
        if not cgroup_v2_available():
            return None
        cgroup = self._cgroup_of(link)
        try:
            cgroup.create(limits)
        except OSError as exc:
            log.warning("cgroup v2 limits unavailable (%s); using resource limits instead", exc)
            return None
        return cgroup

    def _cgroup_of(self, link: SlotLink) -> Cgroup:
        return Cgroup(CGROUP_ROOT, self.host.table, link.name)

    def _gone(self, link: SlotLink) -> bool:
        return (
            not _network.pids_in(link)
            and self._cgroup_of(link).empty()
            and (self.process is None or not self.process.alive())
        )

    def _terminate(self, link: SlotLink, grace: float) -> None:
        if grace > 0:
            send([p for p in _network.pids_in(link) if command_name(p) != "bwrap"], signal.SIGTERM)
            wait_until(lambda: self._gone(link), grace)
        cgroup = self._cgroup_of(link)
        for _ in range(KILL_ROUNDS):
            if self._gone(link):
                return
            if self.process is not None:
                self.process.signal(signal.SIGKILL)
            cgroup.kill()
            send(_network.pids_in(link), signal.SIGKILL)
            wait_until(lambda: self._gone(link), 0.5)
        log.error("sandbox %s: some processes did not die", self.sandbox_id)

    def _stop_rootless(self, link: SlotLink, grace: float) -> bool:
        """SIGTERM every process inside (never bubblewrap or the relay outside, which end with them), then
        SIGKILL the relay and everything below it; then remove the sockets."""
        relay = self.process or _rootless.read_record(self.host, link)
        found = _rootless.sockets_dir(self.host, link).exists()
        if relay is not None and relay.alive():
            found = True
            if grace > 0:
                inside = [p for p in _rootless.descendants(relay.pid) if command_name(p) != "bwrap"]
                send(inside, signal.SIGTERM)
                wait_until(lambda: not relay.alive(), grace)
            self._kill_tree(relay)
        _rootless.remove_sockets(self.host, link)
        return found

    def _kill_tree(self, relay: ProcessRef) -> None:
        """SIGKILL everything below the relay first, so the relay reaps bubblewrap and exits by itself (nothing is
        left a zombie); the relay too if it does not."""
        for round_ in range(KILL_ROUNDS):
            members = [ref for ref in map(ProcessRef.of, _rootless.descendants(relay.pid)) if ref]
            for member in members if round_ == 0 or not members else [relay, *members]:
                member.signal(signal.SIGKILL)
            if not members:
                relay.signal(signal.SIGKILL)
            if wait_until(functools.partial(_all_gone, [relay, *members]), 0.5):
                return
        log.error("sandbox %s: some processes did not die", self.sandbox_id)

    def _teardown(self, link: SlotLink) -> None:
        if self.rootless:
            _rootless.remove_sockets(self.host, link)
            return
        _firewall.revoke(self.host, link.name)
        _network.remove(link)
        self._cgroup_of(link).remove()


def _all_gone(processes: Sequence[ProcessRef]) -> bool:
    return not any(process.alive() for process in processes)


@contextlib.contextmanager
def _joining(cgroup: Cgroup | None) -> Iterator[Callable[[], None] | None]:
    """A pre-exec function that moves the new process into the cgroup before it runs anything, so every process
    of the sandbox is born inside it. It only writes to a descriptor opened here (safe between fork and exec)."""
    if cgroup is None:
        yield None
        return
    fd = os.open(cgroup.procs, os.O_WRONLY)

    def join() -> None:
        os.write(fd, b"0")

    try:
        yield join
    finally:
        os.close(fd)


@contextlib.contextmanager
def _log_file(path: Path | None) -> Iterator[int | IO[bytes]]:
    if path is None:
        yield subprocess.DEVNULL
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        yield handle
