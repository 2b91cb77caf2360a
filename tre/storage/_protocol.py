"""The object store protocol: what the pipeline and the airlock need from S3 or a local directory."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
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
    lock_mode: str | None = None  # "governance" or "compliance" while the version is under a retention
    retain_until: str | None = None  # ISO 8601, UTC


class LockMode(StrEnum):
    """S3 object lock modes: governance can be lifted by a principal with s3:BypassGovernanceRetention;
    compliance cannot be lifted or shortened by anyone, the account root included, until it ends."""

    GOVERNANCE = "governance"
    COMPLIANCE = "compliance"


@dataclass(frozen=True)
class Retention:
    """How long, and how firmly, an object version written with ``put_retained`` is protected."""

    mode: LockMode = LockMode.GOVERNANCE
    period: dt.timedelta = dt.timedelta(days=365)

    def __post_init__(self) -> None:
        if self.period <= dt.timedelta(0):
            raise InputError("an object lock retention period must be positive")


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


@runtime_checkable
class RetainingStore(Protocol):
    """A store that can protect object versions from deletion and overwriting (S3 object lock)."""

    def object_lock_enabled(self) -> bool:
        """Whether the bucket has object lock (and so versioning) enabled."""
        ...

    def put_retained(self, key: str, data: bytes) -> ObjectInfo:
        """Write, with the store's retention when object lock is enabled; a plain write otherwise."""
        ...
