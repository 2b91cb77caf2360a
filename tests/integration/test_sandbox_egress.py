"""Security proof (issue 7): from inside a real workspace sandbox, nothing but the hub is reachable.

An egress probe (tests/support/egress_probe.py) runs inside a sandbox and tries, three times each: TCP and UDP to a
test host in another network namespace, TCP on several ports and UDP to every non-loopback address of this
machine (including the hub address on other ports, and the sandboxes' own host ends), DNS to the host's resolvers
and the test host, public addresses, IPv6 (global, link-local, multicast), and two other sandboxes (another
project's, and the same project's other user). Every attempt must fail, while the stand-in hub answers, /data
reads, writing /data fails, /outputs is writable and the process is not root. Positive controls show each target
is alive from the host; a deliberately weakened firewall is caught; with routing deliberately weakened, the
firewall alone still stops everything.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from tests.support.netns import (
    Listener,
    OutsideHost,
    fake_hub,
    machine_addresses,
    require_sandbox_support,
    resolvers,
    start_listener,
    tcp_answers,
    udp_answers,
    unique_sandbox_host,
    wait_for_tcp,
)
from tre.workspaces._firewall import ensure_table
from tre.workspaces._process import wait_until
from tre.workspaces.sandbox import (
    Limits,
    Sandbox,
    SandboxHost,
    SandboxSpec,
    SlotLink,
    prepare_host,
    teardown_host,
)

PROBE = (Path(__file__).parent.parent / "support" / "egress_probe.py").read_text()
DATA_FILE = "extract.csv"
DATA = "pseudonym,hba1c\nab12,48\n"
OUTSIDE_TCP = [80, 443, 53, 8080]
OUTSIDE_UDP = [53, 9999]
NEIGHBOUR_PORT = 8888
PROBE_TIMEOUT = 180.0
GiB = 1024**3

Target = dict[str, Any]


@dataclass
class World:
    host: SandboxHost
    hub_port: int
    outside: OutsideHost
    local: Listener
    neighbours: dict[str, str]
    work: Path
    data_dir: Path

    @property
    def hub_url(self) -> str:
        return f"http://{self.host.hub_address}:{self.hub_port}/"


def _spec(world: World, sandbox_id: str) -> SandboxSpec:
    base = world.work / sandbox_id
    return SandboxSpec(
        sandbox_id, "researcher", world.data_dir, base / "outputs", base / "home", (world.hub_port,),
        Limits(memory_bytes=2 * GiB, cpus=1.0),
    )  # fmt: skip


def _environment(spec: SandboxSpec) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": spec.home_inside, "LANG": "C.UTF-8"}


@contextlib.contextmanager
def _neighbour(host: SandboxHost, world_work: Path, data_dir: Path, sandbox_id: str, hub_port: int) -> Iterator[str]:
    """Another workspace, serving HTTP on its own address; yields that address."""
    base = world_work / sandbox_id
    spec = SandboxSpec(sandbox_id, "researcher", data_dir, base / "outputs", base / "home", (hub_port,))
    sandbox = Sandbox(host, sandbox_id)
    try:
        prepared = sandbox.prepare(spec)
        address = str(prepared.link.workspace_address)
        argv = [sys.executable, "-m", "http.server", str(NEIGHBOUR_PORT), "--bind", address]
        sandbox.launch(prepared, argv, _environment(spec), log_path=world_work / f"{sandbox_id}.log")
        wait_for_tcp(address, NEIGHBOUR_PORT)
        yield address
    finally:
        sandbox.stop(grace=1.0)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require_sandbox_support()
    work = tmp_path_factory.mktemp("egress")
    data_dir = work / "data"
    data_dir.mkdir()
    (data_dir / DATA_FILE).write_text(DATA)
    (data_dir / DATA_FILE).chmod(0o600)  # as the object store writes extracts
    host = unique_sandbox_host(work / "state")
    with contextlib.ExitStack() as stack:
        stack.callback(teardown_host, host, forget=True)
        prepare_host(host)
        hub_port = stack.enter_context(fake_hub(str(host.hub_address)))
        outside = OutsideHost.create(work, [*OUTSIDE_TCP, hub_port], OUTSIDE_UDP)
        stack.callback(outside.close)
        local = start_listener(work / "local.jsonl", [0], [0])
        stack.callback(local.close)
        neighbours = {
            sandbox_id: stack.enter_context(_neighbour(host, work, data_dir, sandbox_id, hub_port))
            for sandbox_id in ("proj-b.bob", "proj-a.dave")
        }
        yield World(host, hub_port, outside, local, neighbours, work, data_dir)


def _run_probe(world: World, sandbox_id: str, build: Callable[[SlotLink], list[Target]]) -> dict[str, Any]:
    spec = _spec(world, sandbox_id)
    (spec.outputs_dir / "probe.json").unlink(missing_ok=True)
    sandbox = Sandbox(world.host, sandbox_id)
    log_path = world.work / f"{sandbox_id}.log"
    try:
        prepared = sandbox.prepare(spec)
        targets = build(prepared.link)
        plan = {"attempts": 3, "timeout": 1.0, "data_file": DATA_FILE, "hub_url": world.hub_url, "targets": targets}
        sandbox.launch(prepared, [sys.executable, "-c", PROBE, json.dumps(plan)], _environment(spec), log_path=log_path)
        assert wait_until(lambda: sandbox.poll() is not None, PROBE_TIMEOUT), "the probe did not finish"
        assert sandbox.poll() == 0, log_path.read_text()
        report: dict[str, Any] = json.loads((spec.outputs_dir / "probe.json").read_text())
        return report
    finally:
        sandbox.stop(grace=1.0)


def _tcp(name: str, host: str, port: int) -> Target:
    return {"name": name, "kind": "tcp", "host": host, "port": port}


def _udp(name: str, host: str, port: int, kind: str = "udp") -> Target:
    return {"name": name, "kind": kind, "host": host, "port": port}


def _outside_targets(world: World) -> list[Target]:
    o = world.outside
    targets = [_tcp(f"test host {o.ipv4} tcp/{p}", o.ipv4, p) for p in [*OUTSIDE_TCP, world.hub_port]]
    targets += [_udp(f"test host {o.ipv4} udp/9999", o.ipv4, 9999)]
    targets += [_udp(f"test host {o.ipv4} dns/udp", o.ipv4, 53, "dns-udp")]
    targets += [_tcp(f"test host {o.ipv6} tcp/80", o.ipv6, 80), _udp(f"test host {o.ipv6} udp/9999", o.ipv6, 9999)]
    for resolver in resolvers():
        targets += [_udp(f"resolver {resolver} dns/udp", resolver, 53, "dns-udp")]
        targets += [_tcp(f"resolver {resolver} dns/tcp", resolver, 53)]
    targets += [{"name": "name lookup example.com", "kind": "resolve", "host": "example.com"}]
    targets += [
        _tcp("public 1.1.1.1 tcp/443", "1.1.1.1", 443),
        _udp("public 8.8.8.8 dns/udp", "8.8.8.8", 53, "dns-udp"),
    ]
    targets += [_tcp("public IPv6 tcp/443", "2606:4700:4700::1111", 443)]
    return targets


def _machine_targets(world: World) -> list[Target]:
    """Every non-loopback address of this machine: the local listener (bound to all addresses), and other ports."""
    tcp_port, udp_port = world.local.tcp_ports[0], world.local.udp_ports[0]
    targets = []
    for address, interface in machine_addresses():
        scoped = f"{address}%eth0" if address.startswith("fe80") else address
        label = f"machine {address} ({interface})"
        ports = [tcp_port, 22, 80] + ([] if address == str(world.host.hub_address) else [world.hub_port])
        targets += [_tcp(f"{label} tcp/{p}", scoped, p) for p in ports]
        targets += [_udp(f"{label} udp/{udp_port}", scoped, udp_port)]
    targets += [_udp("IPv6 all-nodes multicast", "ff02::1%eth0", udp_port)]
    return targets


def _neighbour_targets(world: World) -> list[Target]:
    return [_tcp(f"sandbox {sid} tcp/{NEIGHBOUR_PORT}", a, NEIGHBOUR_PORT) for sid, a in world.neighbours.items()]


def _all_targets(world: World) -> Callable[[SlotLink], list[Target]]:
    return lambda link: [*_outside_targets(world), *_machine_targets(world), *_neighbour_targets(world)]


def _breaches(report: dict[str, Any]) -> list[str]:
    return [f"{r['name']}: {r['successes']} of 3 got through" for r in report["results"] if r["successes"]]


def _sandbox_peers(world: World, listener: Listener) -> list[dict[str, object]]:
    return [r for r in listener.records() if _in_pool(world, str(r["peer"]))]


def _in_pool(world: World, peer: str) -> bool:
    """True for a sandbox's own address (the workspace end of a slot), not the host's addresses in the pool."""
    address = ip_address(peer.removeprefix("::ffff:"))
    pool = world.host.pool
    workspace_end = (int(address) - int(pool.network_address)) % 4 == 2
    return address in pool and workspace_end and address != world.host.hub_address


def test_every_target_is_alive_from_the_host(world: World) -> None:
    """Positive controls: the probe's targets answer when asked from outside a sandbox."""
    o = world.outside
    assert all(tcp_answers(o.ipv4, p) for p in OUTSIDE_TCP)
    assert tcp_answers(o.ipv6, 80)
    assert udp_answers(o.ipv4, 9999)
    assert tcp_answers(str(world.host.hub_address), world.local.tcp_ports[0])  # bound to all addresses
    assert udp_answers("127.0.0.1", world.local.udp_ports[0])
    assert all(tcp_answers(a, NEIGHBOUR_PORT) for a in world.neighbours.values())
    assert tcp_answers(str(world.host.hub_address), world.hub_port)


