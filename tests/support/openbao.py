"""A throwaway OpenBao dev server on a free loopback port, for tests.

A dev server keeps everything in memory, starts unsealed and mounts KV version 2 at ``secret/``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
KEY_GRACE = 3.0
_UNSEAL_KEY = re.compile(r"^Unseal Key: (\S+)$", re.MULTILINE)


def find_bao() -> Path:
    """The ``bao`` binary next to this Python (a virtualenv), else on PATH; FileNotFoundError if absent."""
    beside = Path(sys.executable).parent / "bao"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("bao")
    if found is None:
        raise FileNotFoundError("no bao binary next to the Python interpreter or on PATH")
    return Path(found)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class OpenBaoServer:
    url: str
    root_token: str
    process: subprocess.Popen[bytes]
    home: Path
    unseal_key: str | None = None

    @property
    def log(self) -> str:
        return (self.home / "bao.log").read_text(errors="replace")

    def stop(self) -> None:
        """Terminate the server (kill it if it does not stop in time) and remove its files."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)
        shutil.rmtree(self.home, ignore_errors=True)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v1/sys/health", timeout=1.0) as response:  # noqa: S310  (http on loopback)
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def _wait_until_ready(server: OpenBaoServer) -> None:
    """Wait until the server answers health checks, and read its unseal key from the log if it prints one."""
    deadline = time.monotonic() + START_TIMEOUT
    healthy_since: float | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"bao exited with code {server.process.returncode}:\n{server.log[-2000:]}")
        if match := _UNSEAL_KEY.search(server.log):
            server.unseal_key = match.group(1)
        if healthy_since is None and _healthy(server.url):
            healthy_since = time.monotonic()
        if healthy_since is not None and (server.unseal_key or time.monotonic() - healthy_since > KEY_GRACE):
            return
        time.sleep(0.1)
    raise RuntimeError(f"bao did not become ready within {START_TIMEOUT:g}s:\n{server.log[-2000:]}")


def start_server() -> OpenBaoServer:
    """Start a dev server and wait until it answers; the caller must ``stop()`` it."""
    bao = find_bao()
    port = free_port()
    token = f"root-{secrets.token_hex(12)}"
    home = Path(tempfile.mkdtemp(prefix="tre-openbao-"))
    env = {key: value for key, value in os.environ.items() if not key.startswith(("BAO_", "VAULT_"))}
    env["HOME"] = str(home)  # the dev server's token helper writes there, not to the real home
    argv = [
        str(bao),
        "server",
        "-dev",
        f"-dev-listen-address=127.0.0.1:{port}",
        f"-dev-root-token-id={token}",
        "-dev-no-store-token",
    ]
    with (home / "bao.log").open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    server = OpenBaoServer(url=f"http://127.0.0.1:{port}", root_token=token, process=process, home=home)
    try:
        _wait_until_ready(server)
    except BaseException:
        server.stop()
        raise
    return server
