"""One ``tre up`` per home, and no orphans: a lock file, and the pids of the children it started.

If a previous ``tre up`` was killed (SIGKILL, power loss) its children normally die with it
(``PR_SET_PDEATHSIG``); any that did not are found here by pid *and* start time (so a recycled pid is
never killed) and stopped before the new run starts. JupyterHub's proxy is the hub's own child, with no
parent-death signal: a hub killed outright leaves it holding the public port. It is found through the pid file
the hub writes, and stopped only if that process is a configurable-http-proxy running in the hub's directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from tre.embedded._layout import Layout, write_private_json
from tre.errors import ConflictError


@contextmanager
def exclusive(layout: Layout) -> Iterator[None]:
    """Hold the home's lock for the life of ``tre up``; ConflictError when another run holds it."""
    layout.run.mkdir(parents=True, exist_ok=True, mode=0o700)
    handle: IO[str] = layout.lock.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConflictError(
                f"another 'tre up' is running with TRE_HOME={layout.home}; stop it first (Ctrl-C or SIGTERM)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def record(layout: Layout, children: dict[str, int]) -> None:
    entries = {name: {"pid": pid, "start": start_time(pid)} for name, pid in children.items()}
    write_private_json(layout.pids, entries)


PROXY_PID_FILE = "jupyterhub-proxy.pid"  # JupyterHub's default, in its working directory (layout.hub)


def orphaned_proxy(layout: Layout) -> int | None:
    """The pid of the proxy a killed hub left running, if any (its pid file names a configurable-http-proxy
    whose working directory is the hub's)."""
    try:
        pid = int((layout.hub / PROXY_PID_FILE).read_text(encoding="utf-8").strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except (OSError, ValueError):
        return None
    if b"configurable-http-proxy" not in cmdline or cwd != layout.hub.resolve():
        return None
    return pid


def stop_leftovers(layout: Layout, grace: float = 5.0) -> list[str]:
    """Stop children a killed earlier run left behind, and a killed hub's proxy; returns their names."""
    stopped = []
    proxy = orphaned_proxy(layout)
    if proxy is not None:
        _stop_group(proxy, grace)
        stopped.append("JupyterHub's proxy")
    try:
        entries = json.loads(layout.pids.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return stopped
    for name, entry in entries.items() if isinstance(entries, dict) else []:
        pid, started = entry.get("pid"), entry.get("start")
        if isinstance(pid, int) and started is not None and start_time(pid) == started:
            _stop_group(pid, grace)
            stopped.append(name)
    layout.pids.unlink(missing_ok=True)
    return stopped


def _stop_group(pid: int, grace: float) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and start_time(pid) is not None:
        time.sleep(0.1)
    with suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
