"""Rootless sandboxes in tests: run things as a genuinely unprivileged uid, and drive a sandbox from there.

The rootless mode is for a hub that is not root, and refuses to run as root. So these tests run the sandbox's
owner (a small driver, a JupyterHub, ``tre up``) as an unprivileged uid: as root, by dropping to a uid no one
uses just before ``exec`` (so signals reach the program itself); otherwise as the tests' own user. When the Python
in use lives below a directory other users cannot enter (e.g. a pyenv under ``/root``), the child first gets a
mount namespace of its own where just that installation is visible, at its own path.

The driver (``python -m tests.support.rootless PLAN_JSON``, as that uid) prepares and launches one sandbox, prints
one JSON line, then obeys commands on stdin, one per line, answering each with one JSON line: ``wait``,
``stop``, ``clear`` (clear_leftovers on its host), ``exit``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import pytest

REPO = Path(__file__).resolve().parents[2]
REQUIRE_SANDBOX = os.environ.get("TRE_TEST_REQUIRE_SANDBOX") == "1"
TEST_UID = 2_099_000 + secrets.randbelow(900)  # as root: a uid no one else uses, so its processes are ours
DRIVER_TIMEOUT = 120.0


def unprivileged_uid() -> int:
    return TEST_UID if os.geteuid() == 0 else os.getuid()


def _closed_ancestor(path: Path) -> Path | None:
    """The topmost directory above ``path`` that other users cannot enter, if any."""
    for parent in reversed(path.resolve().parents):
        if parent != Path("/") and not parent.stat().st_mode & stat.S_IXOTH:
            return parent
    return None


_LIBC = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNS, _MS_BIND, _MS_REC, _MS_PRIVATE = 0x00020000, 0x1000, 0x4000, 0x40000


def _check(result: int) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))


def _exposures(paths: Sequence[Path]) -> list[tuple[Path, Path]]:
    """(closed ancestor, path) for each of ``paths`` that other users cannot reach."""
    found = []
    for path in dict.fromkeys(p.resolve() for p in paths):
        closed = _closed_ancestor(path)
        if closed is not None:
            found.append((closed, path))
    return found


def become_unprivileged(uid: int | None = None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child ``uid``, with no groups and no privilege (None when not root). If the
    Python in use is below a directory others cannot enter, the child first gets a mount namespace of its own
    where a tmpfs covers that directory and only the Python installation is bound back, at its own path."""
    if os.geteuid() != 0:
        return None
    uid = unprivileged_uid() if uid is None else uid
    exposures = _exposures([Path(sys.base_prefix), Path(sys.prefix)])

    def preexec() -> None:  # runs in the child, between fork and exec: system calls only
        if exposures:
            _check(_LIBC.unshare(_CLONE_NEWNS))
            _check(_LIBC.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None))
            sources = [(closed, path, os.open(path, os.O_PATH)) for closed, path in exposures]  # this namespace's
            covered: set[Path] = set()
            for closed, path, fd in sources:
                if closed not in covered:
                    covered.add(closed)
                    _check(_LIBC.mount(b"tmpfs", bytes(closed), b"tmpfs", 0, b"mode=0755"))
                os.makedirs(path, mode=0o755, exist_ok=True)
                _check(_LIBC.mount(f"/proc/self/fd/{fd}".encode(), bytes(path), None, _MS_BIND | _MS_REC, None))
                os.close(fd)
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)

    return preexec


