"""The egress probe: runs INSIDE a workspace sandbox (``python -c SOURCE PLAN_JSON``) and tries to get out.

Standard library only. Each target is tried ``attempts`` times; a TCP or Unix socket attempt succeeds when a
connection is established, a UDP or DNS attempt when any reply arrives, a name lookup when it returns an address.
The report (what it is, what it can see and write, every success) is written to ``/outputs/probe.json``.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _address(host: str, port: int) -> Any:
    return socket.getaddrinfo(host, port, _family(host), socket.SOCK_STREAM)[0][4]


def _tcp(host: str, port: int, timeout: float) -> bool:
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(_address(host, port))
        return True


def _dns_query() -> bytes:
    header = struct.pack(">HHHHHH", 0x7E57, 0x0100, 1, 0, 0, 0)
    name = b"".join(bytes([len(part)]) + part for part in (b"example", b"com")) + b"\0"
    return header + name + struct.pack(">HH", 1, 1)


def _udp(host: str, port: int, timeout: float, payload: bytes = b"probe") -> bool:
    with socket.socket(_family(host), socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(payload, _address(host, port))
        return bool(sock.recv(512))


def _unix(path: str, timeout: float) -> bool:
    """A Unix socket by path, or an abstract one ("@name")."""
    address = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(address)
        return True


def _resolve(host: str, port: int, timeout: float) -> bool:
    del port, timeout
    return bool(socket.getaddrinfo(host, 80))


def attempt(target: dict[str, Any], timeout: float) -> str | None:
    """None if the attempt failed (the error's name), "ok" if it got through."""
    kind, host, port = target["kind"], target.get("host", ""), int(target.get("port", 0))
    try:
        if kind == "tcp":
            _tcp(host, port, timeout)
        elif kind == "udp":
            _udp(host, port, timeout)
        elif kind == "dns-udp":
            _udp(host, port, timeout, _dns_query())
        elif kind == "resolve":
            _resolve(host, port, timeout)
        elif kind == "unix":
            _unix(host, timeout)
        else:
            raise ValueError(f"unknown kind {kind}")
    except (OSError, ValueError) as exc:
        return type(exc).__name__ + (
            f":{errno.errorcode.get(exc.errno, exc.errno)}" if isinstance(exc, OSError) and exc.errno else ""
        )
    return "ok"


def try_everything(targets: list[dict[str, Any]], attempts: int, timeout: float) -> list[dict[str, Any]]:
    jobs = [(t, n) for t in targets for n in range(attempts)]
    with ThreadPoolExecutor(max_workers=48) as pool:
        outcomes = list(pool.map(lambda job: attempt(job[0], timeout), jobs))
    report: dict[str, dict[str, Any]] = {}
    for (target, _), outcome in zip(jobs, outcomes, strict=True):
        entry = report.setdefault(target["name"], {**target, "successes": 0, "errors": []})
        if outcome == "ok":
            entry["successes"] += 1
        elif outcome not in entry["errors"]:
            entry["errors"].append(outcome)
    return list(report.values())


def identity() -> dict[str, Any]:
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "gid": os.getgid(),
        "groups": os.getgroups(),
        "cap_eff": status["CapEff"].strip(),
        "cap_bnd": status["CapBnd"].strip(),
        "no_new_privs": status["NoNewPrivs"].strip(),
        "pid": os.getpid(),
        "interfaces": sorted(name for _, name in socket.if_nameindex()),
        "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "new_user_namespace": _new_user_namespace(),
    }


def _new_user_namespace() -> str:
    """ "ok" if a process here could create a user namespace (tried in a child, which then exits)."""
    import ctypes

    pid = os.fork()
    if pid == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        os._exit(0 if libc.unshare(0x10000000) == 0 else ctypes.get_errno())  # CLONE_NEWUSER
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    return "ok" if code == 0 else errno.errorcode.get(code, str(code))


def files(data_file: str) -> dict[str, Any]:
    result: dict[str, Any] = {"data_read": Path("/data", data_file).read_text()}
    try:
        Path("/data/written-by-probe").write_text("x")
        result["data_write"] = "ok"
    except OSError as exc:
        result["data_write"] = errno.errorcode.get(exc.errno or 0, "?")
    Path("/outputs/written-by-probe.txt").write_text("probe output\n")
    result["outputs_write"] = "ok"
    return result


def hidden(paths: list[str]) -> dict[str, bool]:
    """For each host path: True if it cannot be seen from here."""
    return {path: not os.path.lexists(path) for path in paths}


def write_attempt(path: str) -> str:
    try:
        Path(path).write_text("x")
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, "?")
    return "ok"


def hub(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - the plan's own hub URL
        return str(response.read().decode())


def main() -> None:
    plan = json.loads(sys.argv[1])
    report: dict[str, Any] = {"identity": identity(), **files(plan["data_file"])}
    report["hub"] = hub(plan["hub_url"]) if plan.get("hub_url") else None
    report["hidden"] = hidden(plan.get("hidden", []))
    report["writes"] = {path: write_attempt(path) for path in plan.get("writes", [])}
    report["listings"] = {path: sorted(os.listdir(path)) for path in plan.get("listings", [])}
    report["results"] = try_everything(plan["targets"], plan["attempts"], plan["timeout"])
    Path("/outputs/probe.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
