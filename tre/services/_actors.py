"""Who is acting: a TRE user identified by a token, or the local operator at the console."""

from __future__ import annotations

from dataclasses import dataclass

from tre.errors import PermissionDeniedError
from tre.spec import Role, User


@dataclass(frozen=True)
class Actor:
    """The identity an action is recorded against.

    ``user`` is None for the local operator: someone with direct access to the store (the SQLite file or the
    database URL), who could change it anyway, and so is trusted as an administrator.
    """

    name: str
    user: User | None = None

    @classmethod
    def operator(cls, login: str) -> Actor:
        return cls(name=f"operator:{login}")

    @property
    def is_operator(self) -> bool:
        return self.user is None

    def has_role(self, role: Role) -> bool:
        return self.is_operator or (self.user is not None and self.user.has_role(role))

    def is_admin(self) -> bool:
        return self.has_role(Role.ADMIN)


def check_actor_is_admin(actor: Actor, action: str) -> None:
    if not actor.is_admin():
        raise PermissionDeniedError(f"user {actor.name} may not {action}: it needs the admin role")
