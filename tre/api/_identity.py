"""Who is calling the API. Pluggable: TRE tokens here; JupyterHub tokens when the API runs as a hub service."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Protocol

from tre.errors import AuthenticationError, TemporaryError
from tre.services import TOKEN_PREFIX, Actor
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
        user = unit.users.for_token(bearer_token(authorization))  # checked on every call: revocation is immediate
        if user is None:
            raise AuthenticationError("the bearer token is not valid; ask an admin for one ('tre token create')")
        return Actor(name=user.name, user=user)


class HubIdentity:
    """JupyterHub tokens (the API runs as a hub service), with TRE tokens still accepted.

    A hub token is resolved by asking the hub who owns it (``GET /hub/api/user``); the hub user name must
    be a TRE user, whose roles then apply. Answers are cached for ``cache_seconds`` by token digest, so a
    busy notebook does not ask the hub on every call; a revoked hub token stops working within that time.
    """

    def __init__(
        self,
        hub_api_url: str,
        *,
        cache_seconds: float = 30.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._user_url = hub_api_url.rstrip("/") + "/user"
        self._cache_seconds = cache_seconds
        self._timeout = timeout
        self._clock = clock
        self._names: dict[str, tuple[float, str]] = {}
        self._tokens = TokenIdentity()

    def actor(self, unit: Unit, authorization: str | None) -> Actor:
        token = _any_token(authorization)
        if token.startswith(TOKEN_PREFIX):
            return self._tokens.actor(unit, f"Bearer {token}")
        name = self._hub_user_name(token)
        user = unit.users.get(name)
        if user is None:
            raise AuthenticationError(f"hub user {name} is not a TRE user; ask an admin to add them")
        return Actor(name=user.name, user=user)

    def _hub_user_name(self, token: str) -> str:
        digest = hashlib.sha256(token.encode()).hexdigest()
        cached = self._names.get(digest)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        name = self._ask_hub(token)
        self._names[digest] = (self._clock() + self._cache_seconds, name)
        return name

    def _ask_hub(self, token: str) -> str:
        request = urllib.request.Request(self._user_url, headers={"Authorization": f"token {token}"})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:  # noqa: S310 - configured hub URL
                body = json.load(response)
        except urllib.error.HTTPError as error:
            if error.code in (401, 403):
                raise AuthenticationError("the token is neither a TRE token nor a valid JupyterHub token") from None
            raise TemporaryError(f"JupyterHub answered {error.code} when asked who owns a token") from None
        except (OSError, ValueError):
            raise TemporaryError("JupyterHub did not answer when asked who owns a token; retry shortly") from None
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or body.get("kind", "user") != "user":
            raise AuthenticationError("the JupyterHub token does not belong to a user")
        return name


def _any_token(authorization: str | None) -> str:
    """The token from ``Bearer X`` or JupyterHub's ``token X``."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() not in ("bearer", "token") or not token.strip():
        raise AuthenticationError("send 'Authorization: Bearer <token>' with a TRE or JupyterHub token")
    return token.strip()
