"""The object store protocol: what the pipeline and the airlock need from S3 or a local directory."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from tre.errors import InputError

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,254}$")
MAX_KEY_LENGTH = 1024


@dataclass(frozen=True)
class ObjectInfo:
    """What the store knows about one object."""

    key: str
    size: int
    uri: str
    version_id: str | None = None
    encrypted: bool = False


def check_key(key: str) -> str:
    """The key, if every ``/``-separated segment is a plain name; InputError otherwise (no traversal, no absolute)."""
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InputError(f"object key must be 1 to {MAX_KEY_LENGTH} characters")
    for segment in key.split("/"):
        if segment in {".", ".."} or not _SEGMENT.match(segment):
            raise InputError(f"object key {key!r} has an unsafe segment {segment!r}; use letters, digits and ._=+-")
    return key


def check_prefix(prefix: str) -> str:
    """A prefix is a key ending in ``/`` (or empty, meaning everything)."""
    if prefix:
        check_key(prefix.rstrip("/"))
    return prefix


@runtime_checkable
class ObjectStore(Protocol):
    """Keys are ``/``-separated plain names. Writes are atomic: readers see the old object or the new, never part."""

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo: ...

    def put_file(self, key: str, path: Path) -> ObjectInfo: ...

    def get_bytes(self, key: str) -> bytes: ...

    def download(self, key: str, destination: Path) -> ObjectInfo: ...

    def info(self, key: str) -> ObjectInfo | None: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def delete(self, key: str) -> None: ...

    def local_path(self, key: str) -> Path | None:
        """A path readable in place, for stores on this machine's disk; None otherwise."""
        ...

    def uri(self, key: str) -> str: ...
