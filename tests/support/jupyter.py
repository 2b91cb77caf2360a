"""Drive a JupyterHub and a single-user server over their REST APIs, and run code in a real kernel."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import requests
import websocket


class Hub:
    """JupyterHub's REST API through its public URL, with one token."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base = base_url.rstrip("/")
        self.headers = {"Authorization": f"token {token}"}

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, f"{self.base}/hub/api{path}", headers=self.headers, timeout=60, **kwargs)

    def user_token(self, user: str) -> str:
        response = self.api("POST", f"/users/{user}/tokens", json={"note": "test", "expires_in": 3600})
        response.raise_for_status()
        return str(response.json()["token"])

    def ensure_user(self, user: str) -> None:
        if self.api("GET", f"/users/{user}").status_code == 404:
            self.api("POST", f"/users/{user}").raise_for_status()

    def start_server(self, user: str, options: dict[str, Any], timeout: float = 120.0) -> requests.Response:
        """Request a spawn and wait until the server is ready (or the spawn fails); returns the spawn answer."""
        response = self.api("POST", f"/users/{user}/server", json=options)
        if response.status_code >= 400:
            return response
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.api("GET", f"/users/{user}").json()
            server = (model.get("servers") or {}).get("")
            if server and server.get("ready"):
                return response
            if not model.get("pending") and not server:
                raise AssertionError(f"spawn of {user}'s server failed: {model}")
            time.sleep(0.5)
        raise AssertionError(f"{user}'s server was not ready after {timeout} s")

    def stop_server(self, user: str, timeout: float = 60.0) -> None:
        self.api("DELETE", f"/users/{user}/server")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not (self.api("GET", f"/users/{user}").json().get("servers") or {}):
                return
            time.sleep(0.5)
        raise AssertionError(f"{user}'s server did not stop")


def run_in_kernel(server_url: str, token: str, code: str, timeout: float = 120.0) -> str:
    """Run ``code`` in a new kernel on a single-user server; returns its stdout; raises with the traceback."""
    headers = {"Authorization": f"token {token}"}
    kernel = requests.post(f"{server_url}/api/kernels", headers=headers, json={}, timeout=60)
    kernel.raise_for_status()
    kernel_id = kernel.json()["id"]
    socket_url = server_url.replace("http://", "ws://", 1) + f"/api/kernels/{kernel_id}/channels"
    connection = websocket.create_connection(socket_url, header=[f"Authorization: token {token}"], timeout=timeout)
    try:
        return _execute(connection, code, timeout)
    finally:
        connection.close()
        requests.delete(f"{server_url}/api/kernels/{kernel_id}", headers=headers, timeout=60)


def _execute(connection: websocket.WebSocket, code: str, timeout: float) -> str:
    message_id = uuid.uuid4().hex
    request = {
        "header": {
            "msg_id": message_id,
            "msg_type": "execute_request",
            "username": "test",
            "session": "s",
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": {"code": code, "silent": False, "store_history": False, "allow_stdin": False},
        "channel": "shell",
    }
    connection.send(json.dumps(request))
    output: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = json.loads(connection.recv())
        if message.get("parent_header", {}).get("msg_id") != message_id:
            continue
        kind, content = message["msg_type"], message["content"]
        if kind == "stream":
            output.append(content["text"])
        elif kind == "error":
            raise AssertionError("kernel error:\n" + "\n".join(content["traceback"]))
        elif kind == "status" and content["execution_state"] == "idle":
            return "".join(output)
    raise AssertionError(f"the kernel did not finish within {timeout} s")
