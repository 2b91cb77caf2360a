"""Fixtures shared by the integration tests that talk to the session's OpenBao server."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import hvac  # type: ignore[import-untyped]
import pytest

from tests.support import openbao
from tre.clients.vault import VaultClient


@pytest.fixture
def vault(bao: openbao.OpenBaoServer) -> Iterator[VaultClient]:
    with VaultClient(bao.url, bao.root_token) as client:
        yield client


@pytest.fixture
def root(bao: openbao.OpenBaoServer) -> Iterator[Any]:
    """A raw hvac client with the root token, to look behind the adapter."""
    client = hvac.Client(url=bao.url, token=bao.root_token)
    yield client
    client.adapter.close()


def unique(prefix: str) -> str:
    """A project name no other test uses: the server is shared by the whole session."""
    return f"{prefix}-{secrets.token_hex(4)}"
