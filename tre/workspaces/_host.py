"""Host-wide sandbox settings: the private address pool, the names, the nftables table, the state directory.

A pool is cut into /30 *slots*. Slot ``n`` owns four addresses: the network, the host end of its veth
(``+1``), the workspace end (``+2``) and the broadcast. The pool's last /30 is not a slot: its ``+2`` is the
*hub address*, put on the host's loopback interface, where the hub (and anything else a workspace may reach)
listens. A slot also names the sandbox's network namespace and host veth (``prefix`` + five digits) and
gives it its own unprivileged uid and gid (``uid_base`` + slot).

In the rootless mode (``SandboxMode.ROOTLESS``) there are no links, routes or firewall: each sandbox has an empty
network namespace, the hub is reached on the host's loopback through Unix sockets, and every sandbox runs as the
user running the hub. A slot then only names the sandbox's state.
"""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from tre.errors import InputError

LOOPBACK = IPv4Address("127.0.0.1")
DEFAULT_POOL = IPv4Network("10.213.0.0/16")
DEFAULT_STATE_DIR = Path("/run/tre-sandbox")
DEFAULT_UID_BASE = 2_100_000
SLOT_DIGITS = 5
MAX_SLOTS = 10**SLOT_DIGITS
_TABLE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
_PREFIX = re.compile(r"^[a-z][a-z0-9-]{1,9}$")  # a prefix plus five digits fits the 15 characters of a link name


class SandboxMode(enum.Enum):
    """How sandboxes are isolated: ``root`` (network namespace, veth, nftables; per-slot uids) or ``rootless``
    (unprivileged user and network namespaces with bubblewrap; Unix sockets to the hub)."""

    ROOT = "root"
    ROOTLESS = "rootless"


@dataclass(frozen=True)
class SlotLink:
    """What one slot owns: its names, its two addresses, and its uid (also used as its gid)."""

    slot: int
    name: str
    host_address: IPv4Address
    workspace_address: IPv4Address
    uid: int

    @property
    def netns_path(self) -> Path:
        return Path("/run/netns") / self.name


@dataclass(frozen=True)
class SandboxHost:
    """The settings every sandbox of one TRE shares. Two TREs on one machine need different values for all four
    of ``pool``, ``table``, ``prefix`` and ``state_dir``."""

    pool: IPv4Network = DEFAULT_POOL
    table: str = "tre_sandbox"
    prefix: str = "tre-w"
    state_dir: Path = DEFAULT_STATE_DIR
    uid_base: int = DEFAULT_UID_BASE
    mode: SandboxMode = SandboxMode.ROOT

    def __post_init__(self) -> None:
        if not self.pool.is_private or self.pool.prefixlen > 29:
            raise InputError(f"sandbox pool {self.pool} must be a private IPv4 network of /29 or larger")
        if self.capacity > MAX_SLOTS:
            raise InputError(f"sandbox pool {self.pool} is too large: use /15 or smaller")
        if not _TABLE.match(self.table):
            raise InputError(f"nftables table name {self.table!r}: use 1 to 31 lower-case letters, digits or _")
        if not _PREFIX.match(self.prefix):
            raise InputError(f"sandbox name prefix {self.prefix!r}: use 2 to 10 lower-case letters, digits or -")
        if not 1000 <= self.uid_base <= 2**31 - MAX_SLOTS:
            raise InputError(f"sandbox uid base {self.uid_base} must leave room for every slot above uid 1000")

    @property
    def capacity(self) -> int:
        """How many sandboxes can exist at once (the last /30 holds the hub address)."""
        return self.pool.num_addresses // 4 - 1

    @property
    def hub_address(self) -> IPv4Address:
        """Where the hub (and whatever else a sandbox may reach) listens: the pool's hub address, or loopback in
        the rootless mode."""
        return LOOPBACK if self.mode is SandboxMode.ROOTLESS else self.pool.broadcast_address - 1

    @property
    def interface_pattern(self) -> str:
        """The nftables wildcard that matches the host end of every sandbox's veth."""
        return f"{self.prefix}*"

    def link(self, slot: int) -> SlotLink:
        if not 0 <= slot < self.capacity:
            raise InputError(f"slot {slot} is outside the sandbox pool {self.pool}")
        base = self.pool.network_address + 4 * slot
        name = f"{self.prefix}{slot:0{SLOT_DIGITS}d}"
        uid = os.getuid() if self.mode is SandboxMode.ROOTLESS else self.uid_base + slot
        return SlotLink(slot, name, base + 1, base + 2, uid)

    def owns_interface(self, name: str) -> bool:
        return name.startswith(self.prefix) and name[len(self.prefix) :].isdigit()