def test_nothing_but_the_hub_is_reachable_from_a_workspace(world: World) -> None:
    report = _run_probe(world, "proj-a.alice", _all_targets(world))
    assert len(report["results"]) >= 40
    assert all(r["successes"] == 0 and r["errors"] for r in report["results"])
    assert _breaches(report) == []
    assert report["hub"] == "fake hub\n"
    assert _sandbox_peers(world, world.local) == []
    assert world.outside.listener is not None
    assert _sandbox_peers(world, world.outside.listener) == []


def test_the_workspace_reads_data_writes_outputs_and_is_not_root(world: World) -> None:
    report = _run_probe(world, "proj-a.alice", lambda link: [])
    identity = report["identity"]
    assert identity["uid"] == identity["euid"] == identity["gid"] >= world.host.uid_base
    assert identity["groups"] in ([], [identity["gid"]])
    assert int(identity["cap_eff"], 16) == 0
    assert int(identity["cap_bnd"], 16) == 0
    assert identity["no_new_privs"] == "1"
    assert report["data_read"] == DATA
    assert report["data_write"] in {"EROFS", "EACCES"}
    assert not (world.data_dir / "written-by-probe").exists()
    written = _spec(world, "proj-a.alice").outputs_dir / "written-by-probe.txt"
    assert written.read_text() == "probe output\n"
    assert written.stat().st_uid == identity["uid"]


