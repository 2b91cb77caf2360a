"""The airlock quarantine under S3 object lock: on radosgw (which enforces it) a quarantined version cannot be
deleted or changed before its retention ends; on a bucket without object lock, and on the local store, the
airlock works the same without one."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.integration.test_api import NOW, seed
from tests.support import radosgw
from tests.support import s3 as s3_support
from tre.airlock import FileKind, State, TableKind, Vote
from tre.airlock import service as airlock
from tre.clients.s3 import S3Location, S3ObjectStore
from tre.errors import InputError, IntegrityError, PermissionDeniedError
from tre.services import Actor
from tre.storage import (
    LocalObjectStore,
    LockMode,
    ObjectStore,
    RetainingStore,
    Retention,
    open_object_store,
    put_retained,
)
from tre.store import Store, sqlite_url

TABLE = b"group,count\nA,25\nB,40\n"
SECONDS = 5  # long enough to try everything, short enough to wait out


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(sqlite_url(tmp_path / "tre.db"))
    store.migrate()
    seed(store)
    yield store
    store.close()


def locked_store(rgw: radosgw.RadosgwServer, mode: LockMode) -> tuple[S3ObjectStore, Any]:
    client = rgw.client()
    bucket = f"quarantine-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    retention = Retention(mode, dt.timedelta(seconds=SECONDS))
    location = S3Location(bucket, "tre", rgw.endpoint_url, access_key=rgw.access_key, secret_key=rgw.secret_key)
    return S3ObjectStore(S3Location(**{**location.__dict__, "retention": retention}), client=client), client


def add(store: Store, objects: ObjectStore, data: bytes = TABLE) -> tuple[str, str]:
    """A draft request with one quarantined output; its id and the quarantine key."""
    with store.transaction() as unit:
        actor = Actor("alice", unit.users.get("alice"))
        request = airlock.create_request(unit, actor, "diabetes-outcomes", title="T", now=NOW)
        item = airlock.add_file(
            unit, actor, objects, request.id, name="t.csv", kind=FileKind.OUTPUT, data=data, now=NOW,
            table=TableKind.FREQUENCY,
        )  # fmt: skip
    return request.id, item.object_key


def added_entry(store: Store) -> dict[str, Any]:
    with store.transaction(write=False) as unit:
        (entry,) = [e for e in unit.audit.entries() if e.action == "airlock.file-added"]
    return entry.details


def refused(call: Any, **arguments: Any) -> str:
    with pytest.raises(ClientError) as error:
        call(**arguments)
    return str(error.value.response["Error"]["Code"])


def test_a_quarantined_version_cannot_be_deleted_or_changed_until_its_compliance_retention_ends(
    rgw: radosgw.RadosgwServer, store: Store
) -> None:
    objects, s3 = locked_store(rgw, LockMode.COMPLIANCE)
    assert objects.object_lock_enabled()
    request_id, key = add(store, objects)
    details = added_entry(store)
    assert details["lockMode"] == "compliance"
    retain_until = dt.datetime.fromisoformat(details["retainUntil"])
    assert dt.timedelta(seconds=SECONDS - 3) < retain_until - dt.datetime.now(dt.UTC) <= dt.timedelta(seconds=SECONDS)
    version = details["version"]
    where = {"Bucket": objects.bucket, "Key": f"tre/{key}", "VersionId": version}

    assert refused(s3.delete_object, **where) == "AccessDenied"
    assert refused(s3.delete_object, **where, BypassGovernanceRetention=True) == "AccessDenied"
    shorter = {"Mode": "COMPLIANCE", "RetainUntilDate": dt.datetime.now(dt.UTC)}
    assert refused(s3.put_object_retention, **where, Retention=shorter) in {"AccessDenied", "InvalidArgument"}
    for tamper, message in (
        (lambda: objects.put_bytes(key, b"group,count\nA,25\nB,4\n"), "changed in quarantine"),  # a newer version
        (lambda: objects.delete(key), "missing from quarantine"),  # a delete marker on top
    ):
        tamper()
        assert s3.get_object(**where)["Body"].read() == TABLE  # the quarantined version is untouched
        with pytest.raises(IntegrityError, match=message), store.transaction() as unit:  # the airlock notices
            airlock.submit(unit, Actor("alice", unit.users.get("alice")), objects, request_id, now=NOW)

    time.sleep(max(0.0, (retain_until - dt.datetime.now(dt.UTC)).total_seconds()) + 1.5)
    s3.delete_object(**where)  # the retention, and nothing else, was what kept it
    assert refused(s3.head_object, **where) in {"404", "NoSuchKey", "NoSuchVersion"}


def test_governance_retention_yields_only_to_an_explicit_bypass(rgw: radosgw.RadosgwServer, store: Store) -> None:
    objects, s3 = locked_store(rgw, LockMode.GOVERNANCE)
    _, key = add(store, objects)
    details = added_entry(store)
    where = {"Bucket": objects.bucket, "Key": f"tre/{key}", "VersionId": details["version"]}
    assert details["lockMode"] == "governance"
    assert objects.info(key).lock_mode == "governance"  # type: ignore[union-attr]
    assert refused(s3.delete_object, **where) == "AccessDenied"
    s3.delete_object(**where, BypassGovernanceRetention=True)  # allowed to a principal with the bypass permission


def test_the_airlock_works_the_same_on_a_locked_bucket(rgw: radosgw.RadosgwServer, store: Store) -> None:
    objects, _ = locked_store(rgw, LockMode.GOVERNANCE)
    request_id, _ = add(store, objects)
    with store.transaction() as unit:
        airlock.submit(unit, Actor("alice", unit.users.get("alice")), objects, request_id, now=NOW)
        for checker in ("olive", "oscar"):
            actor = Actor(checker, unit.users.get(checker))
            airlock.vote(unit, actor, request_id, file="t.csv", choice=Vote.APPROVE, now=NOW)
    assert airlock.release_approved(store, objects, now=NOW) == [request_id]
    prefix = f"projects/diabetes-outcomes/releases/{request_id}/"
    assert objects.get_bytes(prefix + "t.csv") == TABLE
    assert objects.info(prefix + "t.csv").lock_mode is None  # type: ignore[union-attr]  # releases are not locked
    with store.transaction() as unit:
        olive = Actor("olive", unit.users.get("olive"))
        airlock.revoke(unit, olive, objects, request_id, reason="a second look", now=NOW)
        assert unit.airlock.get(request_id).state == State.REVOKED.value  # type: ignore[union-attr]
    assert list(objects.list(prefix)) == []


# ---- without object lock: the same airlock, no retention ---------------------------------------------------------


@pytest.fixture(scope="module")
def moto() -> Iterator[s3_support.MotoServer]:
    server = s3_support.start_moto()
    yield server
    server.stop()


def moto_store(moto: s3_support.MotoServer, **bucket: Any) -> S3ObjectStore:
    name = f"q-{uuid.uuid4().hex[:10]}"
    s3_support.s3_client(moto.endpoint_url, moto.access_key, moto.secret_key).create_bucket(Bucket=name, **bucket)
    location = S3Location(name, "tre", moto.endpoint_url, access_key=moto.access_key, secret_key=moto.secret_key)
    return S3ObjectStore(location)


def test_a_bucket_without_object_lock_gets_plain_writes(moto: s3_support.MotoServer, store: Store) -> None:
    objects = moto_store(moto)
    assert isinstance(objects, RetainingStore)
    assert not objects.object_lock_enabled()
    _, key = add(store, objects)
    assert objects.get_bytes(key) == TABLE
    assert {"lockMode", "retainUntil", "version"}.isdisjoint(added_entry(store))
    info = objects.info(key)
    assert info is not None
    assert (info.lock_mode, info.retain_until) == (None, None)


def test_lock_is_detected_on_moto_too(moto: s3_support.MotoServer) -> None:
    objects = moto_store(moto, ObjectLockEnabledForBucket=True)
    assert objects.object_lock_enabled()
    info = put_retained(objects, "k", b"x")
    assert (info.lock_mode, info.version_id is not None) == ("governance", True)
    assert dt.datetime.fromisoformat(info.retain_until or "") > dt.datetime.now(dt.UTC) + dt.timedelta(days=364)


def test_the_local_store_has_no_object_lock(tmp_path: Path, store: Store) -> None:
    objects = LocalObjectStore(tmp_path / "objects")
    assert not isinstance(objects, RetainingStore)
    _, key = add(store, objects)
    assert objects.get_bytes(key) == TABLE
    assert "lockMode" not in added_entry(store)


class RefusingClient:
    """An S3 client whose object lock question gets one fixed error (a server without object lock, or a policy
    that denies the question); anything else must not be called."""

    def __init__(self, code: str, status: int) -> None:
        self.error = ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Get")

    def get_object_lock_configuration(self, **_: Any) -> Any:
        raise self.error

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"{name} must not be called")


@pytest.mark.parametrize(
    ("code", "status", "enabled"),
    [("ObjectLockConfigurationNotFoundError", 404, False), ("NotImplemented", 501, False), ("AccessDenied", 403, None)],
)
def test_object_lock_detection(code: str, status: int, enabled: bool | None) -> None:
    objects = S3ObjectStore(S3Location("b"), client=RefusingClient(code, status))
    if enabled is None:  # not knowing is not "no": the write is refused rather than left unprotected
        with pytest.raises(PermissionDeniedError, match="denied"):
            objects.object_lock_enabled()
    else:
        assert objects.object_lock_enabled() is enabled


@pytest.mark.parametrize(
    ("url", "retention"),
    [
        ("s3://b/p", Retention()),
        ("s3://b/p?lock-mode=compliance&lock-days=730", Retention(LockMode.COMPLIANCE, dt.timedelta(days=730))),
        ("s3://b?lock-days=30", Retention(LockMode.GOVERNANCE, dt.timedelta(days=30))),
    ],
)
def test_retention_is_configured_on_the_store_url(url: str, retention: Retention) -> None:
    objects = open_object_store(url, endpoint_url="http://127.0.0.1:1")
    assert isinstance(objects, S3ObjectStore)
    assert objects.location.retention == retention
    assert objects.location.prefix == ("p" if "/p" in url else "")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("lock-mode=legal-hold", "governance or compliance"),
        ("lock-days=0", "from 1 to 36500"),
        ("lock-days=ten", "from 1 to 36500"),
        ("retention=1", "unknown S3 URL option 'retention'"),
    ],
)
def test_bad_retention_options_are_refused(query: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        open_object_store(f"s3://b/p?{query}")
