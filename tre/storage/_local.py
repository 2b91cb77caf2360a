"""A local directory object store for the embedded mode: atomic writes (temp file, fsync, rename)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from tre.errors import NotFoundError
from tre.storage._protocol import ObjectInfo, check_key, check_prefix

_CHUNK = 1024 * 1024
_TEMP_SUFFIX = ".partial"


class LocalObjectStore:
    """Objects are files under ``root``; their keys are their relative paths."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def _info(self, key: str, path: Path) -> ObjectInfo:
        return ObjectInfo(key=key, size=path.stat().st_size, uri=path.as_uri())

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        path = self._path(key)
        with self._atomic(path) as handle:
            handle.write(data)
        return self._info(key, path)

    def put_file(self, key: str, path: Path) -> ObjectInfo:
        target = self._path(key)
        with path.open("rb") as source, self._atomic(target) as handle:
            shutil.copyfileobj(source, handle, _CHUNK)
        return self._info(key, target)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"no object {key} in {self.root}") from None

    def download(self, key: str, destination: Path) -> ObjectInfo:
        source = self._path(key)
        if not source.is_file():
            raise NotFoundError(f"no object {key} in {self.root}")
        shutil.copyfile(source, destination)
        return self._info(key, source)

    def info(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        return self._info(key, path) if path.is_file() else None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        if not self.root.is_dir():
            return
        for path in sorted(self.root.rglob("*")):
            key = path.relative_to(self.root).as_posix()
            if path.is_file() and key.startswith(prefix) and not path.name.endswith(_TEMP_SUFFIX):
                yield self._info(key, path)

    def delete(self, key: str) -> None:
        """Remove the object, and any directories it leaves empty."""
        path = self._path(key)
        path.unlink(missing_ok=True)
        for parent in path.parents:
            if parent == self.root or not parent.is_relative_to(self.root):
                break
            try:
                parent.rmdir()
            except OSError:
                break

    def _atomic(self, path: Path) -> _AtomicFile:
        return _AtomicFile(path)


class _AtomicFile:
    """Write to a temporary file beside ``path``; on success fsync and rename over it, else remove it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> BinaryIO:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=_TEMP_SUFFIX)
        self.temp = Path(temp)
        self.handle = os.fdopen(fd, "wb")
        return self.handle

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        try:
            if kind is None:
                self.handle.flush()
                os.fsync(self.handle.fileno())
            self.handle.close()
            if kind is None:
                os.replace(self.temp, self.path)
                _fsync_directory(self.path.parent)
        finally:
            self.temp.unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
