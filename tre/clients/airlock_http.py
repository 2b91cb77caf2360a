"""The airlock HTTP API seen from a workspace: a small client over the standard library.

Inside a workspace the airlock is reached only through the hub (``TRE_AIRLOCK_URL``, set by the spawner,
e.g. ``http://10.213.0.1:8000/services/airlock``) with the server's JupyterHub token. Errors come back as
the same :mod:`tre.errors` classes the API raised, with the API's one-line message.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from tre.errors import (
    AuthenticationError,
    ConflictError,
    InputError,
    NotFoundError,
    PermissionDeniedError,
    TemporaryError,
    TreError,
)

_ERRORS: dict[int, type[TreError]] = {
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: InputError,
    422: InputError,
}
API_PATH = "/api/v1/airlock"


class AirlockClient:
    """create / add / submit / list / show / vote / withdraw over HTTP, as the token's owner."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0) -> None:
        self._base = base_url.rstrip("/") + API_PATH
        self._token = token
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"AirlockClient({self._base!r})"

    def create(self, project: str, title: str, context: str = "", controls: str = "") -> dict[str, Any]:
        body = {"project": project, "title": title, "context": context, "controls": controls}
        return self._json("POST", "/requests", body)  # type: ignore[no-any-return]

    def add_file(self, request_id: str, name: str, kind: str, data: bytes) -> dict[str, Any]:
        path = f"/requests/{_q(request_id)}/files/{_q(name)}?kind={_q(kind)}"
        return self._call("PUT", path, data, "application/octet-stream")  # type: ignore[no-any-return]

    def submit(self, request_id: str) -> dict[str, Any]:
        return self._json("POST", f"/requests/{_q(request_id)}/submit")  # type: ignore[no-any-return]

    def withdraw(self, request_id: str) -> dict[str, Any]:
        return self._json("POST", f"/requests/{_q(request_id)}/withdraw")  # type: ignore[no-any-return]

    def list(self, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        return self._json("GET", f"/requests?limit={limit}&offset={offset}")  # type: ignore[no-any-return]

    def show(self, request_id: str) -> dict[str, Any]:
        return self._json("GET", f"/requests/{_q(request_id)}")  # type: ignore[no-any-return]

    def vote(
        self, request_id: str, file: str, vote: str, comment: str | None = None, share: bool = False
    ) -> dict[str, Any]:
        body = {"file": file, "vote": vote, "comment": comment, "share": share}
        return self._json("POST", f"/requests/{_q(request_id)}/votes", body)  # type: ignore[no-any-return]

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        return self._call(method, path, data, "application/json")

    def _call(self, method: str, path: str, data: bytes | None, content_type: str) -> Any:
        headers = {"Authorization": f"Bearer {self._token}", "Content-Type": content_type}
        request = urllib.request.Request(self._base + path, data=data, method=method, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:  # noqa: S310 - configured URL
                payload = response.read()
        except urllib.error.HTTPError as error:
            raise _error(error) from None
        except OSError as error:
            raise TemporaryError(f"the airlock at {self._base} did not answer ({error})") from None
        return json.loads(payload) if payload else None


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _error(error: urllib.error.HTTPError) -> TreError:
    try:
        detail = json.loads(error.read()).get("detail")
    except (ValueError, AttributeError):
        detail = None
    message = detail if isinstance(detail, str) else f"the airlock answered HTTP {error.code}"
    return _ERRORS.get(error.code, TemporaryError)(message)
