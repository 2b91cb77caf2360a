"""Running the system tools the sandbox is built with (iproute2, nftables, bubblewrap, util-linux)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tre.errors import ConflictError

TOOLS = ("ip", "nft", "bwrap", "nsenter", "setpriv", "prlimit", "sysctl")
_SEARCH_PATH = "/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/sbin:/usr/local/bin"
COMMAND_TIMEOUT = 30.0


class SandboxError(ConflictError):
    """A workspace sandbox cannot be set up: this machine cannot isolate it, or a system tool failed.

    Never caught to run a workspace without its sandbox: the workspace does not start.
    """


def tool(name: str) -> str:
    """The absolute path of a system tool; SandboxError naming the Debian package when it is missing."""
    found = shutil.which(name, path=_SEARCH_PATH)
    if found is None:
        package = {"ip": "iproute2", "nft": "nftables", "bwrap": "bubblewrap", "sysctl": "procps"}.get(
            name, "util-linux"
        )
        raise SandboxError(f"{name} is not installed: install the Debian package {package}")
    return found


def missing_tools(names: Sequence[str]) -> list[str]:
    """One line per tool in ``names`` that is not installed, naming its Debian package."""
    problems = []
    for name in names:
        try:
            tool(name)
        except SandboxError as exc:
            problems.append(str(exc))
    return problems


def run(argv: Sequence[str], *, what: str, stdin: str | None = None, tolerate: Sequence[str] = ()) -> str:
    """Run a tool and return its standard output. A failure whose message contains one of ``tolerate`` (e.g.
    "Cannot find device" when removing something already gone) returns ""; any other raises SandboxError."""
    command = [tool(argv[0]), *argv[1:]]
    try:
        done = subprocess.run(
            command, input=stdin, capture_output=True, text=True, check=False, timeout=COMMAND_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise SandboxError(f"{what}: {argv[0]} did not finish within {COMMAND_TIMEOUT:g}s") from None
    if done.returncode == 0:
        return done.stdout
    message = " ".join(done.stderr.split()) or f"exit status {done.returncode}"
    if any(fragment in message for fragment in tolerate):
        return ""
    raise SandboxError(f"{what} failed: {message[:300]}")


def write_proc(path: Path, value: str) -> None:
    path.write_text(value, encoding="ascii")
