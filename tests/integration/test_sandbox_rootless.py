"""Security proof of the rootless mode: real bubblewrap, real relays, a genuinely unprivileged uid, no mocks.

A driver running as an unprivileged uid (tests/support/rootless.py) prepares and launches each sandbox, as a hub
without root would. Inside, the egress probe (tests/support/egress_probe.py) tries, three times each: TCP and UDP to
a listener on every address of this machine (loopback included), IPv6 loopback, the metadata address, public
addresses, DNS, name lookups, a test host in another network namespace (as root), an abstract and a filesystem
Unix socket on the host, and a neighbouring rootless workspace (its server port, and its hub-facing port). Every
attempt must fail, while the hub's relay answers. It sees only ``lo``, a handful of its own pids, no host paths but
the ones mounted (not the TRE home, not another project's data), cannot write ``/data`` or ``/run/tre``, has no
capabilities and cannot make user namespaces. The server's socket cannot be swapped for a link that would make the
outside relay connect elsewhere. Stopping, or killing the hub or the workspace, leaves no process or socket behind.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration import test_sandbox_spawner as spawner_tests
from tests.support import openbao
from tests.support.netns import (
    Listener,
    OutsideHost,
    machine_addresses,
    resolvers,
    start_listener,
    tcp_answers,
    udp_answers,
)
from tests.support.postgres import free_port
from tests.support.rootless import (
    REPO,
    Driver,
    become_unprivileged,
    give,
    private_directory,
    processes_mentioning,
    python_env,
    require_rootless_support,
    unprivileged_uid,
    workspace_pid,
)
from tre.workspaces._process import wait_until
from tre.workspaces.sandbox import SandboxHost, SandboxMode

PROBE = (Path(__file__).parent.parent / "support" / "egress_probe.py").read_text()
DATA = "pseudonym,hba1c\nab12,48\n"
SERVER_PORT = 8888
VENV_BIN = Path(sys.executable).parent
DEATH_TIMEOUT = 30.0

Target = dict[str, Any]


class _RecordingHub(http.server.BaseHTTPRequestHandler):
    paths: list[str]

    def do_GET(self) -> None:
        self.paths.append(self.path)
        body = b"fake hub\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def recording_hub() -> Iterator[tuple[int, list[str]]]:
    """A stand-in hub on 127.0.0.1 (any free port) that records every path asked of it."""
    paths: list[str] = []
    handler = type("Hub", (_RecordingHub,), {"paths": paths})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1]), paths
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class UnixListener:
    """A Unix socket listener on the host that counts who reached it."""

    address: str
    accepted: list[int] = field(default_factory=list)

    @classmethod
    @contextlib.contextmanager
    def running(cls, address: str) -> Iterator[UnixListener]:
        listener = cls(address)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind("\0" + address[1:] if address.startswith("@") else address)
        if not address.startswith("@"):
            os.chmod(address, 0o777)  # noqa: S103 - anyone on the host may connect: only the sandbox's view stops it
        sock.listen(16)
        thread = threading.Thread(target=listener._serve, args=(sock,), daemon=True)
        thread.start()
        try:
            yield listener
        finally:
            sock.close()
            if not address.startswith("@"):
                Path(address).unlink(missing_ok=True)

    def _serve(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = sock.accept()
                self.accepted.append(1)
                connection.close()


@dataclass
class World:
    work: Path
    home: Path
    data_dir: Path
    other_data: Path
    hub_port: int
    hub_paths: list[str]
    local: Listener
    unix: list[UnixListener]
    outside: OutsideHost | None
    addresses: list[tuple[str, str]]
    neighbour: dict[str, Any] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.home / "workspaces" / "sandbox"

    def plan(self, sandbox_id: str, argv: list[str]) -> dict[str, Any]:
        base = self.home / "workspaces" / sandbox_id
        return {
            "state_dir": str(self.state_dir), "sandbox_id": sandbox_id, "data_dir": str(self.data_dir),
            "outputs_dir": str(base / "outputs"), "home_dir": str(base / "home"), "hub_ports": [self.hub_port],
            "server_port": SERVER_PORT, "argv": argv, "log": str(self.work / f"{sandbox_id}.log"),
        }  # fmt: skip

    def outputs(self, sandbox_id: str) -> Path:
        return self.home / "workspaces" / sandbox_id / "outputs"


def _tre_home(work: Path) -> tuple[Path, Path, Path]:
    """A TRE home as tre up lays it out: private, with secrets, this project's extract and another's."""
    home = work / "home"
    data_dir = home / "objects" / "extracts" / "proj-a" / "e1"
    other = home / "objects" / "extracts" / "proj-b" / "e1"
    for directory in (data_dir, other, home / "openbao"):
        directory.mkdir(parents=True)
    (data_dir / "extract.csv").write_text(DATA)
    (other / "secret.csv").write_text("not for proj-a\n")
    (home / "openbao" / "root-token").write_text("s.secret\n")
    home.chmod(0o700)
    give(work)
    return home, data_dir, other


@contextlib.contextmanager
def _neighbour(world_work: Path, plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    driver = Driver(plan, world_work)
    try:
        yield driver.started
    finally:
        driver.close()


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    require_rootless_support()
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(private_directory("tre-rootless-"))
        home, data_dir, other = _tre_home(work)
        hub_port, hub_paths = stack.enter_context(recording_hub())
        local = start_listener(work / "local.jsonl", [0], [0])
        stack.callback(local.close)
        token = secrets.token_hex(4)
        unix = [
            stack.enter_context(UnixListener.running(f"@tre-test-{token}")),
            stack.enter_context(UnixListener.running(f"/tmp/tre-test-{token}.sock")),
        ]
        addresses = machine_addresses()  # before the test host's link exists (its own are targets of their own)
        outside = None
        if os.geteuid() == 0:
            outside = OutsideHost.create(work, [80, 443, 53], [9999])
            stack.callback(outside.close)
        world = World(work, home, data_dir, other, hub_port, hub_paths, local, unix, outside, addresses)
        serve = [sys.executable, "-m", "http.server", str(SERVER_PORT), "--bind", "127.0.0.1"]
        world.neighbour = stack.enter_context(_neighbour(work, world.plan("proj-b.bob", serve)))
        yield world


def _tcp(name: str, host: str, port: int) -> Target:
    return {"name": name, "kind": "tcp", "host": host, "port": port}


def _udp(name: str, host: str, port: int, kind: str = "udp") -> Target:
    return {"name": name, "kind": kind, "host": host, "port": port}


def _scoped(address: str, interface: str) -> str:
    return f"{address}%{interface}" if address.startswith("fe80") else address


def _targets(world: World) -> list[Target]:
    tcp_port, udp_port = world.local.tcp_ports[0], world.local.udp_ports[0]
    neighbour_port = int(world.neighbour["endpoint"][1])
    targets = [
        _tcp("host loopback, a listener", "127.0.0.1", tcp_port),
        _tcp("host IPv6 loopback, a listener", "::1", tcp_port),
        _udp("host loopback udp", "127.0.0.1", udp_port),
        _tcp("neighbour's hub-facing port", "127.0.0.1", neighbour_port),
        _tcp("neighbour's server port", "127.0.0.1", SERVER_PORT),
        _tcp("hub port on IPv6 loopback", "::1", world.hub_port),
        _tcp("metadata address", "169.254.169.254", 80),
        _tcp("public 1.1.1.1 tcp/443", "1.1.1.1", 443),
        _udp("public 8.8.8.8 dns/udp", "8.8.8.8", 53, "dns-udp"),
        _tcp("public IPv6 tcp/443", "2606:4700:4700::1111", 443),
        {"name": "name lookup example.com", "kind": "resolve", "host": "example.com"},
    ]
    targets += [{"name": f"host unix socket {u.address}", "kind": "unix", "host": u.address} for u in world.unix]
    for address, interface in world.addresses:
        label, scoped = f"machine {address} ({interface})", _scoped(address, interface)
        targets += [_tcp(f"{label} tcp/{p}", scoped, p) for p in (tcp_port, world.hub_port, 22, 80)]
        targets += [_udp(f"{label} udp/{udp_port}", scoped, udp_port)]
    for resolver in resolvers():
        targets += [_udp(f"resolver {resolver} dns/udp", resolver, 53, "dns-udp")]
        targets += [_tcp(f"resolver {resolver} dns/tcp", resolver, 53)]
    if world.outside is not None:
        o = world.outside
        targets += [_tcp(f"test host {o.ipv4} tcp/{p}", o.ipv4, p) for p in (80, 443, 53)]
        targets += [_udp(f"test host {o.ipv4} udp/9999", o.ipv4, 9999), _tcp(f"test host {o.ipv6}", o.ipv6, 80)]
    return targets


def _run_probe(world: World, sandbox_id: str, targets: list[Target]) -> dict[str, Any]:
    hidden = [
        str(world.home), str(world.home / "openbao" / "root-token"), str(world.other_data), str(world.state_dir),
        str(world.home / "workspaces"), str(REPO / ".git"), str(REPO / "tre"), "/etc/shadow", "/var/log",
        world.unix[1].address,
    ]  # fmt: skip
    assert [path for path in hidden if not os.path.lexists(path)] == []  # each is there to see, from the host
    plan = {
        "attempts": 3, "timeout": 1.0, "data_file": "extract.csv", "hub_url": f"http://127.0.0.1:{world.hub_port}/",
        "targets": targets, "hidden": hidden, "writes": ["/run/tre/planted", "/usr/planted"],
        "listings": ["/run/tre"],
    }  # fmt: skip
    driver = Driver(world.plan(sandbox_id, [sys.executable, "-c", PROBE, json.dumps(plan)]), world.work)
    try:
        assert driver.ask("wait")["status"] == 0, (world.work / f"{sandbox_id}.log").read_text()
        assert driver.ask("stop")["sockets_left"] is False
    finally:
        driver.close()
    report: dict[str, Any] = json.loads((world.outputs(sandbox_id) / "probe.json").read_text())
    return report


def test_every_target_is_alive_from_the_host(world: World) -> None:
    """Positive controls: what the probe tries answers when asked from outside a sandbox."""
    assert tcp_answers("127.0.0.1", world.local.tcp_ports[0])
    assert tcp_answers("::1", world.local.tcp_ports[0])
    assert udp_answers("127.0.0.1", world.local.udp_ports[0])
    assert tcp_answers("127.0.0.1", int(world.neighbour["endpoint"][1]))
    still_there = set(machine_addresses())  # concurrent tests may have removed theirs since
    port = world.local.tcp_ports[0]
    silent = [a for a, i in world.addresses if (a, i) in still_there and not tcp_answers(_scoped(a, i), port)]
    assert silent == []
    for listener in world.unix:
        before = len(listener.accepted)
        with socket.socket(socket.AF_UNIX) as sock:
            address = listener.address
            sock.connect("\0" + address[1:] if address.startswith("@") else address)
        assert wait_until(lambda listener=listener, before=before: len(listener.accepted) > before, 5)
    if world.outside is not None:
        assert tcp_answers(world.outside.ipv4, 80)


def test_nothing_but_the_hub_is_reachable_from_a_rootless_workspace(world: World) -> None:
    records, accepted = len(world.local.records()), [len(u.accepted) for u in world.unix]
    report = _run_probe(world, "proj-a.alice", _targets(world))
    breaches = [f"{r['name']}: {r['successes']} of 3 got through" for r in report["results"] if r["successes"]]
    assert breaches == []
    assert len(report["results"]) >= 15
    assert all(r["errors"] for r in report["results"])
    assert report["hub"] == "fake hub\n"  # through the relay
    assert len(world.local.records()) == records  # the host's listeners saw nothing from the sandbox
    assert [len(u.accepted) for u in world.unix] == accepted
    assert report["listings"]["/run/tre"] == ["in", f"tcp-{world.hub_port}.sock"]  # one way out: the hub


def test_a_rootless_workspace_sees_only_its_own_world(world: World) -> None:
    report = _run_probe(world, "proj-a.carol", [])
    identity = report["identity"]
    assert identity["interfaces"] == ["lo"]
    assert len(identity["pids"]) <= 5  # its own: bubblewrap's init, the relay, itself (no host pid)
    assert identity["uid"] == identity["euid"] == unprivileged_uid()
    assert int(identity["cap_eff"], 16) == 0
    assert int(identity["cap_bnd"], 16) == 0
    assert identity["no_new_privs"] == "1"
    assert identity["new_user_namespace"] != "ok"
    assert report["data_read"] == DATA
    assert report["data_write"] in {"EROFS", "EACCES"}
    assert not (world.data_dir / "written-by-probe").exists()
    assert (world.outputs("proj-a.carol") / "written-by-probe.txt").read_text() == "probe output\n"
    assert all(report["hidden"].values()), report["hidden"]
    assert report["writes"] == {"/run/tre/planted": "EROFS", "/usr/planted": "EROFS"}


SWAP = """
import os, pathlib, time
path = "/run/tre/in/server.sock"
while not os.path.lexists(path):
    time.sleep(0.05)
