"""``tre up --demo`` end to end: the real CLI starts OpenBao, the airlock API, JupyterHub with sandboxed
workspaces and the controller; the README's walk-through runs through the hub's API and a real kernel.

Twice: as root (the root sandbox mode: network namespaces), and as an unprivileged uid (the rootless mode:
bubblewrap with user namespaces and Unix sockets), which is how ``make demo`` runs without root. With
TRE_TEST_REQUIRE_SANDBOX=1 (CI) a missing capability fails instead of skipping.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.jupyter import Hub, run_in_kernel
from tests.support.rootless import (
    become_unprivileged,
    private_directory,
    processes_mentioning,
    require_rootless_support,
    unprivileged_uid,
)
from tre.embedded._pids import start_time

VENV_BIN = Path(sys.executable).parent
REQUIRE_SANDBOX = os.environ.get("TRE_TEST_REQUIRE_SANDBOX") == "1"
START_TIMEOUT = 240.0


def _sandbox_possible() -> str | None:
    if os.geteuid() != 0:
        return "tre up's workspaces need root for network namespaces here"
    if subprocess.run(["ip", "netns", "list"], capture_output=True, check=False).returncode != 0:
        return "ip netns is not available"
    return None


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@dataclass
class Running:
    home: Path
    ports: dict[str, int]
    process: subprocess.Popen[str]
    endpoints: dict[str, Any]

    @property
    def hub_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['hub']}"

    def token(self, user: str) -> str:
        return next(u["token"] for u in self.endpoints["demoUsers"] if u["name"] == user)

    def controller_hub(self) -> Hub:
        secrets = json.loads((self.home / "hub" / "secrets.json").read_text())
        return Hub(self.hub_url, secrets["controller_service_token"])


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRE_")}
    env.update(TRE_HOME=str(home), PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}")
    return env


SANDBOX_POOL = f"10.215.{secrets.randbelow(200) + 16}.0/24"  # never a real TRE's pool, nor the sandbox tests'


def _argv(ports: dict[str, int], *extra: str) -> list[str]:
    options = [f"--{name.replace('_', '-')}-port={port}" for name, port in ports.items()]
    return [str(VENV_BIN / "tre"), "up", "--controller-interval=2", f"--sandbox-pool={SANDBOX_POOL}", *options, *extra]


def start(
    home: Path, ports: dict[str, int], *extra: str, preexec: Callable[[], None] | None = None, **env: str
) -> Running:
    (home / "run" / "endpoints.json").unlink(missing_ok=True)
    with (home.parent / f"{home.name}-up.log").open("a") as log:
        process = subprocess.Popen(
            _argv(ports, *extra), env=_env(home) | env, stdout=log, stderr=subprocess.STDOUT, text=True,
            preexec_fn=preexec,
        )  # fmt: skip
    endpoints_file = home / "run" / "endpoints.json"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"tre up exited with {process.returncode}: {_tail(home)}")
        if endpoints_file.exists():
            return Running(home, ports, process, json.loads(endpoints_file.read_text()))
        time.sleep(0.5)
    process.kill()
    raise AssertionError(f"tre up was not ready in {START_TIMEOUT} s: {_tail(home)}")


def _tail(home: Path) -> str:
    log = home.parent / f"{home.name}-up.log"
    return log.read_text()[-3000:] if log.exists() else ""


def stop(running: Running, signum: int = signal.SIGTERM) -> int:
    running.process.send_signal(signum)
    return running.process.wait(timeout=90)


def processes_under(home: Path) -> list[str]:
    """Command lines of live processes that mention this TRE home (servers started for it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if str(home) in cmdline or f"TRE_HOME={home}".encode() in environ:
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


def wait_until(done: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def wait_until_gone(home: Path, timeout: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout
    left = processes_under(home)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = processes_under(home)
    return left


@pytest.fixture(scope="module")
def tre_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    reason = _sandbox_possible()
    if reason:
        if REQUIRE_SANDBOX:
            pytest.fail(f"TRE_TEST_REQUIRE_SANDBOX=1 but {reason}")
        pytest.skip(reason)
    home = tmp_path_factory.mktemp("up") / "home"
    names = ["hub", "airlock", "vault", "vault_cluster", "hub_api", "proxy_api"]
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    running = start(home, ports, "--demo")
    yield running  # the restart tests swap in the new process; the finaliser stops whichever runs last
    if running.process.poll() is None:
        stop(running)
    assert wait_until_gone(home) == []


def test_endpoints_name_every_service_and_secrets_are_private(tre_up: Running) -> None:
    endpoints = tre_up.endpoints
    assert endpoints["hub"].startswith(tre_up.hub_url)
    assert {u["name"] for u in endpoints["demoUsers"]} == {"alice", "bob", "olive", "oscar", "carol", "admin"}
    for secret in ("run/endpoints.json", "openbao/init.json", "openbao/root-token", "hub/secrets.json"):
        assert (tre_up.home / secret).stat().st_mode & 0o077 == 0, secret
    assert requests.get(f"{tre_up.hub_url}/hub/health", timeout=10).status_code == 200


def test_people_log_in_to_the_hub_with_their_tre_token(tre_up: Running) -> None:
    session = requests.Session()
    session.get(f"{tre_up.hub_url}/hub/login", timeout=30)
    form = {"username": "alice", "_xsrf": session.cookies.get("_xsrf")}
    wrong = session.post(
        f"{tre_up.hub_url}/hub/login", data=form | {"password": tre_up.token("bob")}, allow_redirects=False, timeout=30
    )
    assert wrong.status_code == 403
    right = session.post(
        f"{tre_up.hub_url}/hub/login",
        data=form | {"password": tre_up.token("alice")},
        allow_redirects=False,
        timeout=30,
    )
    assert right.status_code == 302


def test_the_airlock_accepts_hub_tokens_through_the_hub(tre_up: Running) -> None:
    hub = tre_up.controller_hub()
    hub.ensure_user("olive")
    token = hub.user_token("olive")
    answer = requests.get(
        tre_up.endpoints["airlock"] + "/requests", headers={"Authorization": f"token {token}"}, timeout=30
    )
    assert answer.status_code == 200
    refused = requests.get(
        tre_up.endpoints["airlock"] + "/requests", headers={"Authorization": "token nope"}, timeout=30
    )
    assert refused.status_code == 401


WORKSPACE_CODE = """
import os, subprocess, pathlib, pyarrow.parquet as pq
files = sorted(pathlib.Path('/data').rglob('*.parquet'))
table = pq.read_table(files[0])
print('rows', table.num_rows)
print('columns', ','.join(table.column_names))
try:
    pathlib.Path('/data/x').write_text('x')
    print('data writable')
except OSError as error:
    print('data read-only', error.errno)
import tre.sdc as sdc
frame = table.to_pandas()
frame = frame[frame['sex'].isin(['F', 'M'])]  # the researcher's control: no tiny 'indeterminate' group
checked = sdc.crosstab(frame['sex'], frame['diagnosis_code'])
out = pathlib.Path('/outputs/admissions_by_sex.csv')
sidecar = checked.save(out)
print('sdc', checked.status if hasattr(checked, 'status') else 'saved')
def tre(*args):
    done = subprocess.run(['tre', 'airlock', *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()
request = tre('create', 'diabetes-outcomes', '--title', 'Admissions by sex')
tre('add', request, str(out), '--kind', 'output')
tre('add', request, str(sidecar), '--kind', 'supporting')
print('submitted', tre('submit', request))
print('request', request)
print('uid', os.getuid())
import urllib.error, urllib.request
def vault(project):
    url = os.environ['VAULT_ADDR'] + f'/v1/secret/data/projects/{project}/absent'
    request = urllib.request.Request(url, headers={'X-Vault-Token': os.environ['VAULT_TOKEN']})
    try:
        return urllib.request.urlopen(request, timeout=30).status
    except urllib.error.HTTPError as error:
        return error.code
print('vault', vault('diabetes-outcomes'), vault('another-project'))
"""


def test_walkthrough_researcher_reads_data_and_submits_checkers_release(tre_up: Running) -> None:
    assert tre_up.endpoints["sandboxMode"] == "root"
    assert walkthrough(tre_up) != "0"


def walkthrough(tre_up: Running) -> str:
    """The README's walk-through; the uid the workspace ran as."""
    hub = tre_up.controller_hub()
    hub.ensure_user("alice")
    token = hub.user_token("alice")
    alice = Hub(tre_up.hub_url, token)
    answer = alice.start_server("alice", {"project": "diabetes-outcomes"})
    assert answer.status_code in (201, 202), answer.text
    output = run_in_kernel(f"{tre_up.hub_url}/user/alice", token, WORKSPACE_CODE)
    facts = dict(line.split(" ", 1) for line in output.strip().splitlines())
    assert int(facts["rows"]) > 0
    assert "patient_name" not in facts["columns"].split(",")
    assert "nhs_number" in facts["columns"].split(",")
    assert facts["data"].startswith("read-only")
    assert facts["uid"] != "0"
    assert facts["vault"] == "404 403"  # OpenBao reached; the token may read its own project's secrets only
    request_id = facts["request"]
    for checker in ("olive", "oscar"):
        vote = requests.post(
            f"{tre_up.endpoints['airlock']}/requests/{request_id}/votes",
            headers={"Authorization": f"Bearer {tre_up.token(checker)}"},
            json={"file": "admissions_by_sex.csv", "vote": "approve"},
            timeout=60,
        )
        assert vote.status_code == 200, vote.text
    assert vote.json()["state"] == "released"
    released = list((tre_up.home / "objects").rglob(f"*{request_id}*/CITATION.txt"))
    assert released, "no CITATION.txt in the release area"
    assert "collected by the NHS" in released[0].read_text()
    alice.stop_server("alice")
    return facts["uid"]


def test_a_non_member_cannot_start_a_workspace(tre_up: Running) -> None:
    hub = tre_up.controller_hub()
    hub.ensure_user("olive")
    olive = Hub(tre_up.hub_url, hub.user_token("olive"))
    answer = olive.api("POST", "/users/olive/server", json={"project": "diabetes-outcomes"})
    assert answer.status_code >= 400
    assert "not a member" in answer.text


def test_second_up_on_the_same_home_is_refused(tre_up: Running) -> None:
    other_ports = dict(zip(tre_up.ports, _free_ports(len(tre_up.ports)), strict=True))
    done = subprocess.run(_argv(other_ports), env=_env(tre_up.home), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "another 'tre up' is running" in done.stderr


def test_a_port_in_use_is_named(tmp_path: Path) -> None:
    names = ["hub", "airlock", "vault", "vault_cluster", "hub_api", "proxy_api"]
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports["airlock"]))
        busy.listen()
        done = subprocess.run(_argv(ports), env=_env(tmp_path / "home"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert f"port {ports['airlock']} for airlock API" in done.stderr
    assert wait_until_gone(tmp_path / "home") == []


def test_a_home_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with sqlite3.connect(home / "tre.db") as db:
        db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
        db.execute("INSERT INTO alembic_version VALUES ('9999_from_the_future')")
    names = ["hub", "airlock", "vault", "vault_cluster", "hub_api", "proxy_api"]
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    done = subprocess.run(_argv(ports), env=_env(home), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "newer" in done.stderr


def test_sigterm_stops_everything_and_a_restart_resumes_with_data_intact(tre_up: Running) -> None:
    before = requests.get(
        tre_up.endpoints["airlock"] + "/requests",
        headers={"Authorization": f"Bearer {tre_up.token('olive')}"},
        timeout=30,
    ).json()
    assert stop(tre_up) == 0
    assert wait_until_gone(tre_up.home) == []
    again = start(tre_up.home, tre_up.ports, "--demo")
    tre_up.process, tre_up.endpoints = again.process, again.endpoints
    assert again.token("olive") == tre_up.token("olive")
    after = requests.get(
        again.endpoints["airlock"] + "/requests",
        headers={"Authorization": f"Bearer {again.token('olive')}"},
        timeout=30,
    ).json()
    assert [r["id"] for r in after] == [r["id"] for r in before]
    verify = subprocess.run(
        [str(VENV_BIN / "tre"), "audit", "verify"], env=_env(tre_up.home), capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stderr


def test_a_killed_up_takes_its_children_and_the_next_up_recovers(tre_up: Running) -> None:
    pids = json.loads((tre_up.home / "run" / "pids.json").read_text())
    assert set(pids) == {"OpenBao", "airlock API", "JupyterHub"}  # every child is recorded for leftover clean-up
    tre_up.process.kill()
    tre_up.process.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{p['pid']}").exists() for p in pids.values()):
        time.sleep(0.5)
    again = start(tre_up.home, tre_up.ports)
    tre_up.process, tre_up.endpoints = again.process, again.endpoints
    assert requests.get(f"{tre_up.hub_url}/hub/health", timeout=10).status_code == 200


# The same TRE run by an unprivileged uid: the rootless sandbox mode.


@pytest.fixture(scope="module")
def tre_up_rootless() -> Iterator[Running]:
    require_rootless_support()
    with private_directory("tre-up-rootless-") as work:
        home = work / "home"
        names = ["hub", "airlock", "vault", "vault_cluster", "hub_api", "proxy_api"]
        ports = dict(zip(names, _free_ports(len(names)), strict=True))
        running = start(home, ports, "--demo", "--sandbox-mode=rootless", preexec=become_unprivileged(), HOME=str(work))
        try:
            yield running
        finally:
            if running.process.poll() is None:
                stop(running)
        assert wait_until_gone(home) == []


def test_walkthrough_without_root_in_the_rootless_mode(tre_up_rootless: Running) -> None:
    """make demo without root: the same walk-through, the workspace reaching the hub and the airlock only
    through its Unix sockets; nothing of the workspace is left once it stops."""
    assert tre_up_rootless.endpoints["sandboxMode"] == "rootless"
    assert tre_up_rootless.endpoints["hubApi"].startswith("http://127.0.0.1:")
    assert walkthrough(tre_up_rootless) == str(unprivileged_uid())
    state = tre_up_rootless.home / "workspaces" / "sandbox"
    assert list(state.glob("*/sockets")) == []
    assert processes_mentioning(str(state)) == []


def test_a_killed_rootless_up_leaves_no_process_and_the_next_up_clears_the_rest(tre_up_rootless: Running) -> None:
    """tre up and its hub killed at once (SIGKILL) while a workspace runs: the workspace dies with them, the next
    tre up removes its sockets before the hub starts, and the new hub ends the old one's orphaned proxy."""
    hub = tre_up_rootless.controller_hub()
    hub.ensure_user("bob")
    bob = Hub(tre_up_rootless.hub_url, hub.user_token("bob"))
    assert bob.start_server("bob", {"project": "diabetes-outcomes"}).status_code in (201, 202)
    state = tre_up_rootless.home / "workspaces" / "sandbox"
    (sockets,) = state.glob("*/sockets")
    pids = json.loads((tre_up_rootless.home / "run" / "pids.json").read_text())
    tre_up_rootless.process.kill()
    os.kill(pids["JupyterHub"]["pid"], signal.SIGKILL)
    tre_up_rootless.process.wait(timeout=30)
    assert wait_until(lambda: not processes_mentioning(str(state)))  # the workspace's relay, bwrap, server
    assert sockets.exists()  # what the workspace left: a directory
    orphans = {int(line.split(":")[0]) for line in processes_under(tre_up_rootless.home)}  # the hub's proxy
    orphans_started = {pid: start_time(pid) for pid in orphans}
    try:
        again = start(tre_up_rootless.home, tre_up_rootless.ports, "--sandbox-mode=rootless",
                      preexec=become_unprivileged(), HOME=str(tre_up_rootless.home.parent))  # fmt: skip
        tre_up_rootless.process, tre_up_rootless.endpoints = again.process, again.endpoints
        assert not sockets.exists()
        assert "left by an earlier 'tre up' that was killed" in _tail(tre_up_rootless.home)
        assert wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in orphans))  # tre up ends them
    finally:
        for pid, started in orphans_started.items():  # should the restart have failed, leave nothing running
            if started is not None and start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
