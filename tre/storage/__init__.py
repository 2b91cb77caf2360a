"""Object storage: the protocol, the local directory store, and opening a store from a URL."""

from __future__ import annotations

from pathlib import Path

from tre.errors import InputError
from tre.storage._local import LocalObjectStore
from tre.storage._protocol import ObjectInfo, ObjectStore, check_key, check_prefix


def open_object_store(url: str, *, endpoint_url: str | None = None) -> ObjectStore:
    """``file:///path`` (or a plain path) for a local directory; ``s3://bucket/prefix`` for S3 (credentials from
    the usual AWS environment variables or instance role)."""
    if url.startswith("s3://"):
        from tre.clients.s3 import S3Location, S3ObjectStore

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise InputError(f"object store URL {url!r} names no bucket; use s3://bucket/prefix")
        return S3ObjectStore(S3Location(bucket=bucket, prefix=prefix, endpoint_url=endpoint_url))
    if "://" in url and not url.startswith("file://"):
        raise InputError(f"object store URL {url!r} is neither file:// nor s3://")
    return LocalObjectStore(Path(url.removeprefix("file://")))


__all__ = ["LocalObjectStore", "ObjectInfo", "ObjectStore", "check_key", "check_prefix", "open_object_store"]
