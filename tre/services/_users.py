"""Users and their API tokens."""

from __future__ import annotations

import datetime as dt
import secrets

from tre.errors import AuthenticationError, ConflictError, NotFoundError
from tre.services._actors import Actor, check_actor_is_admin
from tre.services._clock import timestamp
from tre.spec import Accreditation, User
from tre.store import Unit

TOKEN_PREFIX = "tre_"  # noqa: S105 - a prefix, not a token


def add_user(unit: Unit, actor: Actor, user: User, *, now: dt.datetime) -> None:
    check_actor_is_admin(actor, "add users")
    if unit.users.get(user.name) is not None:
        raise ConflictError(f"user {user.name} already exists; choose another name")
    unit.users.add(user, now=timestamp(now))
    details = {"roles": sorted(user.roles), "accreditations": _accreditations(user)}
    unit.audit.append(at=timestamp(now), actor=actor.name, action="user.added", target=user.name, details=details)


def accredit_user(unit: Unit, actor: Actor, name: str, accreditation: Accreditation, *, now: dt.datetime) -> User:
    """Add or renew one accreditation of a user."""
    check_actor_is_admin(actor, "record accreditations")
    user = get_user(unit, name)
    kept = tuple(a for a in user.accreditations if a.name != accreditation.name)
    updated = user.model_copy(update={"accreditations": (*kept, accreditation)})
    unit.users.update(updated, now=timestamp(now))
    details = {"accreditation": accreditation.name, "expires": accreditation.expires.isoformat()}
    unit.audit.append(at=timestamp(now), actor=actor.name, action="user.accredited", target=name, details=details)
    return updated


def get_user(unit: Unit, name: str) -> User:
    user = unit.users.get(name)
    if user is None:
        raise NotFoundError(f"no user called {name}; add one with 'tre user add'")
    return user


def create_token(unit: Unit, actor: Actor, user_name: str, *, now: dt.datetime) -> str:
    """A new API token for the user. Only its digest is stored: the token is shown once."""
    check_actor_is_admin(actor, "create tokens")
    get_user(unit, user_name)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = unit.tokens.add(user_name, token, now=timestamp(now))
    unit.audit.append(
        at=timestamp(now),
        actor=actor.name,
        action="token.created",
        target=user_name,
        details={"token_id": token_id},
    )
    return token


def authenticate(unit: Unit, token: str) -> Actor:
    """The actor a token stands for; AuthenticationError for an unknown or revoked token."""
    user_name = unit.tokens.user_for(token)
    user = unit.users.get(user_name) if user_name else None
    if user is None:
        raise AuthenticationError("the token in TRE_TOKEN is not valid; ask an admin for one ('tre token create')")
    return Actor(name=user.name, user=user)


def _accreditations(user: User) -> list[dict[str, str]]:
    return [{"name": a.name, "expires": a.expires.isoformat()} for a in user.accreditations]