@contextlib.contextmanager
def private_directory(prefix: str) -> Iterator[Path]:
    """A 0700 directory owned by the unprivileged uid (in /tmp: pytest's own directories are root's)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        if os.geteuid() == 0:
            os.chown(path, unprivileged_uid(), unprivileged_uid())
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def give(path: Path) -> None:
    """Hand ``path`` (recursively) to the unprivileged uid."""
    if os.geteuid() != 0:
        return
    uid = unprivileged_uid()
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            os.lchown(Path(root) / name, uid, uid)
    os.chown(path, uid, uid)


def python_env(**extra: str) -> dict[str, str]:
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHONPATH": str(REPO), "LANG": "C.UTF-8"}
    return env | extra


def rootless_problem() -> str | None:
    """Why an unprivileged uid cannot run rootless sandboxes here, or None."""
    code = (
        "from tre.workspaces.sandbox import SandboxMode, check_sandbox_support as c\n"
        "print((c(SandboxMode.ROOTLESS).problems or [''])[0])"
    )
    argv = [sys.executable, "-c", code]
    done = subprocess.run(
        argv, capture_output=True, text=True, env=python_env(), cwd="/", check=False,
        preexec_fn=become_unprivileged(),
    )  # fmt: skip
    if done.returncode != 0:
        return f"cannot run Python as uid {unprivileged_uid()}: {done.stderr.strip()[-300:]}"
    return done.stdout.strip() or None


def require_rootless_support() -> None:
    """Skip when rootless sandboxes cannot run here; under TRE_TEST_REQUIRE_SANDBOX=1, fail."""
    problem = rootless_problem()
    if problem is None:
        return
    reason = f"rootless workspace sandbox unavailable: {problem}"
    if REQUIRE_SANDBOX:
        pytest.fail(f"TRE_TEST_REQUIRE_SANDBOX=1 but {reason}")
    pytest.skip(reason)


def _command_lines(*needles: str) -> list[tuple[int, str]]:
    """Live processes whose command line contains any of ``needles`` (not the drivers, which name them all)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if any(needle in cmdline for needle in needles) and "tests.support.rootless" not in cmdline:
            found.append((int(entry.name), cmdline))
    return found


def processes_mentioning(*needles: str) -> list[str]:
    return [f"{pid}: {cmdline[:160]}" for pid, cmdline in _command_lines(*needles)]


def workspace_pid(marker: str) -> int:
    """The pid of the workspace's own process started with ``marker`` as its last argument."""
    (pid,) = [
        pid
        for pid, cmdline in _command_lines(marker)
        if cmdline.endswith(marker) and "relay.py" not in cmdline and "bwrap" not in cmdline
    ]
    return pid


class Driver:
    """The driver process (as the unprivileged uid), seen from the test."""

    def __init__(self, plan: dict[str, Any], work: Path) -> None:
        argv = [sys.executable, "-m", "tests.support.rootless", json.dumps(plan)]
        self.log = work / "driver.log"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=python_env(),
                cwd=str(REPO), preexec_fn=become_unprivileged(),
            )  # fmt: skip
        self.started = self._answer()

    def _answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=DRIVER_TIMEOUT)
            raise AssertionError(f"the driver ended: {self.log.read_text()[-3000:]}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._answer()

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(BrokenPipeError, AssertionError):
                self.ask("exit")
            try:
                self.process.wait(timeout=DRIVER_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


# The driver's side: runs as the unprivileged uid.


def _drive(plan: dict[str, Any], commands: IO[str]) -> None:
    from tre.workspaces._process import wait_until
    from tre.workspaces.sandbox import (
        Limits,
        Sandbox,
        SandboxHost,
        SandboxMode,
        SandboxSpec,
        clear_leftovers,
        prepare_host,
    )

    host = SandboxHost(state_dir=Path(plan["state_dir"]), mode=SandboxMode.ROOTLESS)
    prepare_host(host)
    spec = SandboxSpec(
        plan["sandbox_id"], "researcher", Path(plan["data_dir"]), Path(plan["outputs_dir"]), Path(plan["home_dir"]),
        tuple(plan["hub_ports"]), Limits(memory_bytes=2 * 1024**3, tasks=256),
        server_port=int(plan.get("server_port", 8888)),
    )  # fmt: skip
    sandbox = Sandbox(host, spec.sandbox_id)
    prepared = sandbox.prepare(spec)
    env = {"PATH": "/usr/bin:/bin", "HOME": spec.home_inside, "LANG": "C.UTF-8"}
    process = sandbox.launch(prepared, plan["argv"], env, log_path=Path(plan["log"]))
    _say({"endpoint": sandbox.endpoint, "relay": process.pid, "sockets": str(prepared.sockets), "pid": os.getpid()})
    for line in commands:
        command = line.strip()
        if command == "wait":
            wait_until(lambda: sandbox.poll() is not None, DRIVER_TIMEOUT)
            _say({"status": sandbox.poll()})
        elif command == "stop":
            sandbox.stop(grace=float(plan.get("grace", 2.0)))
            _say({"status": sandbox.poll(), "sockets_left": Path(str(prepared.sockets)).exists()})
        elif command == "clear":
            _say({"cleared": clear_leftovers(host), "sockets_left": Path(str(prepared.sockets)).exists()})
        elif command == "exit":
            _say({})
            return


def _say(document: dict[str, Any]) -> None:
    print(json.dumps(document), flush=True)


if __name__ == "__main__":
    _drive(json.loads(sys.argv[1]), sys.stdin)
