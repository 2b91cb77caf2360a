"""Workspace start-up: spawn-request-to-ready for SandboxSpawner, in each sandbox mode this machine allows, against
JupyterHub's SimpleLocalProcessSpawner.

    .venv/bin/python benchmarks/spawn.py [--runs 5]         # as root: root mode, rootless mode (another uid), baseline
                                                            # otherwise: rootless mode and baseline

Starts, in one temporary directory: a throwaway OpenBao (for the pseudonymisation key), a TRE home prepared with
the ``tre`` CLI (users, dataset, an approved and provisioned project), and real JupyterHubs side by side, one per
spawner, all running the same single-user server (``jupyterhub-singleuser``): SimpleLocalProcessSpawner (the
baseline), SandboxSpawner in the root mode (when run as root), and SandboxSpawner in the rootless mode (run by an
unprivileged uid, with its own copy of the TRE home, when run as root; by the invoking user otherwise). Spawns
alternate between the hubs, after one warm-up spawn each, so all see the same machine load. Each spawn is timed
from the REST request to the hub reporting the server ready (the hub has then had an HTTP answer from it, through
the relays in the rootless mode), and each stop from the request to the server being gone. Finally it times
approve-to-ready for a new project: approval, provisioning and the first workspace (in the first sandbox mode).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

VENV_BIN = Path(sys.executable).parent
TOKEN = secrets.token_hex(24)  # the benchmark service's API token for both hubs
PROJECT = "diabetes-outcomes"
REQUESTS = 20

COMMON_CONFIG = """
c = get_config()  # noqa: F821
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.bind_url = "http://127.0.0.1:{proxy_port}"
c.JupyterHub.hub_bind_url = "http://{hub_ip}:{hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.command = ["{venv_bin}/configurable-http-proxy"]
c.JupyterHub.db_url = "sqlite:///{work}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{work}/cookie_secret"
c.JupyterHub.services = [{{"name": "bench", "api_token": "{token}"}}]
c.JupyterHub.load_roles = [
    {{"name": "bench", "scopes": ["admin:users", "admin:servers", "access:servers"], "services": ["bench"]}}
]
c.Spawner.cmd = ["{venv_bin}/jupyterhub-singleuser"]
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
"""
SANDBOX_CONFIG = """
c.JupyterHub.spawner_class = "tre.workspaces.local_spawner.SandboxSpawner"
c.SandboxSpawner.sandbox_mode = "{mode}"
c.SandboxSpawner.sandbox_pool = "{pool}"
c.SandboxSpawner.sandbox_table = "{table}"
c.SandboxSpawner.sandbox_prefix = "{prefix}"
c.SandboxSpawner.sandbox_state_dir = "{state_dir}"
c.SandboxSpawner.workspace_root = "{work}/workspaces"
"""
SIMPLE_CONFIG = """
c.JupyterHub.spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"
c.SimpleLocalProcessSpawner.home_dir_template = "{work}/home/{{username}}"
c.SimpleLocalProcessSpawner.args = ["--allow-root"]  # it runs servers as the hub's own user, here root
"""


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


@dataclass
class Hub:
    name: str
    work: Path
    options: dict[str, Any] = field(default_factory=dict)
    proxy_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    spawns: list[float] = field(default_factory=list)
    stops: list[float] = field(default_factory=list)
    requests: list[float] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def start(self, config: str, env: dict[str, str], preexec: Callable[[], None] | None = None) -> None:
        (self.work / "jupyterhub_config.py").write_text(config)
        with (self.work / "hub.log").open("wb") as log:
            self.process = subprocess.Popen(
                [str(VENV_BIN / "jupyterhub"), "-f", "jupyterhub_config.py"],
                cwd=self.work, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec,
            )  # fmt: skip
        wait(lambda: self.call("GET", "/hub/api/")[0] == 200, 60, f"the {self.name} hub did not start", self.log)

    def log(self) -> str:
        return (self.work / "hub.log").read_text(errors="replace")[-3000:]

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)  # noqa: S310 - loopback
        request.add_header("Authorization", f"token {TOKEN}")
        try:
            with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - loopback
                text = response.read().decode()
                return int(response.status), json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:
            return 0, str(exc)

    def server(self, user: str) -> dict[str, Any] | None:
        status, info = self.call("GET", f"/hub/api/users/{user}")
        if status != 200:
            raise RuntimeError(f"{self.name}: GET user {user}: {status} {info}")
        server: dict[str, Any] | None = info["servers"].get("")
        return server

    def spawn(self, user: str, options: dict[str, Any]) -> float:
        self.call("POST", f"/hub/api/users/{user}")
        start = time.perf_counter()
        status, body = self.call("POST", f"/hub/api/users/{user}/server", options)
        if status not in {201, 202}:
            raise RuntimeError(f"{self.name}: spawn {user}: {status} {body}\n{self.log()}")
        wait(lambda: bool((s := self.server(user)) and s["ready"]), 120, f"{self.name}: {user} not ready", self.log)
        return time.perf_counter() - start

    def time_requests(self, user: str, count: int) -> list[float]:
        """Seconds for each of ``count`` small API requests to the user's server, through the proxy (and, in the
        rootless mode, both relays)."""
        times = []
        for _ in range(count):
            start = time.perf_counter()
            status, body = self.call("GET", f"/user/{user}/api/status")
            times.append(time.perf_counter() - start)
            if status != 200:
                raise RuntimeError(f"{self.name}: GET /user/{user}/api/status: {status} {body}")
        return times

    def stop(self, user: str) -> float:
        start = time.perf_counter()
        self.call("DELETE", f"/hub/api/users/{user}/server")
        wait(lambda: self.server(user) is None, 120, f"{self.name}: {user} did not stop", self.log)
        return time.perf_counter() - start

    def shutdown(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait(done: Callable[[], bool], timeout: float, message: str, log: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{message}\n{log()}")
        time.sleep(0.02)


class Tre:
    """The ``tre`` CLI in-process, against one TRE home, with a settable clock."""

    def __init__(self, home: Path, vault_url: str, vault_token_file: Path) -> None:
        self.env = {"TRE_HOME": str(home), "TRE_VAULT_ADDR": vault_url, "TRE_VAULT_TOKEN_FILE": str(vault_token_file)}

    def __call__(self, *args: str) -> str:
        from typer.testing import CliRunner

        from tre.cli import app

        result = CliRunner().invoke(app, list(args), env=self.env, catch_exceptions=False)
        if result.exit_code != 0:
            raise RuntimeError(f"tre {' '.join(args)}: {result.stderr or result.stdout}")
        return str(result.stdout)


def prepare_tre(work: Path, vault_url: str, vault_token: str) -> tuple[Tre, Path]:
    import yaml

    from tre.data import write_demo_data

    token_file = work / "vault-token"
    token_file.write_text(vault_token)
    token_file.chmod(0o600)
    home = work / "tre-home"
    tre = Tre(home, vault_url, token_file)
    later = (dt.date.today() + dt.timedelta(days=365)).isoformat()
    files = write_demo_data(work / "data", rows=20000, seed=7)
    dataset = yaml.safe_load((REPO / "examples" / "hospital-episodes.dataset.yaml").read_text())
    dataset["spec"]["location"] = str(files.episodes)
    (work / "dataset.yaml").write_text(yaml.safe_dump(dataset))
    tre("user", "add", "alice", "--role", "researcher", "-a", f"safe-researcher:{later}")
    tre("user", "add", "bob", "--role", "researcher", "-a", f"safe-researcher:{later}")
    tre("user", "add", "carol", "--role", "approver")
    tre("dataset", "register", "-f", str(work / "dataset.yaml"))
    tre("optout", "import", str(files.optouts))
    tre("project", "apply", "-f", str(REPO / "examples" / "diabetes-outcomes.project.yaml"))
    approve(tre, PROJECT, later)
    tre("provision", PROJECT)
    return tre, home


def approve(tre: Tre, project: str, expires: str) -> None:
    tre("project", "approve", project, "--by", "carol", "--reference", "R", "--expires", expires, "--agreement", "A")


def sandbox_host(state_dir: Path) -> Any:
    from tre.workspaces._network import check_pool_is_free
    from tre.workspaces.sandbox import SandboxError, SandboxHost

    for _ in range(20):
        tag = secrets.token_hex(2)
        pool = IPv4Network(f"10.216.{secrets.randbelow(230) + 16}.0/24")
        host = SandboxHost(pool=pool, table=f"tre_bench_{tag}", prefix=f"trb{tag}", state_dir=state_dir)
        with contextlib.suppress(SandboxError):
            check_pool_is_free(host)
            return host  # prepare_host also refuses a pool another TRE has claimed
    raise RuntimeError("no free address pool for the benchmark")


def common_config(hub: Hub, hub_ip: str) -> str:
    return COMMON_CONFIG.format(
        proxy_port=hub.proxy_port, hub_ip=hub_ip, hub_port=free_port(hub_ip), proxy_api_port=free_port(),
        venv_bin=VENV_BIN, work=hub.work, token=TOKEN,
    )  # fmt: skip


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


def table(rows: list[tuple[str, list[float]]], baseline: list[float], unit: str = "s") -> str:
    scale, base = {"s": 1.0, "ms": 1000.0}[unit], statistics.median(baseline)
    heading = f"{'':34} {'runs':>4} {'median ' + unit:>9} {'p90 ' + unit:>7} {'min ' + unit:>7} {'max ' + unit:>7}"
    lines = [f"{heading} {'overhead':>9}"]
    for name, values in rows:
        median = statistics.median(values)
        overhead = f"{(median / base - 1) * 100:+.1f}%" if values is not baseline else "baseline"
        figures = [median, percentile(values, 0.9), min(values), max(values)]
        shown = [f"{value * scale:>{width}.3f}" for value, width in zip(figures, (9, 7, 7, 7), strict=True)]
        lines.append(f"{name:34} {len(values):>4} {' '.join(shown)} {overhead:>9}")
    return "\n".join(lines)


def run(runs: int) -> None:
    from tests.support import openbao
    from tests.support.rootless import private_directory, rootless_problem
    from tre.workspaces.sandbox import SandboxMode, check_sandbox_support

    root = os.geteuid() == 0 and check_sandbox_support(SandboxMode.ROOT).ok
    rootless = rootless_problem()
    if not root and rootless is not None:
        raise SystemExit(f"no sandbox mode works here: {check_sandbox_support(SandboxMode.ROOT).problems[0]}")
    with contextlib.ExitStack() as exits:
        work = exits.enter_context(private_directory("tre-spawn-bench-"))  # the rootless hub's uid owns it
        bao = openbao.start_server()
        exits.callback(bao.stop)
        print("preparing the TRE home (users, dataset, approved and provisioned project)…", flush=True)
        tre, home = prepare_tre(work, bao.url, bao.root_token)
        simple = Hub("SimpleLocalProcessSpawner", work / "hub-simple")
        hubs = [simple]
        if root:
            hubs.append(start_root_hub(exits, work, home))
        if rootless is None:
            hubs.append(start_rootless_hub(exits, work, home))
        else:
            print(f"the rootless mode is not measured: {rootless}")
        simple.work.mkdir()
        exits.callback(simple.shutdown)
        simple.start(common_config(simple, "127.0.0.1") + SIMPLE_CONFIG.format(work=simple.work), hub_env(home))
        measure(hubs, runs)
        new_project(tre, hubs[1], home)


def hub_env(home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "TRE_HOME": str(home), "PATH": f"{VENV_BIN}:{os.environ['PATH']}", **extra}


def start_root_hub(exits: contextlib.ExitStack, work: Path, home: Path) -> Hub:
    from tre.workspaces.sandbox import prepare_host, teardown_host

    host = sandbox_host(work / "sandbox-state")
    exits.callback(teardown_host, host, forget=True)
    prepare_host(host)
    hub = Hub("SandboxSpawner, root mode", work / "hub-root", {"project": PROJECT})
    hub.work.mkdir()
    exits.callback(hub.shutdown)
    extra = SANDBOX_CONFIG.format(
        mode="root", pool=host.pool, table=host.table, prefix=host.prefix, state_dir=host.state_dir, work=hub.work
    )
    hub.start(common_config(hub, str(host.hub_address)) + extra, hub_env(home))
    return hub


def start_rootless_hub(exits: contextlib.ExitStack, work: Path, home: Path) -> Hub:
    """As root: run by the unprivileged uid on a copy of the TRE home it owns, as a TRE without root would be.
    Otherwise: run by this user, on the same home."""
    from tests.support.rootless import become_unprivileged, give

    hub = Hub("SandboxSpawner, rootless mode", work / "hub-rootless", {"project": PROJECT})
    hub.work.mkdir()
    if os.geteuid() == 0:
        home = work / "tre-home-rootless"
        shutil.copytree(work / "tre-home", home, symlinks=True)
        give(home)
        give(hub.work)
    extra = SANDBOX_CONFIG.format(
        mode="rootless", pool="10.213.0.0/16", table="tre_sandbox", prefix="tre-w",
        state_dir=home / "workspaces" / "sandbox", work=hub.work,
    )  # fmt: skip
    exits.callback(hub.shutdown)
    hub.start(common_config(hub, "127.0.0.1") + extra, hub_env(home, HOME=str(hub.work)), become_unprivileged())
    return hub


def measure(hubs: list[Hub], runs: int) -> None:
    print(f"warming up, then {runs} alternating spawns and stops on each hub…", flush=True)
    for hub in hubs:
        hub.spawn("alice", hub.options)
        hub.stop("alice")
    for _ in range(runs):
        for hub in hubs:
            hub.spawns.append(hub.spawn("alice", hub.options))
            hub.requests += hub.time_requests("alice", REQUESTS)
            hub.stops.append(hub.stop("alice"))
    baseline = hubs[0]
    print()
    print("spawn request to ready (REST API, server answering):")
    print(table([(hub.name, hub.spawns) for hub in hubs], baseline.spawns))
    print()
    print("stop request to stopped:")
    print(table([(hub.name, hub.stops) for hub in hubs], baseline.stops))
    print()
    print(f"a small API request to the running server through the proxy ({REQUESTS} per spawn):")
    print(table([(hub.name, hub.requests) for hub in hubs], baseline.requests, unit="ms"))
    median = statistics.median(baseline.spawns)
    print()
    for hub in hubs[1:]:
        overhead = (statistics.median(hub.spawns) / median - 1) * 100
        verdict = "meets" if overhead <= 20 else "MISSES"
        print(f"{hub.name}: spawn overhead {overhead:+.1f}% (median): {verdict} the target of at most +20%")
        setup = setup_times(hub)[-runs:]
        share = statistics.median(setup) / 10 / median
        print(
            f"  its own setup (gate check, namespaces or sockets, directories, audit; from the hub log): median "
            f"{statistics.median(setup):.0f} ms, max {max(setup):.0f} ms = {share:.1f}% of the baseline spawn"
        )


def setup_times(hub: Hub) -> list[float]:
    """The milliseconds SandboxSpawner logged for each sandbox it set up ("set up in N ms")."""
    text = (hub.work / "hub.log").read_text(errors="replace")
    return [float(m) for m in re.findall(r"set up in (\d+) ms", text)]


def new_project(tre: Tre, hub: Hub, home: Path) -> None:
    import yaml

    document = yaml.safe_load((REPO / "examples" / "diabetes-outcomes.project.yaml").read_text())
    document["metadata"]["name"] = "bench-new"
    path = home.parent / "bench-new.yaml"
    path.write_text(yaml.safe_dump(document))
    tre("project", "apply", "-f", str(path))
    expires = (dt.date.today() + dt.timedelta(days=365)).isoformat()
    start = time.perf_counter()
    approve(tre, "bench-new", expires)
    approved = time.perf_counter()
    tre("provision", "bench-new")
    provisioned = time.perf_counter()
    hub.spawn("bob", {"project": "bench-new"})
    ready = time.perf_counter()
    hub.stop("bob")
    print("\napprove-to-ready for a new project (20000 source rows; tre CLI in-process, then the first workspace):")
    parts = {"approve": approved - start, "provision": provisioned - approved, "spawn": ready - provisioned}
    print("  " + " + ".join(f"{name} {seconds:.3f}s" for name, seconds in parts.items()) + f" = {ready - start:.3f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="timed spawns per spawner (after one warm-up each)")
    args = parser.parse_args()
    run(args.runs)


if __name__ == "__main__":
    main()
