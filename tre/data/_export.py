"""Copy a project's extract from the object store into a directory that workspaces mount read-only.

Cluster mode's data volume is such a directory. After an export it holds::

    DIR/current -> extracts/<extract id>     a relative symlink, repointed atomically
    DIR/extracts/<extract id>/               <dataset>.parquet for each dataset, manifest.json, CITATION.txt

Files are copied into ``DIR/.staging-<random>/``, each one's SHA-256 and size checked against the manifest as it is
copied, and flushed to disk. Only a complete, verified staging directory is renamed to ``extracts/<extract id>``,
and only then is ``current`` repointed: a new symlink renamed over the old one. A reader of ``DIR/current``
therefore sees the old extract or the new one, never part of one; a run that fails or is killed part-way leaves
``current`` as it was, and the next run removes its leftovers. Exporting an extract that is already there only
makes sure ``current`` points at it, so re-running is idempotent.

Older extracts are removed as soon as ``current`` points at the new one: a new extract may exist precisely because
patients opted out or columns stopped being approved, so the old one must stop being readable. A process that has
an old file open keeps reading it (POSIX unlink semantics); one that opens files by path after the swap gets the
new extract. One export runs at a time per directory (an advisory lock on ``DIR/.lock``).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tre.errors import InputError, IntegrityError, NotFoundError
from tre.governance import PATIENT_DATA_CITATION
from tre.storage import ObjectStore

CURRENT = "current"
EXTRACTS = "extracts"
MANIFEST_FILE = "manifest.json"
CITATION_FILE = "CITATION.txt"
_LOCK_FILE = ".lock"
_STAGING = ".staging-"
_REMOVING = ".removing-"
_NEW_LINK = ".current-"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1024 * 1024
_FILE_MODE = 0o644  # workspaces run as another uid than the provisioning Job: files must be world-readable
_DIR_MODE = 0o755
_DIRECTORY_ERRORS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EEXIST}
)


@dataclass(frozen=True)
class ExportedExtract:
    """What an export left in the directory."""

    extract: str
    path: Path  # DIR/extracts/<extract id>
    files: tuple[str, ...]
    bytes: int
    copied: bool  # False when the extract was already there and only ``current`` was checked
    removed: tuple[str, ...]  # ids of older extracts removed from the directory


@dataclass(frozen=True)
class _File:
    name: str
    key: str
    sha256: str
    size: int | None


def export_extract(manifest: Mapping[str, Any], objects: ObjectStore, directory: Path) -> ExportedExtract:
    """Make ``directory/current`` the extract ``manifest`` describes, copied from ``objects`` and verified.

    ``manifest`` is the recorded manifest of the extract (``tre data manifest`` shows it). InputError for a
    malformed manifest or a directory that cannot be written; IntegrityError when a file does not match its
    checksum; NotFoundError when a file is missing from the store. In every failure ``current`` is unchanged.
    """
    extract = _safe_name(manifest.get("extract"), "extract id")
    files = _planned_files(manifest, extract)
    with _writing(directory), _locked(directory):
        _check_current(directory)
        _remove_leftovers(directory)
        target = directory / EXTRACTS / extract
        document = _manifest_bytes(manifest)
        copied = not _complete(target, document)
        if copied:
            _publish(_stage(files, document, objects, directory, extract), target)
        _point_current(directory, extract)
        removed = _remove_older(directory, extract)
        size = sum((target / f.name).stat().st_size for f in files)
    return ExportedExtract(extract, target, tuple(f.name for f in files), size, copied, removed)


def check_export_directory(directory: Path) -> None:
    """Refuse, before any work, a directory that ``export_extract`` could not write (creating it if need be)."""
    with _writing(directory), _locked(directory):
        _check_current(directory)


# ---- the manifest: checked before anything is touched -------------------------------------------------------------


def _safe_name(value: object, what: str) -> str:
    """A single plain path segment: no ``/``, no ``..``, no leading dot."""
    if not isinstance(value, str) or not _SAFE_NAME.match(value) or ".." in value:
        raise InputError(f"the manifest's {what} {value!r} is not a plain file name; refusing to export it")
    return value


def _planned_files(manifest: Mapping[str, Any], extract: str) -> list[_File]:
    datasets = manifest.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise InputError(f"the manifest of extract {extract} lists no datasets; refusing to export it")
    files = [_planned_file(entry, extract) for entry in datasets]
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise InputError(f"the manifest of extract {extract} lists a dataset twice; refusing to export it")
    return files


def _planned_file(entry: object, extract: str) -> _File:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("file"), Mapping):
        raise InputError(f"the manifest of extract {extract} has a dataset entry without a file; refusing to export it")
    name = _safe_name(entry.get("name"), "dataset name")
    file = entry["file"]
    key, digest, size = file.get("key"), file.get("sha256"), file.get("bytes")
    if not isinstance(key, str) or not isinstance(digest, str) or not _SHA256.match(digest):
        raise InputError(f"the manifest of extract {extract} gives dataset {name} no object key or SHA-256")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
        raise InputError(f"the manifest of extract {extract} gives dataset {name} a size that is not a number")
    return _File(f"{name}.parquet", key, digest, size)


def _manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


# ---- the directory -------------------------------------------------------------------------------------------------


@contextmanager
def _writing(directory: Path) -> Iterator[None]:
    """Turn the OS's refusals to write in ``directory`` into one clear line."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _DIRECTORY_ERRORS:
            raise _unwritable(directory, exc) from None
        raise


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold ``directory/.lock``; the first write, so a directory we cannot write is refused here, untouched."""
    directory.mkdir(parents=True, exist_ok=True)
    handle = os.open(directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)


def _unwritable(directory: Path, exc: OSError) -> InputError:
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return InputError(f"{directory} is not a directory; give --to a directory")
    reason = exc.strerror or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InputError(f"cannot write the extract to {directory} ({reason}); give the data volume more space")
    return InputError(
        f"cannot write the extract to {directory} ({reason}); mount the data volume writable for this user "
        "(the Job's fsGroup) or choose another directory"
    )


def _complete(target: Path, document: bytes) -> bool:
    """True if ``target`` is this extract, already published (only a verified staging directory is renamed there)."""
    try:
        return (target / MANIFEST_FILE).read_bytes() == document
    except OSError:
        return False


def _stage(files: list[_File], document: bytes, objects: ObjectStore, directory: Path, extract: str) -> Path:
    staging = directory / f"{_STAGING}{secrets.token_hex(6)}"
    try:
        staging.mkdir(mode=_DIR_MODE)
        for file in files:
            _copy_verified(objects, file, staging / file.name, extract)
        _write_file(staging / MANIFEST_FILE, document)
        _write_file(staging / CITATION_FILE, (PATIENT_DATA_CITATION + "\n").encode())
        staging.chmod(_DIR_MODE)
        _fsync_directory(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _publish(staging: Path, target: Path) -> None:
    """Rename the verified staging directory into place; anything already there is moved aside first."""
    if not target.parent.is_dir():
        target.parent.mkdir()
        target.parent.chmod(_DIR_MODE)  # whatever the umask
    if target.exists():
        _discard(target)
    os.rename(staging, target)
    _fsync_directory(target.parent)


def _check_current(directory: Path) -> None:
    link = directory / CURRENT
    if link.exists() and not link.is_symlink():
        raise InputError(f"{link} exists and is not a symlink; move it away so that extracts can be published")


def _point_current(directory: Path, extract: str) -> None:
    link = directory / CURRENT
    wanted = f"{EXTRACTS}/{extract}"
    if link.is_symlink() and os.readlink(link) == wanted:
        return
    new_link = directory / f"{_NEW_LINK}{secrets.token_hex(6)}"
    os.symlink(wanted, new_link)
    os.replace(new_link, link)
    _fsync_directory(directory)


def _remove_older(directory: Path, keep: str) -> tuple[str, ...]:
    extracts = directory / EXTRACTS
    older = sorted(p.name for p in extracts.iterdir() if p.name != keep)
    for name in older:
        _discard(extracts / name)
    return tuple(older)


def _remove_leftovers(directory: Path) -> None:
    """What a killed run left: staging directories, half-removed extracts, unused new links."""
    for path in directory.iterdir():
        if path.name.startswith((_STAGING, _REMOVING, _NEW_LINK)):
            _remove(path)


def _discard(path: Path) -> None:
    """Rename out of ``extracts/`` first (atomic), so a directory there is always a complete extract; then delete."""
    aside = path.parent.parent / f"{_REMOVING}{secrets.token_hex(6)}"
    os.rename(path, aside)
    _remove(aside)


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)


# ---- files ---------------------------------------------------------------------------------------------------------


def _copy_verified(objects: ObjectStore, file: _File, destination: Path, extract: str) -> None:
    """Copy one object, hashing as it goes (from a store on this disk) or right after download (from S3)."""
    local = objects.local_path(file.key)
    try:
        if local is not None and local.is_file():
            with local.open("rb") as source, _new_file(destination) as out:
                digest, size = _copy_hashing(source.fileno(), out)
        else:
            objects.download(file.key, destination)
            destination.chmod(_FILE_MODE)
            digest, size = _hash_file(destination)
            _fsync_file(destination)
    except NotFoundError:
        raise NotFoundError(
            f"extract {extract}: the file of dataset {file.name} ({file.key}) is missing from the object store; "
            "provision the project again"
        ) from None
    _check(file, digest, size, extract)


def _check(file: _File, digest: str, size: int, extract: str) -> None:
    if digest != file.sha256 or (file.size is not None and size != file.size):
        raise IntegrityError(
            f"extract {extract}: {file.name} has SHA-256 {digest[:12]}… ({size} bytes) but the manifest says "
            f"{file.sha256[:12]}… ({file.size} bytes); the stored copy is damaged or was changed, so nothing was "
            "published; provision the project again"
        )


@contextmanager
def _new_file(path: Path) -> Iterator[int]:
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE)
    try:
        os.fchmod(handle, _FILE_MODE)  # whatever the umask
        yield handle
        os.fsync(handle)
    finally:
        os.close(handle)


def _copy_hashing(source: int, out: int) -> tuple[str, int]:
    sha = hashlib.sha256()
    size = 0
    while chunk := os.read(source, _CHUNK):
        sha.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(out, view) :]
        size += len(chunk)
    return sha.hexdigest(), size


def _hash_file(path: Path) -> tuple[str, int]:
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


def _write_file(path: Path, data: bytes) -> None:
    with _new_file(path) as handle:
        view = memoryview(data)
        while view:
            view = view[os.write(handle, view) :]


def _fsync_file(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _fsync_directory(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
