"""The sandbox's file system, as a bubblewrap command line built from one frozen description.

bubblewrap runs as root (so it needs no user namespace) and builds a fresh mount namespace: the host's ``/usr``
and the Python installation read-only, a generated minimal ``/etc``, a new ``/proc`` for its own PID namespace,
a minimal ``/dev``, private ``/tmp`` and ``/dev/shm``, the project's data read-only at ``/data``, and writable
``/outputs`` and home directories. Nothing else of the host is visible. The command then drops to the sandbox's
uid with ``setpriv``: no capabilities (bounding set cleared), no supplementary groups, ``no_new_privs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

HOSTNAME = "workspace"
_ROOT_ENTRIES = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_HOST_ETC = (
    "alternatives",
    "bash.bashrc",
    "inputrc",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
    "profile",
    "ssl",
    "timezone",
)
_GENERATED_ETC = ("passwd", "group", "hosts", "resolv.conf", "nsswitch.conf")


@dataclass(frozen=True)
class Layout:
    """Everything the command line depends on."""

    bwrap: str
    etc_dir: Path
    data_dir: Path
    outputs_dir: Path
    home_dir: Path
    home_inside: str
    read_only: tuple[Path, ...]
    tmp_bytes: int


def root_entries(root: Path = Path("/")) -> list[str]:
    """``--symlink`` for merged-/usr links (``/bin -> usr/bin``), ``--ro-bind`` for real directories."""
    argv: list[str] = []
    for name in _ROOT_ENTRIES:
        path = root / name
        if path.is_symlink():
            argv += ["--symlink", str(path.readlink()), f"/{name}"]
        elif path.is_dir():
            argv += ["--ro-bind", str(path), f"/{name}"]
    return argv


def bwrap_argv(layout: Layout, system: list[str], extra: Sequence[str] = ()) -> list[str]:
    """The bubblewrap command line, up to and including ``--``; ``system`` is ``root_entries()``, ``extra`` more
    options (the rootless mode's namespaces and sockets), placed after every other mount."""
    argv = [layout.bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    argv += ["--unshare-cgroup-try", "--hostname", HOSTNAME, "--ro-bind", "/usr", "/usr", *system]
    argv += ["--dir", "/etc"]
    for name in _HOST_ETC:
        argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    for name in _GENERATED_ETC:
        argv += ["--ro-bind", str(layout.etc_dir / name), f"/etc/{name}"]
    # fresh, private tmpfs mounts inside the sandbox, not the host's shared directories; before the read-only
    # binds, so a Python or virtual environment that lives under /tmp stays visible above the private /tmp
    size = ["--perms", "1777", "--size", str(layout.tmp_bytes)]  # tmpfs is memory: bound each
    argv += ["--proc", "/proc", "--dev", "/dev", *size, "--tmpfs", "/dev/shm"]  # noqa: S108
    argv += [*size, "--tmpfs", "/tmp", "--dir", "/var/tmp"]  # noqa: S108
    argv += _parents([*layout.read_only, Path(layout.home_inside)])
    for path in layout.read_only:
        argv += ["--ro-bind", str(path), str(path)]
    argv += ["--ro-bind", str(layout.data_dir), "/data", "--bind", str(layout.outputs_dir), "/outputs"]
    argv += ["--bind", str(layout.home_dir), layout.home_inside, *extra, "--chdir", layout.home_inside, "--"]
    return argv


def _parents(paths: list[Path]) -> list[str]:
    """``--dir`` with mode 0755 for every directory above a mount point (bubblewrap would make them 0700)."""
    argv: list[str] = []
    seen = {Path("/"), Path("/tmp"), Path("/var"), Path("/var/tmp")}  # noqa: S108 - made above; keep their modes
    for path in paths:
        for parent in reversed(path.parents):
            if parent not in seen:
                seen.add(parent)
                argv += ["--perms", "0755", "--dir", str(parent)]
    return argv


def setpriv_argv(setpriv: str, uid: int) -> list[str]:
    """Drop to ``uid`` (and the same gid) for good: no groups, no capabilities, no new privileges."""
    return [
        setpriv,
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--no-new-privs",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--",
    ]


def write_etc(
    etc_dir: Path,
    *,
    login: str,
    uid: int,
    home_inside: str,
    hub: IPv4Address,
    workspace: IPv4Address,
    gid: int | None = None,
) -> None:
    """The generated files of ``/etc``: one user, the hub's name, and no DNS server (lookups fail at once).
    ``gid`` defaults to ``uid``."""
    gid = uid if gid is None else gid
    etc_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "passwd": f"root:x:0:0::/root:/usr/sbin/nologin\n{login}:x:{uid}:{gid}::{home_inside}:/bin/bash\n",
        "group": f"root:x:0:\n{login}:x:{gid}:\n",
        "hosts": f"127.0.0.1\tlocalhost\n{workspace}\t{HOSTNAME}\n{hub}\thub\n",
        "resolv.conf": "# A TRE workspace has no DNS: every other name is unknown.\n",
        "nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files\n",
    }
    for name, text in files.items():
        path = etc_dir / name
        path.write_text(text, encoding="utf-8")
        path.chmod(0o644)
