"""What every command needs: settings, an open and migrated store, the acting identity, the clock."""

from __future__ import annotations

import datetime as dt
import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import ValidationError

from tre.config import Settings
from tre.errors import InputError
from tre.services import Actor, Clock, authenticate, utcnow
from tre.spec import describe_validation_error
from tre.store import Store, Unit

TOKEN_VARIABLE = "TRE_TOKEN"  # noqa: S105 - the variable name, not a token

clock: Clock = utcnow


def now() -> dt.datetime:
    return clock()


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise InputError(f"configuration: {describe_validation_error(exc)}") from exc


@contextmanager
def open_store() -> Iterator[Store]:
    """The store named by the settings, created and migrated if needed (its directory private to this user)."""
    settings = load_settings()
    if settings.database_url is None:
        settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = Store(settings.store_url)
    try:
        store.migrate()
        yield store
    finally:
        store.close()


def current_actor(unit: Unit) -> Actor:
    """The user named by ``TRE_TOKEN``, or the local operator when it is unset."""
    token = os.environ.get(TOKEN_VARIABLE)
    if token:
        return authenticate(unit, token)
    return Actor.operator(getpass.getuser())


@contextmanager
def transaction(*, write: bool = True) -> Iterator[tuple[Unit, Actor]]:
    with open_store() as store, store.transaction(write=write) as unit:
        yield unit, current_actor(unit)
