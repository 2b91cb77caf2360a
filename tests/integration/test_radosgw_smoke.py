"""A real S3 server (Ceph radosgw): objects round-trip and a wrongly signed request is refused."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support import radosgw


def _object_lock_works(s3: Any, bucket: str) -> bool:
    """Whether a bucket with object lock takes a COMPLIANCE retention and then refuses to delete the version."""
    try:
        s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        until = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
        version = s3.put_object(
            Bucket=bucket, Key="locked", Body=b"x", ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until
        )["VersionId"]
    except ClientError:
        return False
    with pytest.raises(ClientError):
        s3.delete_object(Bucket=bucket, Key="locked", VersionId=version)
    return True


def test_radosgw_round_trip_checks_signatures(rgw: radosgw.RadosgwServer, request: pytest.FixtureRequest) -> None:
    s3 = rgw.client()
    s3.create_bucket(Bucket="smoke")
    s3.put_object(Bucket="smoke", Key="a/b.txt", Body=b"hello radosgw")
    assert s3.get_object(Bucket="smoke", Key="a/b.txt")["Body"].read() == b"hello radosgw"

    forged = rgw.client(secret_key=rgw.secret_key[::-1])
    with pytest.raises(ClientError) as refused:
        forged.get_object(Bucket="smoke", Key="a/b.txt")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
        forged.put_object(Bucket="smoke", Key="a/b.txt", Body=b"overwritten")
    assert s3.get_object(Bucket="smoke", Key="a/b.txt")["Body"].read() == b"hello radosgw"

    # Object lock is reported (junit user property), not required: not every radosgw build has it.
    request.node.user_properties.append(("object_lock", _object_lock_works(s3, "smoke-locked")))
