"""Which TRE on this machine uses which sandbox pool, nftables table and name prefix.

Routes cannot tell two TREs with the same pool apart, and one's teardown would remove the other's hub address
and firewall. So ``prepare_host`` claims its settings in a machine-wide directory: one JSON file per TRE (per
state directory), on which every process using it holds a shared ``flock`` for as long as it lives. A claim
nobody holds any more (its processes exited or were killed) is stale and is removed by the next claimant.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from ipaddress import IPv4Network
from pathlib import Path
from typing import IO, Any

from tre.workspaces._host import SandboxHost
from tre.workspaces._system import SandboxError

CLAIMS_DIR = Path("/run/tre-sandbox-claims")
_HELD: dict[Path, IO[str]] = {}


def _path(host: SandboxHost, claims: Path) -> Path:
    return claims / f"{hashlib.sha256(str(host.state_dir.resolve()).encode()).hexdigest()[:16]}.json"


def _document(host: SandboxHost) -> dict[str, Any]:
    return {
        "state_dir": str(host.state_dir.resolve()),
        "pool": str(host.pool),
        "table": host.table,
        "prefix": host.prefix,
    }


def _conflict(host: SandboxHost, other: dict[str, Any]) -> str | None:
    if IPv4Network(other["pool"]).overlaps(host.pool):
        return f"the address pool {other['pool']}"
    if other["table"] == host.table:
        return f"the nftables table {host.table}"
    if other["prefix"].startswith(host.prefix) or host.prefix.startswith(other["prefix"]):
        return f"the name prefix {other['prefix']}"
    return None


def _held(path: Path) -> bool:
    """True while some process holds the claim (a shared lock on it)."""
    try:
        with path.open() as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except FileNotFoundError:
        return False
    return False


@contextlib.contextmanager
def _directory_locked(claims: Path) -> Iterator[None]:
    claims.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (claims / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def claim(host: SandboxHost, claims: Path = CLAIMS_DIR) -> None:
    """Claim the host's settings for this process; SandboxError if a live TRE elsewhere uses any of them."""
    mine = _path(host, claims)
    with _directory_locked(claims):
        for path in claims.glob("*.json"):
            if path == mine:
                continue
            if not _held(path):
                path.unlink(missing_ok=True)  # stale: every process that held it has gone
                continue
            try:
                other = json.loads(path.read_text(encoding="utf-8"))
                conflict = _conflict(host, other)
            except (OSError, ValueError, KeyError):
                conflict, other = None, {}
            if conflict is not None:
                raise SandboxError(
                    f"another TRE on this machine (state in {other['state_dir']}) uses {conflict}: "
                    "give this one its own sandbox pool, table and prefix"
                )
        if mine not in _HELD:
            handle = mine.open("a+", encoding="utf-8")
            fcntl.flock(handle, fcntl.LOCK_SH)
            if os.fstat(handle.fileno()).st_size == 0:
                handle.write(json.dumps(_document(host)))
                handle.flush()
            _HELD[mine] = handle


def release(host: SandboxHost, claims: Path = CLAIMS_DIR) -> None:
    """Give up this process's claim and remove the file (the TRE is tearing its sandboxes down)."""
    mine = _path(host, claims)
    with _directory_locked(claims):
        handle = _HELD.pop(mine, None)
        if handle is not None:
            handle.close()
        mine.unlink(missing_ok=True)
