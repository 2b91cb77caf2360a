"""The sandbox's directories on the host: the data it reads, and the outputs and home it owns."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from tre.workspaces._system import SandboxError

if TYPE_CHECKING:
    from tre.workspaces.sandbox import SandboxSpec

SHORTCUTS = {"data": "/data", "outputs": "/outputs"}


def prepare_directories(spec: SandboxSpec, uid: int) -> None:
    """Make the data readable by the sandbox's uid, and the outputs and home directories exist and be its own.
    A sandbox running as this process's own uid (the rootless mode) reads the data as its owner: nothing changes."""
    if uid == os.geteuid():
        check_data_exists(spec.data_dir)
    else:
        make_data_readable(spec.data_dir)
    for directory in (spec.outputs_dir, spec.home_dir):
        own(directory, uid)
    for name, target in SHORTCUTS.items():
        link = spec.home_dir / name
        if not link.is_symlink() and not link.exists():
            link.symlink_to(target)
            os.lchown(link, uid, uid)


def check_data_exists(data_dir: Path) -> None:
    if not data_dir.is_dir():
        raise SandboxError(f"the data directory {data_dir} does not exist; provision the project's data first")


def make_data_readable(data_dir: Path) -> None:
    """Let any uid read the files under ``data_dir`` (they are mounted read-only, and only into the project's
    sandboxes). Refused unless an ancestor directory is closed to other users, so that no local user outside a
    sandbox gains access: the embedded TRE_HOME is mode 0700."""
    check_data_exists(data_dir)
    if not any(not p.stat().st_mode & stat.S_IXOTH for p in data_dir.resolve().parents):
        raise SandboxError(
            f"the data directory {data_dir} is reachable by every local user: make TRE_HOME private (chmod 700)"
        )
    for root, _dirs, files in os.walk(data_dir):
        _add_mode(Path(root), stat.S_IROTH | stat.S_IXOTH)
        for name in files:
            _add_mode(Path(root) / name, stat.S_IROTH)


def _add_mode(path: Path, bits: int) -> None:
    mode = path.lstat().st_mode
    if not stat.S_ISLNK(mode) and mode & bits != bits:
        path.chmod(stat.S_IMODE(mode) | bits)


def own(directory: Path, uid: int) -> None:
    """Create ``directory`` (mode 0700) if needed and give it, and everything in it, to ``uid``."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if directory.stat().st_uid == uid:
        return
    for root, dirs, files in os.walk(directory):
        for name in (*dirs, *files):
            os.lchown(Path(root) / name, uid, uid)
    os.chown(directory, uid, uid)
    directory.chmod(0o700)
