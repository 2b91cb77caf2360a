"""The sandboxes' firewall: one nftables table of our own, in the ``inet`` family (IPv4 and IPv6 together).

From any sandbox's host-side veth, the input hook accepts only packets of connections the host opened (the
proxy and the hub talking to the workspace) and new TCP connections to an allowed (interface, hub address,
port) triple. Everything else from a sandbox is dropped: other ports, other host addresses, UDP, ICMP, IPv6.
The forward hook drops everything from and to a sandbox, so sandboxes never reach each other or the outside
even if the host forwards packets. The rules match every sandbox by interface-name wildcard and are in place
before any sandbox exists; a sandbox's own allowances are set elements, added when it starts and removed when
it stops. A drop in any base chain is final in nftables, so another table cannot undo ours.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from tre.workspaces._host import SandboxHost
from tre.workspaces._system import run

ALLOWED_SET = "allowed"
_GONE = ("No such file", "does not exist")


def ruleset(host: SandboxHost) -> str:
    """An nft script that creates the table if needed and replaces its rules in one transaction (the set's
    elements are kept)."""
    t, any_sandbox = f"inet {host.table}", f'"{host.interface_pattern}"'
    hook = "type filter hook {} priority filter - 10; policy accept;"
    return "\n".join(
        [
            f"add table {t}",
            f"add set {t} {ALLOWED_SET} {{ type ifname . ipv4_addr . inet_service; }}",
            f"add chain {t} input {{ {hook.format('input')} }}",
            f"add chain {t} forward {{ {hook.format('forward')} }}",
            f"flush chain {t} input",
            f"flush chain {t} forward",
            f"add rule {t} input iifname != {any_sandbox} accept",
            f"add rule {t} input ct state established,related accept",
            f"add rule {t} input ct state new iifname . ip daddr . tcp dport @{ALLOWED_SET} accept",
            f'add rule {t} input counter drop comment "everything else from a sandbox"',
            f"add rule {t} forward iifname {any_sandbox} counter drop",
            f"add rule {t} forward oifname {any_sandbox} counter drop",
            "",
        ]
    )


def ensure_table(host: SandboxHost) -> None:
    run(["nft", "-f", "-"], what=f"installing nftables table inet {host.table}", stdin=ruleset(host))


def remove_table(host: SandboxHost) -> None:
    run(["nft", "delete", "table", "inet", host.table], what=f"removing table {host.table}", tolerate=_GONE)


def _elements(host: SandboxHost, interface: str, ports: Iterable[int]) -> str:
    return ", ".join(f'"{interface}" . {host.hub_address} . {port}' for port in sorted(set(ports)))


def allow(host: SandboxHost, interface: str, ports: Iterable[int]) -> None:
    """Let the sandbox on ``interface`` open TCP connections to these ports of the hub address."""
    elements = _elements(host, interface, ports)
    if elements:
        argv = ["nft", "add", "element", "inet", host.table, ALLOWED_SET, f"{{ {elements} }}"]
        run(argv, what=f"allowing {interface} to reach the hub")


def revoke(host: SandboxHost, interface: str) -> None:
    """Remove every allowance of the sandbox on ``interface`` (whatever ports a previous run allowed)."""
    listing = run(
        ["nft", "-j", "list", "set", "inet", host.table, ALLOWED_SET], what="listing sandbox allowances", tolerate=_GONE
    )
    if not listing:
        return
    ports = [int(str(e["concat"][2])) for e in _set_elements(listing) if e["concat"][0] == interface]
    if ports:
        argv = [
            "nft",
            "delete",
            "element",
            "inet",
            host.table,
            ALLOWED_SET,
            f"{{ {_elements(host, interface, ports)} }}",
        ]
        run(argv, what=f"revoking {interface}'s allowances", tolerate=_GONE)


def _set_elements(listing: str) -> list[dict[str, list[object]]]:
    for item in json.loads(listing).get("nftables", []):
        if "set" in item:
            return [e for e in item["set"].get("elem", []) if isinstance(e, dict) and "concat" in e]
    return []
