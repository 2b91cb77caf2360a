"""One contract for every object store: the local directory, S3 on moto, and (when available) S3 on radosgw."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import radosgw
from tests.support import s3 as s3_support
from tre.clients.s3 import S3Location, S3ObjectStore
from tre.errors import InputError, NotFoundError, PermissionDeniedError, TemporaryError
from tre.storage import LocalObjectStore, ObjectStore, open_object_store, put_retained


@pytest.fixture(scope="session")
def moto_server() -> Iterator[s3_support.MotoServer]:
    server = s3_support.start_moto()
    yield server
    server.stop()


def _s3_store(endpoint: str, access_key: str, secret_key: str, *, versioned: bool = False) -> S3ObjectStore:
    bucket = f"tre-{uuid.uuid4().hex[:12]}"
    client = s3_support.s3_client(endpoint, access_key, secret_key)
    client.create_bucket(Bucket=bucket)
    if versioned:
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    location = S3Location(
        bucket=bucket, prefix="tre", endpoint_url=endpoint, access_key=access_key, secret_key=secret_key
    )
    return S3ObjectStore(location)


@pytest.fixture(params=["local", "moto", "radosgw"])
def object_store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    if request.param == "radosgw":
        rgw: radosgw.RadosgwServer = request.getfixturevalue("rgw")
        return _s3_store(rgw.endpoint_url, rgw.access_key, rgw.secret_key)
    server: s3_support.MotoServer = request.getfixturevalue("moto_server")
    return _s3_store(server.endpoint_url, server.access_key, server.secret_key)


def test_store_satisfies_the_protocol(object_store: ObjectStore) -> None:
    assert isinstance(object_store, ObjectStore)


def test_put_get_info_round_trip(object_store: ObjectStore) -> None:
    info = object_store.put_bytes("projects/a/data.bin", b"hello")
    assert (info.key, info.size) == ("projects/a/data.bin", 5)
    assert object_store.get_bytes("projects/a/data.bin") == b"hello"
    assert object_store.info("projects/a/data.bin") == info
    assert object_store.uri("projects/a/data.bin") == info.uri


def test_retained_writes_read_back_on_any_store(object_store: ObjectStore) -> None:
    """put_retained is a plain write where there is no object lock (here: none of these buckets has it)."""
    info = put_retained(object_store, "airlock/r/quarantine/k", b"kept")
    assert object_store.get_bytes("airlock/r/quarantine/k") == b"kept"
    assert (info.size, info.lock_mode, info.retain_until) == (4, None, None)


def test_overwrite_replaces_whole_object(object_store: ObjectStore) -> None:
    object_store.put_bytes("k", b"first version, longer")
    object_store.put_bytes("k", b"second")
    assert object_store.get_bytes("k") == b"second"


def test_files_stream_in_and_out(object_store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    payload = hashlib.sha256(b"seed").digest() * 200_000  # 6.4 MB
    source.write_bytes(payload)
    object_store.put_file("big/one.bin", source)
    destination = tmp_path / "back.bin"
    info = object_store.download("big/one.bin", destination)
    assert destination.read_bytes() == payload
    assert info.size == len(payload)


def test_missing_objects(object_store: ObjectStore, tmp_path: Path) -> None:
    assert object_store.info("absent") is None
    with pytest.raises(NotFoundError, match="no object"):
        object_store.get_bytes("absent")
    with pytest.raises(NotFoundError):
        object_store.download("absent", tmp_path / "x")
    object_store.delete("absent")  # deleting nothing is not an error


def test_list_by_prefix_and_delete(object_store: ObjectStore) -> None:
    for key in ("p/a/1", "p/a/2", "p/b/1", "q/1"):
        object_store.put_bytes(key, key.encode())
    assert [i.key for i in object_store.list("p/a/")] == ["p/a/1", "p/a/2"]
    assert [i.key for i in object_store.list("p/")] == ["p/a/1", "p/a/2", "p/b/1"]
    object_store.delete("p/a/1")
    assert [i.key for i in object_store.list("p/")] == ["p/a/2", "p/b/1"]


@pytest.mark.parametrize("key", ["../escape", "a/../../b", "/absolute", "a//b", "", "a/./b", "a\\b", "a/\x00", "a b"])
def test_unsafe_keys_are_refused_before_any_io(object_store: ObjectStore, key: str) -> None:
    with pytest.raises(InputError):
        object_store.put_bytes(key, b"x")
    with pytest.raises(InputError):
        object_store.get_bytes(key)


def test_concurrent_writers_never_expose_a_partial_object(object_store: ObjectStore) -> None:
    versions = [bytes([n]) * 300_000 for n in range(4)]
    seen: list[bytes] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.append(object_store.get_bytes("shared"))
            except NotFoundError:
                continue

    thread = threading.Thread(target=reader)
    thread.start()
    for _ in range(3):
        for payload in versions:
            object_store.put_bytes("shared", payload)
    stop.set()
    thread.join()
    assert seen, "the reader never saw the object"
    assert all(data in versions for data in seen)


# ---- store-specific behaviour ----------------------------------------------------------------------------------


def test_local_store_leaves_no_temporary_files_after_a_failed_write(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    store.put_bytes("k", b"intact")
    missing = tmp_path / "does-not-exist"
    with pytest.raises(FileNotFoundError):
        store.put_file("k", missing)
    assert store.get_bytes("k") == b"intact"
    assert [p.name for p in (tmp_path / "objects").iterdir()] == ["k"]
    assert store.local_path("k") == (tmp_path / "objects" / "k").resolve()


def test_s3_records_versions_when_the_bucket_is_versioned(moto_server: s3_support.MotoServer) -> None:
    store = _s3_store(moto_server.endpoint_url, moto_server.access_key, moto_server.secret_key, versioned=True)
    first = store.put_bytes("k", b"1")
    second = store.put_bytes("k", b"2")
    assert store.versioning_enabled()
    assert first.version_id is not None
    assert second.version_id not in (None, first.version_id)
    assert store.local_path("k") is None
    assert first.uri == f"s3://{store.bucket}/tre/k"


def test_unreachable_s3_is_a_temporary_error() -> None:
    from tests.support.postgres import free_port

    location = S3Location(bucket="b", endpoint_url=f"http://127.0.0.1:{free_port()}", access_key="a", secret_key="s")
    with pytest.raises(TemporaryError, match="unreachable"):
        S3ObjectStore(location).get_bytes("k")


def test_missing_bucket_is_not_found(moto_server: s3_support.MotoServer) -> None:
    location = S3Location(
        bucket="no-such-bucket", endpoint_url=moto_server.endpoint_url, access_key="a", secret_key="s"
    )
    with pytest.raises((NotFoundError, PermissionDeniedError)):
        S3ObjectStore(location).put_bytes("k", b"x")


def test_open_object_store_from_url(tmp_path: Path) -> None:
    assert isinstance(open_object_store(f"file://{tmp_path}"), LocalObjectStore)
    assert isinstance(open_object_store(str(tmp_path)), LocalObjectStore)
    assert isinstance(open_object_store("s3://bucket/prefix", endpoint_url="http://127.0.0.1:1"), S3ObjectStore)
    with pytest.raises(InputError, match="neither file:// nor s3://"):
        open_object_store("ftp://host/x")
    with pytest.raises(InputError, match="names no bucket"):
        open_object_store("s3:///x")


def test_wrong_credentials_are_permission_denied_on_a_signature_checking_server(rgw: radosgw.RadosgwServer) -> None:
    store = _s3_store(rgw.endpoint_url, rgw.access_key, rgw.secret_key)
    store.put_bytes("k", b"kept")
    forged = S3Location(
        bucket=store.bucket, prefix="tre", endpoint_url=rgw.endpoint_url, access_key=rgw.access_key, secret_key="wrong"
    )
    with pytest.raises(PermissionDeniedError, match="SignatureDoesNotMatch") as error:
        S3ObjectStore(forged).put_bytes("k", b"overwritten")
    assert "wrong" not in str(error.value)
    assert store.get_bytes("k") == b"kept"


def test_versioned_bucket_on_radosgw_records_versions(rgw: radosgw.RadosgwServer) -> None:
    store = _s3_store(rgw.endpoint_url, rgw.access_key, rgw.secret_key, versioned=True)
    first, second = store.put_bytes("k", b"1"), store.put_bytes("k", b"2")
    assert first.version_id is not None
    assert second.version_id not in (None, first.version_id)
