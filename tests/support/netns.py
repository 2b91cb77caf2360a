"""Network fixtures for the sandbox tests: a throwaway sandbox host, a "test host" in its own network namespace,
TCP/UDP listeners that record who reached them, and a stand-in hub.

Everything here is created with unique names and removed by ``close()``, which the fixtures call in finalizers.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from tre.workspaces._claims import claim
from tre.workspaces._network import check_pool_is_free
from tre.workspaces.sandbox import SandboxError, SandboxHost, check_sandbox_support

REQUIRE_SANDBOX = os.environ.get("TRE_TEST_REQUIRE_SANDBOX") == "1"
LISTENER_TIMEOUT = 10.0

# Runs in any network namespace: TCP and UDP listeners on "::" (IPv4 and IPv6); each connection or datagram is
# recorded as a JSON line; TCP answers "hello", UDP echoes. Port 0 picks a free port. Prints the ports, then serves.
LISTENER = r"""
import json, socket, sys, threading
log_path, tcp_ports, udp_ports = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
lock = threading.Lock()
def record(kind, port, peer):
    with lock, open(log_path, "a") as log:
        log.write(json.dumps({"kind": kind, "port": port, "peer": peer[0]}) + "\n")
def bound(kind, port):
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    return s
def tcp(s, port):
    s.listen(64)
    while True:
        c, peer = s.accept()
        record("tcp", port, peer)
        try:
            c.sendall(b"hello\n")
        finally:
            c.close()
def udp(s, port):
    while True:
        data, peer = s.recvfrom(4096)
        record("udp", port, peer)
        s.sendto(b"echo:" + data[:64], peer)
ports = {"tcp": [], "udp": []}
kinds = ((socket.SOCK_STREAM, tcp_ports, tcp, "tcp"), (socket.SOCK_DGRAM, udp_ports, udp, "udp"))
for kind, wanted, serve, name in kinds:
    for port in wanted:
        s = bound(kind, port)
        actual = s.getsockname()[1]
        ports[name].append(actual)
        threading.Thread(target=serve, args=(s, actual), daemon=True).start()
print(json.dumps(ports), flush=True)
threading.Event().wait()
"""


def require_sandbox_support() -> None:
    """Skip when this machine cannot sandbox (not root, no namespaces); under TRE_TEST_REQUIRE_SANDBOX=1, fail."""
    support = check_sandbox_support()
    if support.ok:
        return
    reason = f"workspace sandbox unavailable: {support.problems[0]}"
    if REQUIRE_SANDBOX:
        pytest.fail(f"TRE_TEST_REQUIRE_SANDBOX=1 but {reason}")
    pytest.skip(reason)


def unique_sandbox_host(state_dir: Path) -> SandboxHost:
    """A sandbox host of its own (pool, table, names), so tests never touch a real TRE's sandboxes or each other."""
    for _ in range(20):
        tag = secrets.token_hex(2)
        pool = IPv4Network(f"10.214.{secrets.randbelow(230) + 16}.0/24")
        host = SandboxHost(pool=pool, table=f"tre_test_{tag}", prefix=f"tq{tag}", state_dir=state_dir)
        try:
            check_pool_is_free(host)
            claim(host)  # what prepare_host will do: refused if another TRE (a concurrent test run) holds it
        except SandboxError:
            continue
        return host
    raise RuntimeError("no free test address pool in 10.214.0.0/16")


@dataclass
class Listener:
    """A listener process; ``ports`` as it bound them, ``records()`` who reached it."""

    process: subprocess.Popen[str]
    log_path: Path
    tcp_ports: list[int]
    udp_ports: list[int]

    def records(self) -> list[dict[str, object]]:
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=LISTENER_TIMEOUT)
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_listener(log_path: Path, tcp: list[int], udp: list[int], *, netns: str | None = None) -> Listener:
    argv = [sys.executable, "-c", LISTENER, str(log_path), json.dumps(tcp), json.dumps(udp)]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    try:
        ports = json.loads(line)
    except json.JSONDecodeError:
        process.kill()
        process.wait()
        raise RuntimeError(f"listener did not start: {line}{process.stdout.read()}") from None
    return Listener(process, log_path, ports["tcp"], ports["udp"])


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class OutsideHost:
    """A machine outside the sandboxes: its own network namespace, joined to the host by a veth, with addresses the
    host can route to (IPv4 198.18.x.2, IPv6 fd5e:…::2) and TCP and UDP listeners."""

    name: str
    ipv4: str
    ipv6: str
    host_ipv4: str
    listener: Listener | None = None
    extra: list[Listener] = field(default_factory=list)

    @classmethod
    def create(cls, work: Path, tcp: list[int], udp: list[int]) -> OutsideHost:
        tag = secrets.token_hex(3)
        octet = secrets.randbelow(250) + 1
        host = cls(f"trth{tag}", f"198.18.{octet}.2", f"fd5e:{tag[:4]}::2", f"198.18.{octet}.1")
        try:
            host._build(tag)
            host.listener = start_listener(work / f"{host.name}.jsonl", tcp, udp, netns=host.name)
        except BaseException:
            host.close()
            raise
        return host

    def _build(self, tag: str) -> None:
        _ip("netns", "add", self.name)
        _ip("link", "add", self.name, "type", "veth", "peer", "name", "eth0", "netns", self.name)
        _ip("addr", "add", f"{self.host_ipv4}/30", "dev", self.name)
        _ip("-6", "addr", "add", f"fd5e:{tag[:4]}::1/64", "dev", self.name, "nodad")
        _ip("link", "set", self.name, "up")
        _ip("-n", self.name, "link", "set", "lo", "up")
        _ip("-n", self.name, "addr", "add", f"{self.ipv4}/30", "dev", "eth0")
        _ip("-n", self.name, "-6", "addr", "add", f"{self.ipv6}/64", "dev", "eth0", "nodad")
        _ip("-n", self.name, "link", "set", "eth0", "up")
        _ip("-n", self.name, "route", "add", "default", "via", self.host_ipv4)

    def close(self) -> None:
        for listener in [*([self.listener] if self.listener else []), *self.extra]:
            listener.close()
        subprocess.run(["ip", "link", "del", self.name], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)


class _HubHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"fake hub\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def fake_hub(address: str) -> Iterator[int]:
    """A tiny HTTP server standing in for the hub, on ``address`` and a free port; yields the port."""
    server = http.server.ThreadingHTTPServer((address, 0), _HubHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=LISTENER_TIMEOUT)


def machine_addresses() -> list[tuple[str, str]]:
    """Every non-loopback address of this machine (network namespace), as (address, interface)."""
    done = subprocess.run(["ip", "-j", "addr"], check=True, capture_output=True, text=True)
    found = []
    for link in json.loads(done.stdout):
        for info in link.get("addr_info", []):
            address = info.get("local", "")
            if address and not address.startswith("127.") and address != "::1":
                found.append((address, link["ifname"]))
    return found


def resolvers() -> list[str]:
    try:
        lines = Path("/etc/resolv.conf").read_text().splitlines()
    except OSError:
        return []
    return [line.split()[1] for line in lines if line.startswith("nameserver") and len(line.split()) > 1]


def tcp_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """True if a TCP connection from here succeeds (positive controls: the probe's targets are alive)."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def udp_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(b"control", (host, port))
            return sock.recv(64).startswith(b"echo:")
        except OSError:
            return False


def wait_for_tcp(host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not tcp_answers(host, port, timeout=0.5):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing answered at {host}:{port} within {timeout:g}s")
        time.sleep(0.1)