def _drop_rule_handle(host: SandboxHost) -> int:
    listing = subprocess.run(
        ["nft", "-a", "list", "chain", "inet", host.table, "input"], check=True, capture_output=True, text=True
    ).stdout
    (line,) = [line for line in listing.splitlines() if "everything else from a sandbox" in line]
    return int(line.rsplit("# handle", 1)[1])


def _local_targets(world: World) -> Callable[[SlotLink], list[Target]]:
    port = world.local.tcp_ports[0]
    return lambda link: [
        _tcp("hub address, another port", str(world.host.hub_address), port),
        _tcp("own host end", str(link.host_address), port),
    ]


def test_the_probe_catches_a_missing_drop_rule(world: World) -> None:
    """The proof can fail: without the drop rule, host services on other ports are reachable, and the probe says so."""
    handle = _drop_rule_handle(world.host)
    subprocess.run(["nft", "delete", "rule", "inet", world.host.table, "input", "handle", str(handle)], check=True)
    try:
        weakened = _run_probe(world, "proj-a.alice", _local_targets(world))
    finally:
        ensure_table(world.host)
    assert len(_breaches(weakened)) == 2
    assert _sandbox_peers(world, world.local)
    restored = _run_probe(world, "proj-a.alice", _local_targets(world))
    assert _breaches(restored) == []