os.unlink(path)
os.symlink("../tcp-{port}.sock", path)  # on the host this names the hub's socket beside it
pathlib.Path("/outputs/swapped").write_text("yes")
time.sleep(600)
"""


def test_a_link_planted_as_the_servers_socket_is_never_followed(world: World) -> None:
    """The outside relay opens the server's socket without following links: a sandbox cannot point the hub's
    connections (and their tokens) at another socket."""
    sandbox_id = "proj-a.mallory"
    outputs = world.outputs(sandbox_id)
    (outputs / "swapped").unlink(missing_ok=True)
    driver = Driver(world.plan(sandbox_id, [sys.executable, "-c", SWAP.format(port=world.hub_port)]), world.work)
    try:
        assert wait_until((outputs / "swapped").exists, DEATH_TIMEOUT)
        planted = Path(driver.started["sockets"]) / "in" / "server.sock"
        assert planted.is_symlink()
        assert planted.resolve() == Path(driver.started["sockets"]) / f"tcp-{world.hub_port}.sock"  # would work
        with socket.create_connection(tuple(driver.started["endpoint"]), timeout=10) as connection:
            connection.sendall(b"GET /planted HTTP/1.0\r\n\r\n")
            assert _answer(connection) == b""  # closed, unanswered
        assert "/planted" not in world.hub_paths
    finally:
        driver.ask("stop")
        driver.close()


def _answer(connection: socket.socket) -> bytes:
    """What came back before the connection closed (a reset counts as nothing)."""
    with contextlib.suppress(ConnectionResetError):
        return connection.recv(1024)
    return b""


def _sleeper(marker: str) -> list[str]:
    return [sys.executable, "-c", "import sys, time; time.sleep(600)", marker]


def test_a_stopped_rootless_sandbox_leaves_nothing_behind(world: World) -> None:
    marker = f"tre-marker-{secrets.token_hex(4)}"
    driver = Driver(world.plan("proj-c.erin", _sleeper(marker)), world.work)
    try:
        sockets, endpoint = driver.started["sockets"], tuple(driver.started["endpoint"])
        # the outside relay, bubblewrap and its init, the inside relay, the workspace's process
        assert wait_until(lambda: len(processes_mentioning(marker)) == 5, DEATH_TIMEOUT), processes_mentioning(marker)
        assert driver.ask("stop")["sockets_left"] is False
        assert processes_mentioning(marker, sockets) == []
        assert not Path(sockets).exists()
        assert not tcp_answers(*endpoint)
    finally:
        driver.close()


def test_a_killed_hub_takes_its_sandboxes_and_the_next_start_clears_the_rest(world: World) -> None:
    marker = f"tre-marker-{secrets.token_hex(4)}"
    first = Driver(world.plan("proj-c.frank", _sleeper(marker)), world.work)
    try:
        sockets = first.started["sockets"]
        os.kill(int(first.started["pid"]), signal.SIGKILL)  # the "hub"
        first.process.wait(timeout=DEATH_TIMEOUT)
    finally:
        first.close()
    assert wait_until(lambda: not processes_mentioning(marker, sockets), DEATH_TIMEOUT), processes_mentioning(marker)
    assert Path(sockets).exists()  # what a killed hub leaves: a socket directory, no process
    second = Driver(world.plan("proj-c.grace", _sleeper(marker)), world.work)
    try:
        cleared = second.ask("clear")
        assert "proj-c.frank" in cleared["cleared"]
        assert not Path(sockets).exists()
    finally:
        second.close()
    assert wait_until(lambda: not processes_mentioning(marker), DEATH_TIMEOUT)


def test_a_killed_workspace_ends_its_sandbox(world: World) -> None:
    marker = f"tre-marker-{secrets.token_hex(4)}"
    driver = Driver(world.plan("proj-c.heidi", _sleeper(marker)), world.work)
    try:
        assert wait_until(lambda: len(processes_mentioning(marker)) == 5, DEATH_TIMEOUT)
        os.kill(workspace_pid(marker), signal.SIGKILL)
        assert driver.ask("wait")["status"] == 128 + signal.SIGKILL
        assert driver.ask("stop")["sockets_left"] is False
        assert processes_mentioning(driver.started["sockets"]) == []
    finally:
        driver.close()


def test_the_relays_carry_a_large_exchange_intact(world: World) -> None:
    """8 MiB each way through both relays and the server's socket, byte for byte."""
    echo = (
        "import pathlib, socket\n"
        "s = socket.create_server(('127.0.0.1', 8888))\n"
        "pathlib.Path('/outputs/listening').write_text('yes')\n"
        "c, _ = s.accept()\n"
        "while data := c.recv(65536):\n"
        "    c.sendall(data)\n"
    )
    listening = world.outputs("proj-c.ivan") / "listening"
    listening.unlink(missing_ok=True)
    driver = Driver(world.plan("proj-c.ivan", [sys.executable, "-c", echo]), world.work)
    try:
        assert wait_until(listening.exists, DEATH_TIMEOUT)
        payload, received = os.urandom(8 * 1024 * 1024), bytearray()
        with socket.create_connection(tuple(driver.started["endpoint"]), timeout=30) as connection:
            sender = threading.Thread(target=lambda: (connection.sendall(payload), connection.shutdown(socket.SHUT_WR)))
            sender.start()
            while chunk := connection.recv(1 << 20):
                received += chunk
            sender.join()
        assert len(received) == len(payload)
        assert bytes(received) == payload
    finally:
        driver.ask("stop")
        driver.close()


