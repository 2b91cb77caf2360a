"""A throwaway real S3 server for tests: Ceph's radosgw on a one-OSD, in-memory Ceph cluster.

Everything (config, monitor store, OSD data, sockets, logs) lives in one temporary directory
and every daemon listens on 127.0.0.1 only. Cephx is off between the daemons, but radosgw still
checks the SigV4 signature of every S3 request against the user's secret key (moto does not).
"""

from __future__ import annotations

import ctypes
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

DEBIAN_PACKAGES: tuple[str, ...] = ("ceph-base", "ceph-common", "ceph-mon", "ceph-osd", "radosgw")
BINARIES: tuple[str, ...] = ("monmaptool", "ceph-mon", "ceph", "ceph-osd", "radosgw", "radosgw-admin")
MON_ID = "a"
RGW_NAME = "client.rgw.test"
USER_ID = "tre-test"
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)

CONF_TEMPLATE = """\
[global]
fsid = {fsid}
mon host = [v2:127.0.0.1:{mon_port}]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
# radosgw asks for "secure" monitor connections by default, which need cephx
ms mon client mode = crc
keyring = {root}/keyring
run dir = {root}/run
admin socket = {root}/run/$cluster-$name.asok
pid file = {root}/run/$cluster-$name.pid
log file = {root}/log/$cluster-$name.log
mon cluster log file = {root}/log/$cluster.$channel.log
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
# the monitor would refuse to run on a disk with under 5% free; this store is tiny and throwaway
mon data avail crit = 0
mon data avail warn = 0
# commit monitor map changes at once: radosgw's first start makes ~8 pools, one paxos round each (11 s -> 1 s)
paxos propose interval = 0.05
rgw frontends = beast endpoint=127.0.0.1:{rgw_port}
rgw thread pool size = 16
"""


@dataclass
class RadosgwServer:
    """A running radosgw and its S3 user; `stop()` kills the daemons and removes `root`."""

    endpoint_url: str
    access_key: str
    secret_key: str
    root: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    @property
    def conf(self) -> Path:
        """The generated ceph.conf every daemon and tool is started with."""
        return self.root / "ceph.conf"

    def stop(self) -> None:
        """Kill every daemon (the data is throwaway, so no graceful shutdown) and delete `root`."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.kill()
            process.wait()
        self.processes.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def client(self, secret_key: str | None = None) -> Any:
        """A boto3 S3 client (SigV4, path-style) for this server; `secret_key` overrides the user's."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of every log under root/log, for error messages."""
        parts = []
        for log in sorted((self.root / "log").glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"==> {log.name} <==\n" + "\n".join(tail))
        return "\n".join(parts)


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


def _write_conf(server: RadosgwServer, fsid: str, mon_port: int, rgw_port: int, options: Mapping[str, str]) -> None:
    for sub in ("run", "log", "crash", "mon", "osd", "mgr", "rgw"):
        (server.root / sub).mkdir()
    text = CONF_TEMPLATE.format(
        fsid=fsid, mon_port=mon_port, root=server.root, memstore_bytes=1 << 30, rgw_port=rgw_port
    )
    server.conf.write_text(text + "".join(f"{name} = {value}\n" for name, value in options.items()))


def _run(server: RadosgwServer, argv: list[str], timeout: float) -> str:
    """Run a Ceph tool with this cluster's conf; RuntimeError with its output if it fails."""
    command = [argv[0], "-c", str(server.conf), *argv[1:]]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=max(timeout, 1), stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{' '.join(argv)} timed out") from exc
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the thread that started it ends without calling stop()."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


def _spawn(server: RadosgwServer, argv: list[str]) -> None:
    """Start a daemon in the foreground (-f) as our child; it logs to its own file under root/log."""
    stderr = (server.root / "log" / f"{argv[0]}.stderr.log").open("wb")
    with stderr:
        process = subprocess.Popen(
            [argv[0], "-c", str(server.conf), "-f", *argv[1:]],
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            preexec_fn=_die_with_parent,
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
    """Register one OSD with the monitor, format its memstore, and start it."""
    osd_uuid = str(uuid.uuid4())
    osd_id = _run(server, ["ceph", "--connect-timeout", str(int(timeout)), "osd", "new", osd_uuid], timeout).strip()
    (server.root / "osd" / f"ceph-{osd_id}").mkdir()
    _run(server, ["ceph-osd", "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid], timeout)
    _spawn(server, ["ceph-osd", "-i", osd_id])


def _create_user(server: RadosgwServer, timeout: float) -> None:
    argv = ["radosgw-admin", "user", "create", "--uid", USER_ID, "--display-name", USER_ID]
    _run(server, [*argv, f"--access-key={server.access_key}", f"--secret-key={server.secret_key}"], timeout)


def _s3_answers(server: RadosgwServer) -> bool:
    try:
        server.client().list_buckets()
    except (BotoCoreError, ClientError):
        return False
    return True


def _wait_for_s3(server: RadosgwServer, deadline: float) -> None:
    """Poll list_buckets with the user's keys until it succeeds, a daemon dies, or time runs out."""
    while not _s3_answers(server):
        dead = [str(p.args) for p in server.processes if p.poll() is not None]
        if dead:
            raise RuntimeError(f"Ceph daemon exited during startup: {', '.join(dead)}")
        if time.monotonic() > deadline:
            raise RuntimeError("radosgw did not answer S3 requests in time")
        time.sleep(0.25)


def _boot(server: RadosgwServer, rgw_port: int, deadline: float, options: Mapping[str, str]) -> None:
    fsid, mon_port = str(uuid.uuid4()), free_port()
    _write_conf(server, fsid, mon_port, rgw_port, options)
    _start_mon(server, fsid, mon_port, deadline - time.monotonic())
    _start_osd(server, deadline - time.monotonic())
    _create_user(server, deadline - time.monotonic())  # also creates the zone and pools, before radosgw races it
    _spawn(server, ["radosgw", "-n", RGW_NAME])
    _wait_for_s3(server, deadline)


def start_server(timeout: float = 120, options: Mapping[str, str] | None = None) -> RadosgwServer:
    """Start mon, OSD (memstore) and radosgw in a temp dir; return once S3 answers with the new user's keys.

    `options` are extra ceph.conf settings (e.g. {"rgw crypt require ssl": "false"}) for the [global] section.
    """
    _check_binaries()
    rgw_port = free_port()
    server = RadosgwServer(
        endpoint_url=f"http://127.0.0.1:{rgw_port}",
        access_key=secrets.token_hex(10).upper(),
        secret_key=secrets.token_hex(20),
        root=Path(tempfile.mkdtemp(prefix="tre-rgw-")),
    )
    try:
        _boot(server, rgw_port, time.monotonic() + timeout, options or {})
    except RuntimeError as exc:
        tail = server.log_tail()
        server.stop()
        raise RuntimeError(f"{exc}\n{tail}") from exc
    except BaseException:
        server.stop()
        raise
    return server
