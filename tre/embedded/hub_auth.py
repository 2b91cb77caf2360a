"""JupyterHub's authenticator for the embedded TRE: the hub knows exactly the TRE's users.

A person logs in with their TRE user name and their TRE API token (``tre token create``) as the password;
the token is checked against the store (only its SHA-256 digest is kept there). Hub admins are the TRE's
admins. Users removed from the TRE, or whose token was revoked, cannot log in again.
"""

from __future__ import annotations

from typing import Any

from jupyterhub.auth import Authenticator  # type: ignore[import-untyped]
from traitlets import Unicode

from tre import services
from tre.errors import AuthenticationError
from tre.spec import Role
from tre.store import Store


class TreAuthenticator(Authenticator):  # type: ignore[misc]  # untyped base
    """Log in with a TRE user name and API token; hub admin = TRE admin role."""

    database_url = Unicode(help="SQLAlchemy URL of the TRE store (the SQLite file in TRE_HOME).").tag(config=True)

    def _store(self) -> Store:
        return Store(self.database_url)

    async def authenticate(self, handler: Any, data: dict[str, str]) -> dict[str, Any] | None:
        name = (data.get("username") or "").strip()
        token = (data.get("password") or "").strip()
        if not name or not token:
            return None
        store = self._store()
        try:
            with store.transaction(write=False) as unit:
                actor = services.authenticate(unit, token)
        except AuthenticationError:
            self.log.warning("login refused for %s: not a valid TRE token", name)
            return None
        finally:
            store.close()
        if actor.name != name:
            self.log.warning("login refused for %s: the token belongs to another user", name)
            return None
        return {"name": name, "admin": actor.has_role(Role.ADMIN)}

    async def check_allowed(self, username: str, authentication: dict[str, Any] | None = None) -> bool:
        store = self._store()
        try:
            with store.transaction(write=False) as unit:
                return unit.users.get(username) is not None
        finally:
            store.close()
