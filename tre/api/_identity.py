"""Who is calling the API. Pluggable: TRE tokens here; JupyterHub tokens when the API runs as a hub service."""

from __future__ import annotations

from typing import Protocol

from tre.errors import AuthenticationError
from tre.services import Actor, authenticate
from tre.store import Unit


class Identity(Protocol):
    def actor(self, unit: Unit, authorization: str | None) -> Actor: ...


def bearer_token(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("send 'Authorization: Bearer <token>' with a token from 'tre token create'")
    return token.strip()


class TokenIdentity:
    """API tokens created with ``tre token create`` (stored as SHA-256 digests)."""

    def actor(self, unit: Unit, authorization: str | None) -> Actor:
        try:
            return authenticate(unit, bearer_token(authorization))
        except AuthenticationError:
            raise AuthenticationError(
                "the bearer token is not valid; ask an admin for one ('tre token create')"
            ) from None
