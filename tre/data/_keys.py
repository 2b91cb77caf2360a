"""Pseudonymisation keys: where they come from, and the keyed pseudonym itself."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Protocol

PSEUDONYM_HEX_CHARS = 32  # 128 bits of HMAC-SHA256: collisions are negligible for any population


@dataclass(frozen=True)
class PseudonymKey:
    """A project's secret key (32 bytes) and its version. Never printed, logged or stored outside Vault."""

    version: int
    key: bytes = field(repr=False)

    def __str__(self) -> str:
        return f"PseudonymKey(version={self.version})"


class KeyProvider(Protocol):
    """Gives the pipeline a project's pseudonymisation key (in memory only)."""

    def pseudonymisation_key(self, project: str, version: int | None = None) -> PseudonymKey: ...


def pseudonym(key: bytes, value: str) -> str:
    """The reference keyed pseudonym: the first 32 hex characters of HMAC-SHA256(key, value)."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX_CHARS]


def hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """The inner and outer padded keys of HMAC-SHA256, so an engine with only SHA-256 can compute it."""
    block = (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
    return bytes(b ^ 0x36 for b in block), bytes(b ^ 0x5C for b in block)
