"""Every error the TRE raises on purpose, and how each reaches a person.

Exception tree::

    TreError                      base; never raised itself
    ├── InputError                bad input: a malformed declaration, a bad option value     (exit 1, HTTP 422)
    │   └── SpecError             a declaration file that does not parse or validate          (exit 1, HTTP 422)
    ├── NotFoundError             an unknown user, dataset, project or token                   (exit 1, HTTP 404)
    ├── ConflictError             a duplicate name, or an action the current state refuses     (exit 1, HTTP 409)
    │   └── SandboxError          a workspace sandbox cannot be set up (tre.workspaces)         (exit 1, HTTP 409)
    ├── PermissionDeniedError     the actor may not do this (role, membership, independence)   (exit 1, HTTP 403)
    ├── AuthenticationError       no identity, or an unknown or revoked token                  (exit 1, HTTP 401)
    ├── IntegrityError            stored state failed a check: audit chain, newer schema       (exit 1, HTTP 500)
    └── TemporaryError            a dependency is down or busy; retrying later may succeed     (exit 1, HTTP 503)

Every message is one sentence that says what is wrong and, where it can, how to fix it.
The CLI prints it on one line to stderr; the HTTP API returns it as ``{"detail": message}``.
Nothing is changed when one of these is raised from a service call: the store rolls the
transaction back.
"""

from __future__ import annotations


class TreError(Exception):
    """Base class for errors the TRE raises deliberately."""

    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InputError(TreError):
    """The input is malformed or out of range."""

    http_status = 422


class SpecError(InputError):
    """A declaration (dataset, project) does not parse or validate."""


class NotFoundError(TreError):
    """A named thing does not exist."""

    http_status = 404


class ConflictError(TreError):
    """A duplicate, or an action the current state does not allow."""

    http_status = 409


class PermissionDeniedError(TreError):
    """The actor is known but may not do this."""

    http_status = 403


class AuthenticationError(TreError):
    """The caller could not be identified."""

    http_status = 401


class IntegrityError(TreError):
    """Stored state failed a consistency check."""

    http_status = 500


class TemporaryError(TreError):
    """A dependency is unavailable; the same call may succeed later."""

    http_status = 503

    def __init__(self, message: str, *, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2


def exit_code(error: TreError) -> int:
    """The CLI exit code for an error: every deliberate refusal is 1 (usage errors are 2, from the parser)."""
    del error
    return EXIT_REFUSED


def http_status(error: TreError) -> int:
    """The HTTP status code for an error."""
    return error.http_status
