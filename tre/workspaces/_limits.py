"""CPU, memory and process limits: a cgroup v2 per sandbox where the kernel allows, else resource limits.

With a writable cgroup v2 hierarchy (``memory`` and ``cpu`` controllers available at ``/sys/fs/cgroup``) each
sandbox gets ``<root>/<table>/<name>`` with ``memory.max``, ``memory.swap.max``, ``cpu.max`` and ``pids.max``,
and the whole sandbox can be killed through ``cgroup.kill``. Otherwise (cgroup v1 or hybrid hosts, containers)
the workspace runs under ``prlimit``: RLIMIT_AS (address space, per process: a weaker bound than a cgroup) and
RLIMIT_NPROC, which counts per uid and every sandbox has its own uid. No CPU limit is possible then.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path

from tre.errors import InputError

CGROUP_ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000
_CONTROLLERS = ("memory", "cpu", "pids")
_BYTES = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|K|M|G|T)?$")
_UNITS = {None: 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_UNITS |= {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


@dataclass(frozen=True)
class Limits:
    """``memory_bytes`` and ``cpus`` None mean unlimited; ``tasks`` bounds processes and threads."""

    memory_bytes: int | None = None
    cpus: float | None = None
    tasks: int = 1024
    tmp_bytes: int = 1024**3


def parse_bytes(quantity: str) -> int:
    """A Kubernetes-style byte quantity (``512Mi``, ``4Gi``, ``8G``, ``1000``) in bytes."""
    match = _BYTES.match(quantity.strip())
    if not match:
        raise InputError(f"memory {quantity!r} is not a quantity like 512Mi or 4Gi")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def parse_cpus(quantity: str) -> float:
    """A Kubernetes-style CPU quantity (``500m``, ``2``, ``1.5``) in CPUs."""
    text = quantity.strip()
    try:
        value = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        raise InputError(f"cpu {quantity!r} is not a quantity like 500m or 2") from None
    if value <= 0:
        raise InputError(f"cpu {quantity!r} must be more than zero")
    return value


def prlimit_argv(prlimit: str, limits: Limits, *, address_space: bool) -> list[str]:
    """The ``prlimit`` prefix: always the task limit; the memory limit as RLIMIT_AS without a cgroup."""
    argv = [prlimit, f"--nproc={limits.tasks}"]
    if address_space and limits.memory_bytes is not None:
        argv.append(f"--as={limits.memory_bytes}")
    return [*argv, "--"]


def cgroup_v2_available(root: Path = CGROUP_ROOT) -> bool:
    """True when ``root`` is a cgroup v2 hierarchy offering the memory, cpu and pids controllers."""
    try:
        offered = (root / "cgroup.controllers").read_text(encoding="ascii").split()
    except OSError:
        return False
    return all(c in offered for c in _CONTROLLERS) and (root / "cgroup.subtree_control").exists()


class Cgroup:
    """One sandbox's cgroup: ``root/group/name``."""

    def __init__(self, root: Path, group: str, name: str) -> None:
        self.parent = root / group
        self.path = self.parent / name
        self.root = root

    def create(self, limits: Limits) -> None:
        """Create it with the limits (enabling the controllers on the way down). OSError if not permitted."""
        _enable_controllers(self.root)
        self.parent.mkdir(exist_ok=True)
        _enable_controllers(self.parent)
        self.path.mkdir(exist_ok=True)
        memory = "max" if limits.memory_bytes is None else str(limits.memory_bytes)
        (self.path / "memory.max").write_text(memory, encoding="ascii")
        (self.path / "memory.swap.max").write_text("0", encoding="ascii")
        quota = "max" if limits.cpus is None else str(max(1000, round(limits.cpus * CPU_PERIOD_US)))
        (self.path / "cpu.max").write_text(f"{quota} {CPU_PERIOD_US}", encoding="ascii")
        (self.path / "pids.max").write_text(str(limits.tasks), encoding="ascii")

    @property
    def procs(self) -> Path:
        return self.path / "cgroup.procs"

    def kill(self) -> None:
        """Kill every process in the cgroup (kernel 5.14+; ignored where ``cgroup.kill`` does not exist)."""
        kill = self.path / "cgroup.kill"
        if kill.exists():
            kill.write_text("1", encoding="ascii")

    def empty(self) -> bool:
        try:
            return not self.procs.read_text(encoding="ascii").split()
        except FileNotFoundError:
            return True

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.rmdir()


def _enable_controllers(group: Path) -> None:
    control = group / "cgroup.subtree_control"
    enabled = control.read_text(encoding="ascii").split()
    missing = [c for c in _CONTROLLERS if c not in enabled]
    if missing:
        control.write_text(" ".join(f"+{c}" for c in missing), encoding="ascii")