def _leftovers(host: SandboxHost, link: SlotLink) -> list[str]:
    found = []
    if link.netns_path.exists():
        found.append(f"network namespace {link.name}")
    if Path("/sys/class/net", link.name).exists():
        found.append(f"veth {link.name}")
    elements = subprocess.run(
        ["nft", "list", "set", "inet", host.table, "allowed"], check=True, capture_output=True, text=True
    ).stdout
    if link.name in elements:
        found.append("firewall allowance")
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            if f"\t{link.uid}\t" in status.read_text().split("Uid:")[1].split("\n")[0]:
                found.append(f"process {status.parent.name}")
    return found


def test_a_stopped_sandbox_leaves_nothing_behind(world: World) -> None:
    spec = _spec(world, "proj-c.erin")
    sandbox = Sandbox(world.host, "proj-c.erin")
    prepared = sandbox.prepare(spec)
    sandbox.launch(prepared, ["/bin/sleep", "600"], _environment(spec))
    assert sandbox.poll() is None
    assert _leftovers(world.host, prepared.link) != []
    sandbox.stop(grace=1.0)
    assert sandbox.poll() is not None
    assert _leftovers(world.host, prepared.link) == []


def test_a_new_sandbox_removes_the_leftovers_of_a_killed_one(world: World) -> None:
    """A hub killed with its workspace leaves a namespace behind; starting the same sandbox again clears it."""
    spec = _spec(world, "proj-c.erin")
    first = Sandbox(world.host, "proj-c.erin")
    prepared = first.prepare(spec)
    first.launch(prepared, ["/bin/sleep", "600"], _environment(spec))
    assert first.process is not None
    first.process.signal(signal.SIGKILL)
    assert wait_until(lambda: first.poll() is not None, 10)
    assert prepared.link.netns_path.exists()
    second = Sandbox(world.host, "proj-c.erin")
    again = second.prepare(spec)
    try:
        assert again.link == prepared.link
        second.launch(again, ["/bin/true"], _environment(spec))
        assert wait_until(lambda: second.poll() is not None, 10)
    finally:
        second.stop(grace=1.0)
    assert _leftovers(world.host, again.link) == []


def test_the_firewall_alone_holds_when_routing_is_weakened(world: World) -> None:
    """Defence in depth: give the sandbox a default route (as a routing mistake would), and the machine's own
    addresses become routable, yet every attempt is still dropped by the firewall."""

    def with_default_route(link: SlotLink) -> list[Target]:
        route = ["ip", "-n", link.name, "route", "add", "default", "via", str(link.host_address)]
        subprocess.run(route, check=True, capture_output=True)
        return _all_targets(world)(link)

    report = _run_probe(world, "proj-a.alice", with_default_route)
    assert _breaches(report) == []
    ipv4_machine = [r for r in report["results"] if r["name"].startswith("machine ") and ":" not in r["host"]]
    assert len(ipv4_machine) >= 10
    assert all(r["errors"] == ["TimeoutError"] for r in ipv4_machine)  # every one routed now, and dropped
