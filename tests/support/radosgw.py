"""A throwaway S3 server for tests: Ceph's radosgw on a one-OSD, in-memory Ceph cluster.

Everything (config, monitor store, OSD data, sockets, logs) lives in one temporary
directory; the daemons listen on 127.0.0.1 only. Cephx is off between the daemons, but
radosgw still checks the S3 (SigV4) signature of every request against the user's secret.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

DEBIAN_PACKAGES: tuple[str, ...] = ("ceph-base", "ceph-common", "ceph-mon", "ceph-osd", "radosgw")
BINARIES: tuple[str, ...] = ("monmaptool", "ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph")
MON_ID = "a"
RGW_NAME = "client.rgw.test"
USER_ID = "tre-test"

CONF_TEMPLATE = """\
[global]
fsid = {fsid}
mon host = [v2:127.0.0.1:{mon_port}]
public addr = 127.0.0.1
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
keyring = {root}/keyring
run dir = {root}/run
admin socket = {root}/run/$cluster-$name.asok
pid file = {root}/run/$cluster-$name.pid
log file = {root}/log/$cluster-$name.log
crash dir = {root}/crash
mon data = {root}/mon/$cluster-$id
osd data = {root}/osd/$cluster-$id
mgr data = {root}/mgr/$cluster-$id
rgw data = {root}/rgw/$cluster-$id
osd objectstore = memstore
memstore device bytes = {memstore_bytes}
osd crush chooseleaf type = 0
osd crush initial weight = 1
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
rgw frontends = beast endpoint=127.0.0.1:{rgw_port}
rgw thread pool size = 16
# radosgw defaults to "secure" mon connections, which need cephx
ms mon client mode = crc
"""


@dataclass
class RadosgwServer:
    """A running radosgw; `stop()` kills its daemons and removes its directory."""

    endpoint_url: str
    access_key: str
    secret_key: str
    root: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    @property
    def conf(self) -> Path:
        return self.root / "ceph.conf"

    def stop(self) -> None:
        """Stop every daemon (newest first) and delete the temporary directory."""
        for process in reversed(self.processes):
            _terminate(process)
        self.processes.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def client(self, secret_key: str | None = None) -> object:
        """A boto3 S3 client for this server, optionally signing with another secret."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name="us-east-1",
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of every daemon log, for error messages."""
        parts = []
        for log in sorted((self.root / "log").glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"==> {log.name} <==\n" + "\n".join(tail))
        return "\n".join(parts)


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _check_binaries() -> None:
    missing = [name for name in BINARIES if shutil.which(name) is None]
    if missing:
        packages = " ".join(DEBIAN_PACKAGES)
        raise FileNotFoundError(f"Ceph binaries not found: {', '.join(missing)} (Debian packages: {packages})")


def _write_conf(server: RadosgwServer, fsid: str, mon_port: int, rgw_port: int) -> None:
    for sub in ("run", "log", "crash", "mon", "osd", "mgr", "rgw"):
        (server.root / sub).mkdir()
    text = CONF_TEMPLATE.format(
        fsid=fsid,
        mon_port=mon_port,
        mon_id=MON_ID,
        root=server.root,
        memstore_bytes=1 << 30,
        rgw_port=rgw_port,
    )
    server.conf.write_text(text)


def _run(server: RadosgwServer, argv: list[str], timeout: float) -> str:
    """Run a Ceph tool against this cluster; RuntimeError with its output if it fails."""
    try:
        done = subprocess.run(
            [argv[0], "-c", str(server.conf), *argv[1:]],
            capture_output=True,
            text=True,
            timeout=max(timeout, 1),
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{' '.join(argv)} timed out after {timeout:.0f}s") from exc
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def _spawn(server: RadosgwServer, argv: list[str]) -> None:
    """Start a daemon in the foreground (-f) as a child, logging to its file under root/log."""
    process = subprocess.Popen(
        [argv[0], "-c", str(server.conf), "-f", *argv[1:]],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=(server.root / "log" / f"{Path(argv[0]).name}.stderr.log").open("wb"),
    )
    server.processes.append(process)


def _start_mon(server: RadosgwServer, fsid: str, mon_port: int, timeout: float) -> None:
    """Create a one-monitor map and store, then start the monitor."""
    monmap = str(server.root / "monmap")
    address = f"[v2:127.0.0.1:{mon_port}]"
    _run(server, ["monmaptool", "--create", "--fsid", fsid, "--addv", MON_ID, address, monmap], timeout)
    _run(server, ["ceph-mon", "--mkfs", "-i", MON_ID, "--monmap", monmap], timeout)
    _spawn(server, ["ceph-mon", "-i", MON_ID])


def _start_osd(server: RadosgwServer, timeout: float) -> None:
    osd_uuid = str(uuid.uuid4())
    osd_id = _run(server, ["ceph", "--connect-timeout", str(int(timeout)), "osd", "new", osd_uuid], timeout).strip()
    (server.root / "osd" / f"ceph-{osd_id}").mkdir()
    _run(server, ["ceph-osd", "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid], timeout)
    _spawn(server, ["ceph-osd", "-i", osd_id])


def _create_user(server: RadosgwServer, timeout: float) -> None:
    argv = ["radosgw-admin", "user", "create", "--uid", USER_ID, "--display-name", USER_ID]
    keys = ["--access-key", server.access_key, "--secret-key", server.secret_key]
    _run(server, [*argv, *keys], timeout)


def _s3_answers(server: RadosgwServer) -> bool:
    try:
        server.client().list_buckets()  # type: ignore[attr-defined]
    except (BotoCoreError, ClientError):
        return False
    return True


def _wait_for(ready: Callable[[], bool], server: RadosgwServer, deadline: float) -> None:
    while not ready():
        dead = [p.args[0] for p in server.processes if p.poll() is not None]
        if dead:
            raise RuntimeError(f"Ceph daemon exited during startup: {', '.join(map(str, dead))}")
        if time.monotonic() > deadline:
            raise RuntimeError("radosgw did not answer S3 requests in time")
        time.sleep(0.5)


def _remaining(deadline: float) -> float:
    return deadline - time.monotonic()


def start_server(timeout: float = 120) -> RadosgwServer:
    """Start mon, OSD (memstore) and radosgw in a temp dir; return once S3 answers with the new user's keys."""
    _check_binaries()
    deadline = time.monotonic() + timeout
    rgw_port = free_port()
    server = RadosgwServer(
        endpoint_url=f"http://127.0.0.1:{rgw_port}",
        access_key=secrets.token_hex(10).upper(),
        secret_key=secrets.token_urlsafe(30),
        root=Path(tempfile.mkdtemp(prefix="tre-rgw-")),
    )
    try:
        fsid, mon_port = str(uuid.uuid4()), free_port()
        _write_conf(server, fsid, mon_port, rgw_port)
        _start_mon(server, fsid, mon_port, _remaining(deadline))
        _start_osd(server, _remaining(deadline))
        _spawn(server, ["radosgw", "-n", RGW_NAME])
        _create_user(server, _remaining(deadline))
        _wait_for(lambda: _s3_answers(server), server, deadline)
    except BaseException as exc:
        tail = server.log_tail()
        server.stop()
        if isinstance(exc, RuntimeError):
            raise RuntimeError(f"{exc}\n{tail}") from exc
        raise
    return server
