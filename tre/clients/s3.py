"""The S3 object store (boto3): any endpoint URL; records versions and encryption when the bucket has them, and
writes ``put_retained`` objects under an object lock retention when the bucket has object lock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from tre.errors import NotFoundError, PermissionDeniedError, TemporaryError, TreError
from tre.storage._protocol import ObjectInfo, Retention, check_key, check_prefix

_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
_DENIED = {"403", "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "AccountProblem"}
_NO_LOCK = {"ObjectLockConfigurationNotFoundError", "NotImplemented"}
_TRANSFER = TransferConfig(multipart_threshold=64 * 1024 * 1024, multipart_chunksize=16 * 1024 * 1024)


@dataclass(frozen=True)
class S3Location:
    """Where the store lives: a bucket, an optional key prefix, and how to reach the endpoint."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key: str | None = None
    secret_key: str | None = None
    retention: Retention = field(default_factory=Retention)  # for put_retained, when the bucket has object lock


class S3ObjectStore:
    def __init__(self, location: S3Location, *, client: Any = None) -> None:
        self.location = location
        self.bucket = location.bucket
        self._object_lock: bool | None = None
        self.prefix = check_prefix(location.prefix.strip("/") + "/" if location.prefix.strip("/") else "")
        self._client = client or boto3.client(
            "s3",
            endpoint_url=location.endpoint_url,
            region_name=location.region,
            aws_access_key_id=location.access_key,
            aws_secret_access_key=location.secret_key,
            config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60),
        )

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def local_path(self, key: str) -> Path | None:
        del key
        return None

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        with self._errors(key):
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        return self._required_info(key)

    def put_retained(self, key: str, data: bytes) -> ObjectInfo:
        """Write under the location's retention if the bucket has object lock: until it ends, that version can be
        neither deleted nor changed (a later write adds a version; a delete adds a marker). Else a plain write."""
        if not self.object_lock_enabled():
            return self.put_bytes(key, data)
        retention = self.location.retention
        until = dt.datetime.now(dt.UTC) + retention.period
        with self._errors(key):
            written = self._client.put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=data,
                ObjectLockMode=retention.mode.value.upper(),
                ObjectLockRetainUntilDate=until,
            )
        return self._version_info(key, written.get("VersionId"))

    def object_lock_enabled(self) -> bool:
        """Whether the bucket has object lock enabled (asked once: S3 cannot turn it off again)."""
        if self._object_lock is None:
            try:
                with self._errors("/"):
                    answer = self._client.get_object_lock_configuration(Bucket=self.bucket)
            except _NoObjectLockError:
                self._object_lock = False
            else:
                status = answer.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
                self._object_lock = status == "Enabled"
        return self._object_lock

    def _version_info(self, key: str, version_id: str | None) -> ObjectInfo:
        """What the store knows about the version just written (not whatever is newest by now)."""
        arguments = {"VersionId": version_id} if _real_version(version_id) else {}
        with self._errors(key):
            head = self._client.head_object(Bucket=self.bucket, Key=self._key(key), **arguments)
        return self._head_info(key, head)

    def put_file(self, key: str, path: Path) -> ObjectInfo:
        with self._errors(key):
            self._client.upload_file(str(path), self.bucket, self._key(key), Config=_TRANSFER)
        return self._required_info(key)

    def get_bytes(self, key: str) -> bytes:
        with self._errors(key):
            body = self._client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            return bytes(body.read())

    def download(self, key: str, destination: Path) -> ObjectInfo:
        info = self._required_info(key)
        with self._errors(key):
            self._client.download_file(self.bucket, self._key(key), str(destination), Config=_TRANSFER)
        return info

    def info(self, key: str) -> ObjectInfo | None:
        try:
            with self._errors(key):
                head = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except NotFoundError:
            return None
        return self._head_info(key, head)

    def _head_info(self, key: str, head: dict[str, Any]) -> ObjectInfo:
        until = head.get("ObjectLockRetainUntilDate")
        mode = head.get("ObjectLockMode")
        return ObjectInfo(
            key=key,
            size=int(head["ContentLength"]),
            uri=self.uri(key),
            version_id=_real_version(head.get("VersionId")),
            encrypted=bool(head.get("ServerSideEncryption")),
            lock_mode=str(mode).lower() if mode else None,
            retain_until=until.astimezone(dt.UTC).isoformat() if isinstance(until, dt.datetime) else None,
        )

    def _required_info(self, key: str) -> ObjectInfo:
        info = self.info(key)
        if info is None:
            raise NotFoundError(f"no object {self.uri(key)}")
        return info

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        paginator = self._client.get_paginator("list_objects_v2")
        with self._errors(prefix or "/"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for item in page.get("Contents", []):
                    key = item["Key"][len(self.prefix) :]
                    yield ObjectInfo(key=key, size=int(item["Size"]), uri=self.uri(key))

    def delete(self, key: str) -> None:
        with self._errors(key):
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def versioning_enabled(self) -> bool:
        with self._errors("/"):
            return bool(self._client.get_bucket_versioning(Bucket=self.bucket).get("Status") == "Enabled")

    @contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """Turn boto errors into ours, naming the object but never a credential."""
        try:
            yield
        except ClientError as exc:
            if key == "/" and exc.response.get("Error", {}).get("Code") in _NO_LOCK:
                raise _NoObjectLockError from None
            raise _client_error(exc, self.uri(key) if key != "/" else f"s3://{self.bucket}") from None
        except EndpointConnectionError:
            raise TemporaryError(f"object store at {self.location.endpoint_url or 'AWS S3'} is unreachable") from None
        except BotoCoreError as exc:
            raise TemporaryError(f"object store error for s3://{self.bucket}: {type(exc).__name__}") from None


class _NoObjectLockError(Exception):
    """The bucket has no object lock configuration (or the server does not implement object lock)."""


def _client_error(exc: ClientError, where: str) -> TreError:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    if code in _NOT_FOUND or status == "404":
        return NotFoundError(f"no object {where}")
    if code in _DENIED or status == "403":
        return PermissionDeniedError(f"access to {where} denied by the object store ({code or status})")
    return TemporaryError(f"object store refused {where} ({code or status})")


def _real_version(version_id: str | None) -> str | None:
    return None if version_id in (None, "null") else version_id
