"""SandboxSpawner in a real JupyterHub (PyPI configurable-http-proxy, loopback ports, a temporary directory).

The TRE home is prepared through the ``tre`` CLI: users, a dataset, an approved and provisioned project, and a
provisioned project whose approval has since expired. Spawns go through the hub's REST API, and the workspace is
reached through the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect
from typer.testing import CliRunner

from tests.conftest import EXAMPLES
from tests.support import openbao
from tests.support.netns import require_sandbox_support, unique_sandbox_host
from tests.support.postgres import free_port
from tre.cli import _context, app
from tre.data import write_demo_data
from tre.workspaces._host import SandboxHost, SlotLink
from tre.workspaces._slots import SlotRegistry
from tre.workspaces.sandbox import prepare_host, teardown_host

PROJECT = "diabetes-outcomes"
EXPIRED = "old-study"
TOKEN = "sandbox-spawner-test-token-0123456789"
READY_TIMEOUT = 90.0
VENV_BIN = Path(sys.executable).parent

BASE_HUB_CONFIG = """
c = get_config()  # noqa: F821
c.JupyterHub.spawner_class = "tre.workspaces.local_spawner.SandboxSpawner"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.bind_url = "http://127.0.0.1:{proxy_port}"
c.JupyterHub.hub_bind_url = "http://{hub_address}:{hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.command = ["{venv_bin}/configurable-http-proxy"]
c.JupyterHub.db_url = "sqlite:///{work}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{work}/cookie_secret"
c.JupyterHub.services = [{{"name": "tester", "api_token": "{token}"}}]
c.JupyterHub.load_roles = [
    {{"name": "tester", "scopes": ["admin:users", "admin:servers", "access:servers"], "services": ["tester"]}}
]
c.Spawner.poll_interval = 1
c.Spawner.start_timeout = 90
c.Spawner.http_timeout = 90
c.SandboxSpawner.sandbox_state_dir = "{state_dir}"
c.SandboxSpawner.stop_grace = 5
"""
ROOT_HUB_CONFIG = (
    BASE_HUB_CONFIG
    + """c.SandboxSpawner.sandbox_pool = "{pool}"