# The spawner in a real JupyterHub, all of it run by the unprivileged uid.

HUB_CONFIG = spawner_tests.BASE_HUB_CONFIG + 'c.SandboxSpawner.sandbox_mode = "rootless"\n'


@pytest.fixture(scope="module")
def rootless_hub(bao: openbao.OpenBaoServer) -> Iterator[spawner_tests.Hub]:
    require_rootless_support()
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(private_directory("tre-rootless-hub-"))
        home = spawner_tests._prepare_tre_home(work, bao)
        give(work)
        ports = {"proxy_port": free_port(), "proxy_api_port": free_port(), "hub_port": free_port()}
        state_dir = home / "workspaces" / "sandbox"
        config = HUB_CONFIG.format(
            **ports,
            hub_address="127.0.0.1",
            venv_bin=VENV_BIN,
            work=work,
            token=spawner_tests.TOKEN,
            state_dir=state_dir,
        )
        (work / "jupyterhub_config.py").write_text(config)
        give(work)
        env = python_env(TRE_HOME=str(home), HOME=str(work), USER="tre-hub")
        log = work / "hub.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [str(VENV_BIN / "jupyterhub"), "-f", str(work / "jupyterhub_config.py")],
                cwd=work, env=env, stdout=output, stderr=subprocess.STDOUT, preexec_fn=become_unprivileged(),
            )  # fmt: skip
        host = SandboxHost(state_dir=state_dir, mode=SandboxMode.ROOTLESS)
        running = spawner_tests.Hub(process, f"http://127.0.0.1:{ports['proxy_port']}", log, host, home)
        stack.callback(running.stop)
        spawner_tests._wait_for_hub(running)
        yield running


