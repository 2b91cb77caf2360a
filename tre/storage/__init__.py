"""Object storage: the protocol, the local directory store, and opening a store from a URL."""

from __future__ import annotations

import datetime as dt
import urllib.parse
from pathlib import Path

from tre.errors import InputError
from tre.storage._local import LocalObjectStore
from tre.storage._protocol import (
    LockMode,
    ObjectInfo,
    ObjectStore,
    RetainingStore,
    Retention,
    check_key,
    check_prefix,
)

_S3_OPTIONS = ("lock-mode", "lock-days")


def open_object_store(url: str, *, endpoint_url: str | None = None) -> ObjectStore:
    """``file:///path`` (or a plain path) for a local directory; ``s3://bucket/prefix`` for S3 (credentials from
    the usual AWS environment variables or instance role).

    An S3 URL may set the retention of objects written with ``put_retained`` (the airlock's quarantine) when the
    bucket has object lock: ``s3://bucket/prefix?lock-mode=compliance&lock-days=730`` (default governance, 365).
    """
    if url.startswith("s3://"):
        from tre.clients.s3 import S3Location, S3ObjectStore

        address, _, query = url.removeprefix("s3://").partition("?")
        bucket, _, prefix = address.partition("/")
        if not bucket:
            raise InputError(f"object store URL {url!r} names no bucket; use s3://bucket/prefix")
        location = S3Location(bucket=bucket, prefix=prefix, endpoint_url=endpoint_url, retention=_retention(query))
        return S3ObjectStore(location)
    if "://" in url and not url.startswith("file://"):
        raise InputError(f"object store URL {url!r} is neither file:// nor s3://")
    return LocalObjectStore(Path(url.removeprefix("file://")))


def _retention(query: str) -> Retention:
    options = urllib.parse.parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(options) - set(_S3_OPTIONS))
    if unknown:
        raise InputError(f"unknown S3 URL option {unknown[0]!r}; known: {', '.join(_S3_OPTIONS)}")
    mode, days = options.get("lock-mode", ["governance"])[-1], options.get("lock-days", ["365"])[-1]
    if mode not in set(LockMode):
        raise InputError(f"lock-mode must be governance or compliance, not {mode!r}")
    if not days.isdigit() or not 1 <= int(days) <= 36_500:
        raise InputError(f"lock-days must be a whole number of days from 1 to 36500, not {days!r}")
    return Retention(LockMode(mode), dt.timedelta(days=int(days)))


def put_retained(store: ObjectStore, key: str, data: bytes) -> ObjectInfo:
    """Write an object that must survive tampering (the airlock quarantine): under a retention where the store has
    object lock (S3), plainly where it has not (a local directory, a bucket without object lock)."""
    if isinstance(store, RetainingStore):
        return store.put_retained(key, data)
    return store.put_bytes(key, data)


__all__ = [
    "LocalObjectStore",
    "LockMode",
    "ObjectInfo",
    "ObjectStore",
    "RetainingStore",
    "Retention",
    "check_key",
    "check_prefix",
    "open_object_store",
    "put_retained",
]
