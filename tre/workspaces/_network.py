"""A sandbox's network: its own namespace, joined to the host by one veth pair, with no default route.

Inside: loopback, the workspace end of the veth with a /30, and one host route to the hub address through the
host end. IPv6 is disabled on both ends (and in the whole namespace). Nothing else is routable from inside.
"""

from __future__ import annotations

import json
import os
from ipaddress import IPv4Network, ip_network
from pathlib import Path

from tre.workspaces._host import SandboxHost, SlotLink
from tre.workspaces._system import SandboxError, run, tool, write_proc

WORKSPACE_INTERFACE = "eth0"
_GONE = ("Cannot find device", "No such file", "does not exist", "Cannot assign requested address", "No such process")


def create(host: SandboxHost, link: SlotLink) -> None:
    """Create the namespace and veth pair; SandboxError if any step fails (call ``remove`` to clean up)."""
    ns = link.name
    run(["ip", "netns", "add", ns], what=f"creating network namespace {ns}")
    ipv6_off = ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]
    inside_ns = ["nsenter", f"--net={link.netns_path}", "--"]
    run([*inside_ns, tool("sysctl"), "-q", "-w", *ipv6_off], what=f"disabling IPv6 in {ns}")
    veth = ["ip", "link", "add", ns, "type", "veth", "peer", "name", WORKSPACE_INTERFACE, "netns", ns]
    run(veth, what=f"creating veth {ns}")
    write_proc(Path("/proc/sys/net/ipv6/conf") / ns / "disable_ipv6", "1")
    host_side = f"addr add {link.host_address}/30 dev {ns}\nlink set {ns} up\n"
    run(["ip", "-batch", "-"], what=f"configuring veth {ns}", stdin=host_side)
    inside = (
        "link set lo up\n"
        f"addr add {link.workspace_address}/30 dev {WORKSPACE_INTERFACE}\n"
        f"link set {WORKSPACE_INTERFACE} up\n"
        f"route add {host.hub_address}/32 via {link.host_address} dev {WORKSPACE_INTERFACE}\n"
    )
    run(["ip", "-n", ns, "-batch", "-"], what=f"configuring namespace {ns}", stdin=inside)


def remove(link: SlotLink) -> None:
    """Delete the host end of the veth (which deletes both ends), then the namespace. Idempotent."""
    run(["ip", "link", "del", link.name], what=f"removing veth {link.name}", tolerate=_GONE)
    run(["ip", "netns", "del", link.name], what=f"removing network namespace {link.name}", tolerate=_GONE)


def exists(link: SlotLink) -> bool:
    return link.netns_path.exists() or Path("/sys/class/net", link.name).exists()


def pids_in(link: SlotLink) -> list[int]:
    """Every process whose network namespace is the sandbox's (what ``ip netns pids`` prints)."""
    try:
        target = os.stat(link.netns_path)
    except FileNotFoundError:
        return []
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ns = os.stat(f"/proc/{entry.name}/ns/net")
        except OSError:
            continue
        if (ns.st_dev, ns.st_ino) == (target.st_dev, target.st_ino):
            found.append(int(entry.name))
    return found


def add_host_routes(host: SandboxHost) -> None:
    """Put the hub address on ``lo``, and make the rest of the pool unreachable from the host: without that, the
    hub or proxy talking to a sandbox that has just gone would send its packets (and tokens) to the default
    gateway instead of failing. A live sandbox's connected /30 is more specific, so it still wins."""
    run(["ip", "addr", "replace", f"{host.hub_address}/32", "dev", "lo"], what="adding the hub address to lo")
    run(["ip", "route", "replace", "unreachable", str(host.pool)], what="routing the sandbox pool nowhere")


def remove_host_routes(host: SandboxHost) -> None:
    argv = ["ip", "addr", "del", f"{host.hub_address}/32", "dev", "lo"]
    run(argv, what="removing the hub address from lo", tolerate=_GONE)
    run(["ip", "route", "del", "unreachable", str(host.pool)], what="removing the pool route", tolerate=_GONE)


def check_pool_is_free(host: SandboxHost) -> None:
    """SandboxError if any route on the host, other than the sandboxes' own, overlaps the pool."""
    routes = json.loads(run(["ip", "-j", "-4", "route", "show", "table", "all"], what="listing routes") or "[]")
    for route in routes:
        clash = _clash(host, route)
        if clash is not None:
            raise SandboxError(
                f"the sandbox address pool {host.pool} overlaps {clash} on {route.get('dev', '?')}: "
                "choose another pool (SandboxSpawner.sandbox_pool)"
            )


def _clash(host: SandboxHost, route: dict[str, object]) -> IPv4Network | None:
    dst, dev = str(route.get("dst", "")), str(route.get("dev", ""))
    if dst in {"", "default"} or host.owns_interface(dev):
        return None
    if route.get("type") == "unreachable" and dst == str(host.pool):
        return None
    network = ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
    if not isinstance(network, IPv4Network) or not network.overlaps(host.pool):
        return None
    if dev == "lo" and network == IPv4Network(f"{host.hub_address}/32"):
        return None
    return network