c.SandboxSpawner.sandbox_table = "{table}"
c.SandboxSpawner.sandbox_prefix = "{prefix}"
c.SandboxSpawner.gate_check_interval = 1
"""
)


@dataclass
class Hub:
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    host: SandboxHost
    home: Path

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)  # noqa: S310 - loopback
        request.add_header("Authorization", f"token {TOKEN}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - loopback
                text = response.read().decode()
                return int(response.status), json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            text = exc.read().decode()
            return exc.code, json.loads(text) if text.startswith("{") else text

    def server(self, user: str) -> dict[str, Any] | None:
        status, info = self.call("GET", f"/hub/api/users/{user}")
        assert status == 200, info
        server: dict[str, Any] | None = info["servers"].get("")
        return server

    def spawn(self, user: str, options: dict[str, Any] | None = None) -> tuple[int, Any]:
        self.call("POST", f"/hub/api/users/{user}")  # 201, or 409 if the user exists
        return self.call("POST", f"/hub/api/users/{user}/server", options if options is not None else {})

    def wait_ready(self, user: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            server = self.server(user)
            if server and server["ready"]:
                return
            time.sleep(0.2)
        raise AssertionError(f"{user}'s server did not become ready:\n{self.log.read_text()[-3000:]}")

    def wait_stopped(self, user: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.server(user) is not None:
            assert time.monotonic() < deadline, f"{user}'s server did not stop:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.2)

    def link_of(self, sandbox_id: str) -> SlotLink:
        slot = SlotRegistry(self.host.state_dir, self.host.capacity).find(sandbox_id)
        assert slot is not None, f"no slot was allocated to {sandbox_id}"
        return self.host.link(slot)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _cli(home: Path, bao: openbao.OpenBaoServer, moment: dt.datetime, *args: str) -> str:
    token_file = home.parent / "vault-token"
    token_file.write_text(bao.root_token)
    token_file.chmod(0o600)
    env = {"TRE_HOME": str(home), "TRE_VAULT_ADDR": bao.url, "TRE_VAULT_TOKEN_FILE": str(token_file)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_context, "clock", lambda: moment)
        patch.delenv("TRE_TOKEN", raising=False)
        result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, (args, result.stdout, result.stderr)
    return result.stdout


def _project_file(work: Path, name: str, members: list[str]) -> Path:
    document = yaml.safe_load((EXAMPLES / "diabetes-outcomes.project.yaml").read_text())
    document["metadata"]["name"] = name
    document["spec"]["members"] = members
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _prepare_tre_home(work: Path, bao: openbao.OpenBaoServer) -> Path:
    """Users, a dataset, PROJECT approved and provisioned now, EXPIRED approved and provisioned before it lapsed."""
    home = work / "tre-home"
    now = dt.datetime.now(dt.UTC)
    past, later = now - dt.timedelta(days=60), (now + dt.timedelta(days=365)).date().isoformat()
    files = write_demo_data(work / "data", rows=2000, seed=7)
    dataset = yaml.safe_load((EXAMPLES / "hospital-episodes.dataset.yaml").read_text())
    dataset["spec"]["location"] = str(files.episodes)
    (work / "dataset.yaml").write_text(yaml.safe_dump(dataset))
    for user in ("alice", "bob", "erin", "mallory"):
        _cli(home, bao, past, "user", "add", user, "--role", "researcher", "-a", f"safe-researcher:{later}")
    _cli(home, bao, past, "user", "add", "carol", "--role", "approver")
    _cli(home, bao, past, "dataset", "register", "-f", str(work / "dataset.yaml"))
    _cli(home, bao, past, "optout", "import", str(files.optouts))
    _cli(home, bao, past, "project", "apply", "-f", str(_project_file(work, EXPIRED, ["erin"])))
    lapsed = (now - dt.timedelta(days=2)).date().isoformat()
    approve = ("--by", "carol", "--reference", "R", "--agreement", "A")
    _cli(home, bao, past, "project", "approve", EXPIRED, *approve, "--expires", lapsed)
    _cli(home, bao, past + dt.timedelta(days=10), "provision", EXPIRED)
    _cli(home, bao, now, "project", "apply", "-f", str(_project_file(work, PROJECT, ["bob", "erin"])))
    _cli(home, bao, now, "project", "approve", PROJECT, *approve, "--expires", later)
    _cli(home, bao, now, "provision", PROJECT)
    return home


def _free_port_on(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def _wait_for_hub(hub: Hub) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert hub.process.poll() is None, hub.log.read_text()[-3000:]
        with contextlib.suppress(OSError):
            if hub.call("GET", "/hub/api/")[0] == 200:
                return
        time.sleep(0.2)
    raise AssertionError(f"the hub did not start:\n{hub.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, bao: openbao.OpenBaoServer) -> Iterator[Hub]:
    require_sandbox_support()
    work = tmp_path_factory.mktemp("spawner")
    home = _prepare_tre_home(work, bao)
    host = unique_sandbox_host(work / "sandbox-state")
    with contextlib.ExitStack() as stack:
        stack.callback(teardown_host, host, forget=True)
        prepare_host(host)
        ports = {"proxy_port": free_port(), "proxy_api_port": free_port()}
        config = ROOT_HUB_CONFIG.format(
            **ports, hub_address=host.hub_address, hub_port=_free_port_on(str(host.hub_address)),
            venv_bin=VENV_BIN, work=work, token=TOKEN, pool=host.pool, table=host.table, prefix=host.prefix,
            state_dir=host.state_dir,
        )  # fmt: skip
        (work / "jupyterhub_config.py").write_text(config)
        env = {**os.environ, "TRE_HOME": str(home), "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
        env.pop("TRE_TOKEN", None)
        log = work / "hub.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [str(VENV_BIN / "jupyterhub"), "-f", str(work / "jupyterhub_config.py")],
                cwd=work, env=env, stdout=output, stderr=subprocess.STDOUT,
            )  # fmt: skip
        running = Hub(process, f"http://127.0.0.1:{ports['proxy_port']}", log, host, home)
        stack.callback(running.stop)
        _wait_for_hub(running)
        yield running


def _leftovers(hub: Hub, link: SlotLink) -> list[str]:
    found = [f"namespace {link.name}"] if link.netns_path.exists() else []
    found += [f"veth {link.name}"] if Path("/sys/class/net", link.name).exists() else []
    listing = subprocess.run(["nft", "list", "set", "inet", hub.host.table, "allowed"], capture_output=True, text=True)
    found += ["firewall allowance"] if link.name in listing.stdout else []
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError, IndexError):
            if status.read_text().split("Uid:\t")[1].split("\t")[0] == str(link.uid):
                found.append(f"process {status.parent.name}")
    return found


def _audit(hub: Hub) -> list[dict[str, Any]]:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("TRE_TOKEN", raising=False)
        result = CliRunner().invoke(app, ["audit", "export"], env={"TRE_HOME": str(hub.home)})
    return [json.loads(line) for line in result.stdout.splitlines()]


async def _execute(hub: Hub, user: str, kernel: str, code: str) -> str:
    """Run ``code`` in a kernel over its websocket, through the proxy; its standard output."""
    url = f"{hub.url.replace('http', 'ws', 1)}/user/{user}/api/kernels/{kernel}/channels"
    request = HTTPRequest(url, headers={"Authorization": f"token {TOKEN}"})
    connection = await websocket_connect(request)
    msg_id, session = uuid.uuid4().hex, uuid.uuid4().hex
    header = {"msg_id": msg_id, "session": session, "username": "test", "msg_type": "execute_request", "version": "5.3"}
    content = {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False}
    message = {"header": header, "parent_header": {}, "metadata": {}, "content": content, "channel": "shell"}
    await connection.write_message(json.dumps(message))
    output = []
    try:
        while True:
            raw = await asyncio.wait_for(connection.read_message(), READY_TIMEOUT)
            assert raw is not None, "the kernel's websocket closed"
            reply = json.loads(raw)
            if reply.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            assert reply["msg_type"] != "error", reply["content"]
            if reply["msg_type"] == "stream":
                output.append(reply["content"]["text"])
            if reply["msg_type"] == "status" and reply["content"]["execution_state"] == "idle":
                return "".join(output)
    finally:
        connection.close()


def _run_in_kernel(hub: Hub, user: str, code: str) -> str:
    status, kernel = hub.call("POST", f"/user/{user}/api/kernels", {"name": "python3"})
    assert status == 201, kernel
    return asyncio.run(_execute(hub, user, kernel["id"], code))


KERNEL_CODE = """
import json, os
print(json.dumps({"uid": os.getuid(), "data": sorted(os.listdir("/data")), "cwd": os.getcwd()}))
"""


def test_a_user_in_several_projects_must_choose_one(hub: Hub) -> None:
    status, body = hub.spawn("erin")
    assert status == 403, body
    assert body["message"] == f"erin belongs to several projects ({PROJECT}, {EXPIRED}): choose one"


def test_a_member_gets_the_projects_data_in_a_sandbox_and_nothing_is_left_after_stop(hub: Hub) -> None:
    status, body = hub.spawn("alice", {"project": PROJECT})
    assert status in {201, 202}, body
    hub.wait_ready("alice")
    link = hub.link_of(f"{PROJECT}.alice")
    status, listing = hub.call("GET", "/user/alice/api/contents/data")
    assert status == 200, listing
    assert {entry["name"] for entry in listing["content"]} == {"hospital-episodes.parquet", "manifest.json"}
    assert all(not entry["writable"] for entry in listing["content"])
    status, manifest = hub.call("GET", "/user/alice/api/contents/data/manifest.json?content=1&format=text")
    assert status == 200
    assert json.loads(manifest["content"])["project"] == PROJECT
    assert _leftovers(hub, link)  # the server runs as the sandbox's uid, in its namespace
    seen = json.loads(_run_in_kernel(hub, "alice", KERNEL_CODE))
    assert seen == {"uid": link.uid, "data": ["hospital-episodes.parquet", "manifest.json"], "cwd": "/home/alice"}

    status, _ = hub.call("DELETE", "/hub/api/users/alice/server")
    assert status in {202, 204}
    hub.wait_stopped("alice")
    assert _leftovers(hub, link) == []
    actions = [(e["action"], e["actor"], e["project"]) for e in _audit(hub)]
    assert ("workspace.started", "alice", PROJECT) in actions
    assert ("workspace.stopped", "alice", PROJECT) in actions


def test_a_non_member_is_refused_with_the_reason(hub: Hub) -> None:
    status, body = hub.spawn("mallory", {"project": PROJECT})
    assert status == 403, body
    assert body["message"] == (
        f"mallory is not a member of a project called {PROJECT}; ask the project's lead to add them"
    )
    assert SlotRegistry(hub.host.state_dir, hub.host.capacity).find(f"{PROJECT}.mallory") is None


def test_an_expired_project_is_refused(hub: Hub) -> None:
    status, body = hub.spawn("alice", {"project": EXPIRED})
    assert status == 403, body
    assert body["message"].startswith(f"project {EXPIRED} may not have data now: approval R expired on ")
    assert hub.server("alice") is None


def test_unknown_options_are_refused(hub: Hub) -> None:
    status, body = hub.spawn("bob", {"project": PROJECT, "image": "anything"})
    assert status == 400, body
    assert hub.server("bob") is None


def test_suspending_a_project_stops_its_running_workspace(hub: Hub, bao: openbao.OpenBaoServer) -> None:
    status, body = hub.spawn("bob", {"project": PROJECT})
    assert status in {201, 202}, body
    hub.wait_ready("bob")
    link = hub.link_of(f"{PROJECT}.bob")
    document = yaml.safe_load((hub.home.parent / f"{PROJECT}.yaml").read_text())
    document["spec"]["suspended"] = True
    suspended = hub.home.parent / "suspended.yaml"
    suspended.write_text(yaml.safe_dump(document))
    _cli(hub.home, bao, dt.datetime.now(dt.UTC), "project", "apply", "-f", str(suspended))
    hub.wait_stopped("bob")  # the default 60 s: the gate checks every second, but a loaded CI machine is slow
    assert _leftovers(hub, link) == []
    stops = [e for e in _audit(hub) if e["action"] == "workspace.stopped" and e["actor"] == "bob"]
    assert "suspended" in stops[-1]["details"]["reason"]
