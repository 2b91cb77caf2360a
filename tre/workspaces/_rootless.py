"""The rootless sandbox: bubblewrap in unprivileged user, network, PID, IPC and UTS namespaces, run as the user
running the hub, reaching the hub only through Unix sockets (see :mod:`tre.workspaces._relay`).

Per sandbox, under the state directory, ``<name>/sockets`` (0700) holds the outside relay's sockets and is
mounted read-only at ``/run/tre``; its ``in/`` is mounted writable at ``/run/tre/in`` for the server's socket.
``<name>/relay.json`` records the outside relay (pid and start time), so a sandbox left by a killed hub is found
and stopped by the next start, whoever runs it.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tre.workspaces import _relay
from tre.workspaces._host import SandboxHost, SlotLink
from tre.workspaces._mounts import root_entries
from tre.workspaces._process import ProcessRef
from tre.workspaces._system import COMMAND_TIMEOUT, missing_tools, tool

RELAY_SOURCE = Path(_relay.__file__).resolve()
RELAY_INSIDE = f"{_relay.RUN_INSIDE}-relay.py"
TOOLS = ("bwrap", "prlimit")
NAMESPACES = ["--unshare-user", "--unshare-net", "--disable-userns", "--cap-drop", "ALL"]


def sockets_dir(host: SandboxHost, link: SlotLink) -> Path:
    return host.state_dir / link.name / "sockets"


def record_path(host: SandboxHost, link: SlotLink) -> Path:
    return host.state_dir / link.name / "relay.json"


def rootless_problems() -> list[str]:
    """Why the rootless mode cannot run here (empty when it can): not as root, the tools, the kernel's consent."""
    if os.geteuid() == 0:
        return [
            "the rootless mode runs workspaces as the user who runs the hub, never as root: as root use the root "
            "mode (--sandbox-mode root), or run the TRE as an ordinary user"
        ]
    problems = missing_tools(TOOLS)
    if not problems:
        problem = _probe()
        if problem:
            problems.append(problem)
    return problems


@functools.cache
def _probe() -> str | None:
    """Start one empty sandbox with the namespaces the rootless mode uses; why it failed, or None."""
    argv = [tool("bwrap"), *NAMESPACES, "--unshare-pid", "--die-with-parent", "--ro-bind", "/usr", "/usr"]
    argv += [*root_entries(), "--proc", "/proc", "--dev", "/dev", "--", tool("true")]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        return f"bubblewrap did not start an empty sandbox within {COMMAND_TIMEOUT:g}s"
    if done.returncode == 0:
        return None
    reason = " ".join(done.stderr.split())[:200] or f"exit status {done.returncode}"
    return (
        f"bubblewrap cannot create unprivileged user and network namespaces here ({reason}): allow them "
        "(sysctl user.max_user_namespaces > 0, kernel.unprivileged_userns_clone = 1, or an AppArmor profile "
        "for bwrap), or run as root for the root mode"
    )


def prepare_sockets(host: SandboxHost, link: SlotLink) -> Path:
    """A fresh, empty socket directory (and its ``in/``), mode 0700."""
    directory = sockets_dir(host, link)
    remove_sockets(host, link)
    directory.mkdir(mode=0o700, parents=True)
    (directory / _relay.INBOUND_DIR).mkdir(mode=0o700)
    return directory


def remove_sockets(host: SandboxHost, link: SlotLink) -> None:
    shutil.rmtree(sockets_dir(host, link), ignore_errors=True)
    record_path(host, link).unlink(missing_ok=True)


def mounts(directory: Path) -> list[str]:
    """bubblewrap options: the namespaces, the socket directory (read-only but its ``in/``) and the relay."""
    inbound = f"{_relay.RUN_INSIDE}/{_relay.INBOUND_DIR}"
    argv = [*NAMESPACES, "--ro-bind", str(directory), _relay.RUN_INSIDE]
    argv += ["--bind", str(directory / _relay.INBOUND_DIR), inbound]
    return [*argv, "--ro-bind", str(RELAY_SOURCE), RELAY_INSIDE]


def inside_argv(ports: Sequence[int], server_port: int, argv: Sequence[str]) -> list[str]:
    """The sandbox's first process: the inside relay, which runs ``argv``."""
    config = json.dumps({"ports": sorted(set(ports)), "server_port": server_port})
    return [sys.executable, "-I", RELAY_INSIDE, "inside", config, "--", *argv]


def outside_argv(
    directory: Path, hub: str, ports: Sequence[int], inbound_fd: int, sandbox_argv: Sequence[str]
) -> list[str]:
    """The outside relay, which runs the sandbox (``sandbox_argv``: bubblewrap and everything in it)."""
    config = {"dir": str(directory), "host": hub, "ports": sorted(set(ports)), "inbound_fd": inbound_fd}
    config["parent"] = os.getpid()
    return [sys.executable, "-I", str(RELAY_SOURCE), "outside", json.dumps(config), "--", *sandbox_argv]


def write_record(host: SandboxHost, link: SlotLink, process: ProcessRef) -> None:
    path = record_path(host, link)
    path.write_text(json.dumps({"pid": process.pid, "start_ticks": process.start_ticks}), encoding="utf-8")


def read_record(host: SandboxHost, link: SlotLink) -> ProcessRef | None:
    try:
        data = json.loads(record_path(host, link).read_text(encoding="utf-8"))
        return ProcessRef(int(data["pid"]), int(data["start_ticks"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (a rootless sandbox's processes all descend from its outside relay:
    an orphan inside is adopted by the sandbox's own init, never by the host's)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            parent = _parent_of(entry.name)
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], list(children.get(pid, []))
    while queue:
        current = queue.pop()
        found.append(current)
        queue += children.get(current, [])
    return found


def _parent_of(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return int(fields[1]) if len(fields) > 1 else None