KERNEL_CODE = """
import json, os, socket
print(json.dumps({"uid": os.getuid(), "data": sorted(os.listdir("/data")), "lo": socket.if_nameindex(),
                  "hub": os.environ["JUPYTERHUB_API_URL"]}))
"""


def test_the_spawner_runs_a_members_server_rootless_and_leaves_nothing_after_stop(
    rootless_hub: spawner_tests.Hub,
) -> None:
    hub, project = rootless_hub, spawner_tests.PROJECT
    status, body = hub.spawn("bob", {"project": project})
    assert status in {201, 202}, body
    hub.wait_ready("bob")
    sockets = str(hub.host.state_dir / hub.link_of(f"{project}.bob").name / "sockets")
    status, listing = hub.call("GET", "/user/bob/api/contents/data")  # the proxy, both relays, the server
    assert status == 200, listing
    assert {entry["name"] for entry in listing["content"]} == {"hospital-episodes.parquet", "manifest.json"}
    assert all(not entry["writable"] for entry in listing["content"])
    seen = json.loads(spawner_tests._run_in_kernel(hub, "bob", KERNEL_CODE))
    assert seen["uid"] == unprivileged_uid()
    assert seen["data"] == ["hospital-episodes.parquet", "manifest.json"]
    assert seen["lo"] == [[1, "lo"]]
    assert seen["hub"].startswith("http://127.0.0.1:")  # the hub's own URL, through the inside relay
    assert len(processes_mentioning(sockets)) == 3  # the outside relay, bubblewrap and its init

    status, _ = hub.call("DELETE", "/hub/api/users/bob/server")
    assert status in {202, 204}
    hub.wait_stopped("bob")
    assert processes_mentioning(sockets) == []
    assert not Path(sockets).exists()


def test_a_non_member_is_refused_by_the_rootless_spawner(rootless_hub: spawner_tests.Hub) -> None:
    status, body = rootless_hub.spawn("mallory", {"project": spawner_tests.PROJECT})
    assert status == 403, body
    assert "mallory is not a member" in body["message"]
