"""Child processes of ``tre up``: start with a log file, wait until ready, stop the whole process group.

Every child runs in its own process group with ``PR_SET_PDEATHSIG`` set, so a ``tre up`` killed with
SIGKILL still takes its children with it; its pid is also recorded so the next ``tre up`` can clear
anything that survived (see :mod:`tre.embedded._pids`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tre.errors import InputError, TemporaryError

_PR_SET_PDEATHSIG = 1
STOP_GRACE_SECONDS = 10.0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    """One supervised server process."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(self.env),
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, probe: Callable[[], bool], timeout: float) -> None:
        """Poll ``probe`` until it is true; TemporaryError naming the log if the child dies or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise TemporaryError(f"{self.name} exited while starting; see {self.log_path}")
            if probe():
                return
            time.sleep(0.1)
        raise TemporaryError(f"{self.name} was not ready after {timeout:.0f} s; see {self.log_path}")

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM the child's process group, SIGKILL it after ``grace`` seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        _signal_group(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=grace)


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)


def installed_command(name: str) -> str:
    """A command installed with the TRE, preferring its own environment's ``bin``; InputError if missing."""
    found = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if found is None:
        raise InputError(f"the '{name}' command is not installed: run the README's setup ('make setup')")
    return found


def http_ok(url: str, timeout: float = 1.0) -> Callable[[], bool]:
    """A readiness probe: true once ``url`` answers 2xx or 3xx."""

    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback URL we built
                return 200 <= int(response.status) < 400
        except OSError:
            return False

    return probe
