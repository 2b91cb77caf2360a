"""The pure and local parts of ``tre up``: ports, secrets, hub config, hub-token identity, leftovers, demo files."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tre.api import HubIdentity
from tre.cli._up import _announce
from tre.clients.airlock_http import AirlockClient
from tre.embedded import Layout, Ports, UpOptions, run_up
from tre.embedded._hub import HubSettings, config_text
from tre.embedded._layout import check_ports_free, hub_secrets
from tre.embedded._pids import PROXY_PID_FILE, record, start_time, stop_leftovers
from tre.embedded._up import _endpoints, sandbox_host
from tre.errors import AuthenticationError, ConflictError, InputError, NotFoundError, TemporaryError
from tre.services import Actor, add_user, utcnow
from tre.spec import Role, User
from tre.store import Store, sqlite_url
from tre.workspaces.sandbox import SandboxMode

REPO = Path(__file__).resolve().parents[2]


def test_a_port_in_use_is_named_before_anything_starts() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(InputError, match=f"port {port} for OpenBao .* is in use"):
            check_ports_free(Ports(hub=1, airlock=2, vault=port, vault_cluster=3, hub_api=4, proxy_api=5))


def test_the_same_port_twice_is_refused() -> None:
    with pytest.raises(InputError, match="given for both"):
        check_ports_free(Ports(hub=40001, airlock=40001))


def test_hub_secrets_are_created_once_private_and_reused(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.create()
    first = hub_secrets(layout)
    assert layout.hub_secrets.stat().st_mode & 0o777 == 0o600
    assert hub_secrets(layout) == first
    assert len(set(first.values())) == len(first)


def test_hub_config_compiles_and_holds_no_secret(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.create()
    secrets = hub_secrets(layout)
    text = config_text(HubSettings(layout, Ports(), sqlite_url(tmp_path / "tre.db")))
    compile(text, "jupyterhub_config.py", "exec")
    assert not any(value in text for value in secrets.values())
    assert "tre.embedded.hub_auth.TreAuthenticator" in text
    assert '"name": "airlock"' in text


class _FakeHub(http.server.BaseHTTPRequestHandler):
    tokens: dict[str, dict[str, str]] = {}
    calls = 0

    def do_GET(self) -> None:
        type(self).calls += 1
        token = self.headers.get("Authorization", "").removeprefix("token ")
        model = self.tokens.get(token)
        body = json.dumps(model or {"status": 403}).encode()
        self.send_response(200 if model else 403)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_hub() -> Iterator[str]:
    _FakeHub.tokens = {"alice-hub": {"kind": "user", "name": "alice"}, "svc": {"kind": "service", "name": "x"}}
    _FakeHub.calls = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hub/api"
    server.shutdown()
    server.server_close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(sqlite_url(tmp_path / "tre.db"))
    store.migrate()
    with store.transaction() as unit:
        add_user(unit, Actor.operator("t"), User(name="alice", roles=frozenset({Role.RESEARCHER})), now=utcnow())
    yield store
    store.close()


def test_hub_tokens_name_tre_users_and_are_cached(fake_hub: str, store: Store) -> None:
    now = [0.0]
    identity = HubIdentity(fake_hub, cache_seconds=30, clock=lambda: now[0])
    with store.transaction(write=False) as unit:
        assert identity.actor(unit, "token alice-hub").name == "alice"
        assert identity.actor(unit, "Bearer alice-hub").name == "alice"
        assert _FakeHub.calls == 1
        now[0] = 31.0
        identity.actor(unit, "Bearer alice-hub")
        assert _FakeHub.calls == 2


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Bearer wrong", "neither a TRE token nor a valid JupyterHub token"),
        ("Bearer svc", "does not belong to a user"),
        ("Basic abc", "send 'Authorization: Bearer"),
        (None, "send 'Authorization: Bearer"),
    ],
)
def test_bad_hub_tokens_are_refused(fake_hub: str, store: Store, header: str | None, message: str) -> None:
    with store.transaction(write=False) as unit, pytest.raises(AuthenticationError, match=message):
        HubIdentity(fake_hub).actor(unit, header)


def test_a_hub_user_who_is_not_a_tre_user_is_refused(fake_hub: str, store: Store) -> None:
    _FakeHub.tokens["mallory-hub"] = {"kind": "user", "name": "mallory"}
    with store.transaction(write=False) as unit, pytest.raises(AuthenticationError, match="not a TRE user"):
        HubIdentity(fake_hub).actor(unit, "Bearer mallory-hub")


def test_an_unreachable_hub_is_a_temporary_error(store: Store) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with store.transaction(write=False) as unit, pytest.raises(TemporaryError):
        HubIdentity(f"http://127.0.0.1:{port}/hub/api", timeout=1).actor(unit, "Bearer x")


class _FakeAirlock(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        status, detail = {"/api/v1/airlock/requests": (409, "request ar-1 is already submitted")}.get(
            self.path, (404, "no request ar-x")
        )
        body = json.dumps({"detail": detail}).encode()
        self.send_response(status)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_the_workspace_client_turns_api_errors_back_into_ours() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeAirlock)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = AirlockClient(f"http://127.0.0.1:{server.server_address[1]}", "t")
        with pytest.raises(ConflictError, match="already submitted"):
            client.create("p", "t")
        with pytest.raises(NotFoundError, match="no request ar-x"):
            client.submit("ar-x")
    finally:
        server.shutdown()
        server.server_close()


def test_leftovers_are_stopped_only_if_pid_and_start_time_match(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.create()
    survivor = subprocess.Popen(["sleep", "60"], start_new_session=True)
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        record(layout, {"survivor": survivor.pid, "bystander": bystander.pid})
        entries = json.loads(layout.pids.read_text())
        entries["bystander"]["start"] = str(int(entries["bystander"]["start"]) + 1)  # a recycled pid
        layout.pids.write_text(json.dumps(entries))
        assert stop_leftovers(layout, grace=2) == ["survivor"]
        assert survivor.wait(timeout=10) is not None
        assert bystander.poll() is None
        assert start_time(bystander.pid) is not None
    finally:
        bystander.kill()
        bystander.wait()
        survivor.kill()
        survivor.wait()


def test_a_killed_hubs_proxy_is_stopped_only_if_it_is_that_proxy(tmp_path: Path) -> None:
    """The proxy named by the hub's pid file, running in the hub's directory, is stopped; the same pid file naming
    another program, or a proxy elsewhere, is left alone."""
    layout = Layout(tmp_path / "home")
    layout.create()
    proxy = [sys.executable, "-c", "import time; time.sleep(60)", "configurable-http-proxy"]
    pid_file = layout.hub / PROXY_PID_FILE
    started = []
    try:
        for argv, cwd in ((["sleep", "60"], layout.hub), (proxy, tmp_path), (proxy, layout.hub)):
            started.append(subprocess.Popen(argv, cwd=cwd, start_new_session=True))
        for bystander in started[:2]:
            pid_file.write_text(str(bystander.pid))
            assert stop_leftovers(layout, grace=2) == []
            assert bystander.poll() is None
        pid_file.write_text(str(started[2].pid))
        assert stop_leftovers(layout, grace=2) == ["JupyterHub's proxy"]
        assert started[2].wait(timeout=10) is not None
    finally:
        for process in started:
            process.kill()
            process.wait()


def test_a_second_up_on_one_home_is_refused(tmp_path: Path) -> None:
    from tre.embedded._pids import exclusive

    layout = Layout(tmp_path)
    with exclusive(layout), pytest.raises(ConflictError, match="another 'tre up' is running"), exclusive(layout):
        pass


@pytest.mark.parametrize("name", ["hospital-episodes.dataset.yaml", "diabetes-outcomes.project.yaml"])
def test_the_packaged_demo_declarations_are_the_examples(name: str) -> None:
    packaged = (REPO / "tre" / "embedded" / "demo" / name).read_text()
    assert packaged == (REPO / "examples" / name).read_text(), f"copy examples/{name} to tre/embedded/demo/"


def test_a_server_that_dies_while_starting_is_named_with_its_log(tmp_path: Path) -> None:
    from tre.embedded._process import Child

    child = Child("OpenBao", ["sh", "-c", "echo 'storage: permission denied' >&2; exit 3"], tmp_path / "bao.log")
    child.start()
    with pytest.raises(TemporaryError, match=f"OpenBao exited while starting; see {tmp_path / 'bao.log'}"):
        child.wait_ready(lambda: False, timeout=30)
    assert "permission denied" in (tmp_path / "bao.log").read_text()


def test_a_server_that_never_answers_is_stopped_after_its_timeout(tmp_path: Path) -> None:
    from tre.embedded._process import Child

    child = Child("JupyterHub", ["sleep", "60"], tmp_path / "hub.log")
    child.start()
    try:
        with pytest.raises(TemporaryError, match="JupyterHub was not ready after 1 s"):
            child.wait_ready(lambda: False, timeout=1)
    finally:
        child.stop(grace=2)
    assert not child.running()


def test_a_missing_command_is_named_with_the_setup_to_run() -> None:
    from tre.embedded._process import installed_command

    with pytest.raises(InputError, match="'no-such-tre-command' command is not installed: run the README's setup"):
        installed_command("no-such-tre-command")


def test_the_sandbox_mode_sets_where_the_hub_listens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = Layout(tmp_path)
    rootless = sandbox_host(UpOptions(home=tmp_path, sandbox_mode="rootless"), layout)
    assert (rootless.mode, str(rootless.hub_address)) == (SandboxMode.ROOTLESS, "127.0.0.1")
    assert rootless.state_dir == tmp_path / "workspaces" / "sandbox"
    root = sandbox_host(UpOptions(home=tmp_path, sandbox_mode="root", sandbox_pool="10.77.0.0/24"), layout)
    assert (root.mode, str(root.hub_address)) == (SandboxMode.ROOT, "10.77.0.254")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert sandbox_host(UpOptions(home=tmp_path), layout).mode is SandboxMode.ROOTLESS
    with pytest.raises(InputError, match="sandbox mode 'chroot'"):
        sandbox_host(UpOptions(home=tmp_path, sandbox_mode="chroot"), layout)


def test_the_endpoints_and_the_announcement_name_the_sandbox_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    host = sandbox_host(UpOptions(home=tmp_path, sandbox_mode="rootless"), Layout(tmp_path))
    endpoints = _endpoints(UpOptions(home=tmp_path), "http://127.0.0.1:8200", [], host)
    assert endpoints["sandboxMode"] == "rootless"
    assert endpoints["hubApi"] == "http://127.0.0.1:8081/hub/api"
    _announce(endpoints)
    assert "Workspaces:  sandboxed, rootless mode" in capsys.readouterr().out


def test_a_sandbox_mode_this_user_cannot_have_is_refused_before_anything_starts(tmp_path: Path) -> None:
    """As root the rootless mode, otherwise the root mode: one sentence, and nothing started or left."""
    impossible = "rootless" if os.geteuid() == 0 else "root"
    options = UpOptions(home=tmp_path / "home", sandbox_mode=impossible)
    ready: list[dict[str, object]] = []
    with pytest.raises(ConflictError, match=r"^cannot start a sandboxed workspace: the root(less)? .*mode"):
        run_up(options, threading.Event(), ready.append)
    assert ready == []
    assert not (tmp_path / "home" / "run" / "pids.json").exists()
    assert not (tmp_path / "home" / "openbao" / "config.hcl").exists()
