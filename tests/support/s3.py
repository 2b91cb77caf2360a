"""S3 servers for tests: moto on loopback (fast, no signature checks)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from tests.support.postgres import free_port

MOTO_KEY = "moto-access"
MOTO_SECRET = "moto-secret"


@dataclass
class MotoServer:
    server: ThreadedMotoServer
    endpoint_url: str
    access_key: str = MOTO_KEY
    secret_key: str = MOTO_SECRET

    def stop(self) -> None:
        self.server.stop()


def start_moto() -> MotoServer:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return MotoServer(server, f"http://127.0.0.1:{port}")


def s3_client(endpoint_url: str, access_key: str, secret_key: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
    )
