"""The sandbox's pure and local parts: modes, addressing, slot allocation, firewall rules, the command lines, limits,
directories. (The real thing is proved in tests/integration/test_sandbox_egress.py and, rootless,
test_sandbox_rootless.py.)"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import tempfile
import threading
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jupyterhub.spawner import SpawnException

from tre.errors import ConflictError, InputError
from tre.workspaces import sandbox as sandbox_module
from tre.workspaces._claims import claim, release
from tre.workspaces._dirs import make_data_readable, own
from tre.workspaces._firewall import ruleset
from tre.workspaces._host import SandboxHost, SandboxMode
from tre.workspaces._limits import Cgroup, Limits, cgroup_v2_available, parse_bytes, parse_cpus, prlimit_argv
from tre.workspaces._mounts import Layout, bwrap_argv, setpriv_argv, write_etc
from tre.workspaces._rootless import RELAY_SOURCE, inside_argv, mounts, outside_argv
from tre.workspaces._slots import SlotRegistry
from tre.workspaces.local_spawner import SandboxSpawner, _check_user_options, safe_name
from tre.workspaces.sandbox import (
    Sandbox,
    SandboxSpec,
    SandboxSupport,
    check_sandbox_support,
    prepare_host,
    python_paths,
    resolve_mode,
)

HOST = SandboxHost(pool=IPv4Network("10.213.0.0/16"), state_dir=Path("/nonexistent"))


def test_slots_are_slash_30s_and_the_hub_address_is_outside_every_slot() -> None:
    first, second, last = HOST.link(0), HOST.link(1), HOST.link(HOST.capacity - 1)
    assert (first.host_address, first.workspace_address) == (IPv4Address("10.213.0.1"), IPv4Address("10.213.0.2"))
    assert (second.host_address, second.workspace_address) == (IPv4Address("10.213.0.5"), IPv4Address("10.213.0.6"))
    assert HOST.hub_address == IPv4Address("10.213.255.254")
    assert last.workspace_address == IPv4Address("10.213.255.250") < HOST.hub_address
    assert (first.name, first.uid, second.uid) == ("tre-w00000", HOST.uid_base, HOST.uid_base + 1)
    assert len(first.name) <= 15
    with pytest.raises(InputError, match="outside the sandbox pool"):
        HOST.link(HOST.capacity)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"pool": IPv4Network("8.8.8.0/24")}, "private IPv4 network"),
        ({"pool": IPv4Network("10.0.0.0/30")}, "/29 or larger"),
        ({"pool": IPv4Network("10.0.0.0/8")}, "too large"),
        ({"table": "bad-name"}, "nftables table name"),
        ({"prefix": "much-too-long"}, "name prefix"),
        ({"uid_base": 0}, "uid base"),
    ],
)
def test_bad_host_settings_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        SandboxHost(**changes)


def test_slots_are_stable_reused_after_release_and_never_shared(tmp_path: Path) -> None:
    registry = SlotRegistry(tmp_path, capacity=3)
    assert [registry.slot_for(i) for i in ("a.x", "b.x", "a.x")] == [0, 1, 0]
    registry.release("a.x")
    assert registry.slot_for("c.x") == 0
    assert registry.slot_for("d.x") == 2
    with pytest.raises(ConflictError, match="all 3 sandbox slots are in use"):
        registry.slot_for("e.x")
    assert SlotRegistry(tmp_path, capacity=3).all() == {"b.x": 1, "c.x": 0, "d.x": 2}
    with pytest.raises(InputError, match="sandbox id"):
        registry.slot_for("../escape")


def test_concurrent_allocations_get_distinct_slots(tmp_path: Path) -> None:
    registry = SlotRegistry(tmp_path, capacity=100)
    slots: list[int] = []
    threads = [threading.Thread(target=lambda n=n: slots.append(registry.slot_for(f"p.u{n}"))) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(slots) == list(range(40))


def test_the_firewall_accepts_only_allowed_hub_connections_and_drops_the_rest() -> None:
    rules = [line for line in ruleset(HOST).splitlines() if line.startswith("add rule")]
    assert rules == [
        'add rule inet tre_sandbox input iifname != "tre-w*" accept',
        "add rule inet tre_sandbox input ct state established,related accept",
        "add rule inet tre_sandbox input ct state new iifname . ip daddr . tcp dport @allowed accept",
        'add rule inet tre_sandbox input counter drop comment "everything else from a sandbox"',
        'add rule inet tre_sandbox forward iifname "tre-w*" counter drop',
        'add rule inet tre_sandbox forward oifname "tre-w*" counter drop',
    ]
    assert "add table inet tre_sandbox" in ruleset(HOST)  # inet: IPv4 and IPv6 alike


def _layout(tmp_path: Path) -> Layout:
    return Layout(
        bwrap="/usr/bin/bwrap", etc_dir=tmp_path / "etc", data_dir=Path("/store/extract"),
        outputs_dir=Path("/ws/outputs"), home_dir=Path("/ws/home"), home_inside="/home/alice",
        read_only=(Path("/opt/venv"),), tmp_bytes=1024,
    )  # fmt: skip


def _pairs(argv: list[str], option: str) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a == option]


def test_bwrap_mounts_data_read_only_outputs_and_home_writable_and_nothing_else_of_the_host(tmp_path: Path) -> None:
    argv = bwrap_argv(_layout(tmp_path), ["--symlink", "usr/bin", "/bin"])
    assert {"--die-with-parent", "--unshare-pid", "--new-session", "--unshare-ipc", "--unshare-uts"} <= set(argv)
    assert argv[-1] == "--"
    assert ("/store/extract", "/data") in _pairs(argv, "--ro-bind")
    assert _pairs(argv, "--bind") == [("/ws/outputs", "/outputs"), ("/ws/home", "/home/alice")]
    sources = {source for source, _ in _pairs(argv, "--ro-bind") + _pairs(argv, "--ro-bind-try")}
    assert "/" not in sources
    assert "/home" not in sources
    assert "/root" not in sources
    assert {s for s in sources if not s.startswith("/etc/") and not s.startswith(str(tmp_path))} == {
        "/usr", "/opt/venv", "/store/extract",
    }  # fmt: skip
    for private in ("/tmp", "/dev/shm"):
        at = argv.index(private)
        assert argv[at - 5 : at + 1] == ["--perms", "1777", "--size", "1024", "--tmpfs", private]
    assert argv.index("/opt") < argv.index("/opt/venv")  # parents are made 0755 before the mount


def test_the_command_drops_every_privilege() -> None:
    assert setpriv_argv("/usr/bin/setpriv", 2100007) == [
        "/usr/bin/setpriv", "--reuid=2100007", "--regid=2100007", "--clear-groups", "--no-new-privs",
        "--inh-caps=-all", "--bounding-set=-all", "--",
    ]  # fmt: skip


def test_generated_etc_knows_one_user_and_no_dns(tmp_path: Path) -> None:
    write_etc(
        tmp_path, login="alice", uid=2100003, home_inside="/home/alice",
        hub=IPv4Address("10.213.255.254"), workspace=IPv4Address("10.213.0.14"),
    )  # fmt: skip
    assert "alice:x:2100003:2100003::/home/alice:/bin/bash" in (tmp_path / "passwd").read_text()
    assert "nameserver" not in (tmp_path / "resolv.conf").read_text()
    assert (tmp_path / "nsswitch.conf").read_text().count("dns") == 0
    assert "10.213.255.254\thub" in (tmp_path / "hosts").read_text()


@pytest.mark.parametrize(
    ("quantity", "expected"), [("512Mi", 512 * 2**20), ("4Gi", 4 * 2**30), ("8G", 8 * 10**9), ("1000", 1000)]
)
def test_byte_quantities(quantity: str, expected: int) -> None:
    assert parse_bytes(quantity) == expected


@pytest.mark.parametrize(("quantity", "expected"), [("500m", 0.5), ("2", 2.0), ("1.5", 1.5)])
def test_cpu_quantities(quantity: str, expected: float) -> None:
    assert parse_cpus(quantity) == expected


@pytest.mark.parametrize("bad", ["lots", "-1", "0"])
def test_bad_cpu_quantities_are_refused(bad: str) -> None:
    with pytest.raises(InputError, match="cpu"):
        parse_cpus(bad)


def test_without_a_cgroup_memory_becomes_an_address_space_limit() -> None:
    limits = Limits(memory_bytes=2**30, tasks=64)
    assert prlimit_argv("prlimit", limits, address_space=True) == ["prlimit", "--nproc=64", f"--as={2**30}", "--"]
    assert prlimit_argv("prlimit", limits, address_space=False) == ["prlimit", "--nproc=64", "--"]


def _fake_cgroup_root(root: Path) -> Path:
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text("")
    return root


def test_cgroup_v2_limits_are_written_and_controllers_enabled(tmp_path: Path) -> None:
    root = _fake_cgroup_root(tmp_path / "cgroup")
    assert cgroup_v2_available(root)
    assert not cgroup_v2_available(tmp_path / "none")
    cgroup = Cgroup(root, "tre_sandbox", "tre-w00001")
    (root / "tre_sandbox").mkdir()
    (root / "tre_sandbox" / "cgroup.subtree_control").write_text("")
    cgroup.create(Limits(memory_bytes=4 * 2**30, cpus=1.5, tasks=200))
    read = lambda name: (cgroup.path / name).read_text()  # noqa: E731
    assert (read("memory.max"), read("memory.swap.max"), read("cpu.max"), read("pids.max")) == (
        str(4 * 2**30), "0", "150000 100000", "200",
    )  # fmt: skip
    assert (root / "cgroup.subtree_control").read_text() == "+memory +cpu +pids"


def test_data_is_made_readable_only_below_a_private_directory(tmp_path: Path) -> None:
    private = tmp_path / "home"
    data = private / "objects" / "extract"
    data.mkdir(parents=True)
    (data / "x.parquet").write_bytes(b"x")
    (data / "x.parquet").chmod(0o600)
    private.chmod(0o700)
    make_data_readable(data)
    assert (data / "x.parquet").stat().st_mode & 0o777 == 0o604
    assert data.stat().st_mode & 0o005 == 0o005


def test_data_below_world_traversable_directories_is_refused() -> None:
    exposed = Path(tempfile.mkdtemp(prefix="tre-exposed-", dir="/tmp"))  # every ancestor lets others through
    try:
        exposed.chmod(0o755)
        (exposed / "f").write_bytes(b"x")
        (exposed / "f").chmod(0o600)
        with pytest.raises(ConflictError, match="reachable by every local user"):
            make_data_readable(exposed)
        assert (exposed / "f").stat().st_mode & 0o777 == 0o600
    finally:
        shutil.rmtree(exposed)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing owners needs root")
def test_outputs_and_home_belong_to_the_sandbox_uid(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    (outputs / "sub").mkdir(parents=True)
    (outputs / "sub" / "f").write_text("x")
    own(outputs, 2100009)
    assert {p.stat().st_uid for p in [outputs, outputs / "sub", outputs / "sub" / "f"]} == {2100009}
    assert outputs.stat().st_mode & 0o777 == 0o700


def test_the_python_in_use_is_mounted_but_never_usr() -> None:
    paths = python_paths()
    assert paths
    assert not any(p.is_relative_to("/usr") for p in paths)


@pytest.mark.parametrize(("name", "safe"), [("alice", "alice"), ("a.b-c_d", "a.b-c_d")])
def test_plain_names_are_kept(name: str, safe: str) -> None:
    assert safe_name(name) == safe


def test_odd_names_are_cleaned_and_kept_apart() -> None:
    assert safe_name("Alice Smith").startswith("alice-smith-")
    assert safe_name("alice@x") != safe_name("alice#x")
    assert all(c.isalnum() or c in "._-" for c in safe_name("Zoë/../../etc"))


def test_only_the_project_option_is_accepted() -> None:
    _check_user_options(None, {"project": "p"})
    _check_user_options(None, {})
    with pytest.raises(ValueError, match="unknown workspace option image"):
        _check_user_options(None, {"project": "p", "image": "x"})
    with pytest.raises(ValueError, match="must be a project name"):
        _check_user_options(None, {"project": ["p"]})


class _Gate:
    def __init__(self, projects: list[str]) -> None:
        self.projects = projects

    def projects_for(self, user: str) -> list[str]:
        return self.projects


def test_the_options_form_offers_a_choice_only_between_several_projects() -> None:
    user = SimpleNamespace(name="alice", url="/user/alice/")
    one = SandboxSpawner(user=user, gate=_Gate(["p1"]))
    assert one.project_form() == ""
    several = SandboxSpawner(user=user, gate=_Gate(["p1", "<p2>"]))
    form = several.project_form()
    assert '<option value="p1">p1</option>' in form
    assert "&lt;p2&gt;" in form
    assert "<p2>" not in form
    assert several.options_from_form({"project": ["p1"]}) == {"project": "p1"}


def _claims_host(tmp_path: Path, pool: str, table: str, prefix: str, name: str) -> SandboxHost:
    return SandboxHost(pool=IPv4Network(pool), table=table, prefix=prefix, state_dir=tmp_path / name)


def test_two_tres_on_one_machine_cannot_share_a_pool_table_or_prefix(tmp_path: Path) -> None:
    claims = tmp_path / "claims"
    first = _claims_host(tmp_path, "10.90.0.0/24", "tre_a", "tra", "a")
    claim(first, claims)
    claim(first, claims)  # the same TRE again (tre up, then its hub): fine
    (held,) = claims.glob("*.json")
    other = json.loads(held.read_text())
    with held.open() as handle:  # another process holding the claim
        fcntl.flock(handle, fcntl.LOCK_SH)
        for clash, what in [
            (_claims_host(tmp_path, "10.90.0.0/16", "tre_b", "trb", "b"), "address pool"),
            (_claims_host(tmp_path, "10.91.0.0/24", "tre_a", "trb", "b"), "nftables table"),
            (_claims_host(tmp_path, "10.91.0.0/24", "tre_b", "trab", "b"), "name prefix"),
        ]:
            with pytest.raises(ConflictError, match=f"another TRE .* uses the {what}"):
                claim(clash, claims)
        release(first, claims)
    assert other["state_dir"] == str((tmp_path / "a").resolve())
    assert list(claims.glob("*.json")) == []


def test_a_claim_nobody_holds_is_stale_and_removed(tmp_path: Path) -> None:
    claims = tmp_path / "claims"
    claims.mkdir()
    stale = claims / "0123456789abcdef.json"
    stale.write_text(json.dumps({"state_dir": "/gone", "pool": "10.90.0.0/24", "table": "tre_a", "prefix": "tra"}))
    second = _claims_host(tmp_path, "10.90.0.0/24", "tre_a", "tra", "b")
    claim(second, claims)
    assert not stale.exists()
    release(second, claims)


def test_the_root_mode_without_root_is_refused_and_nothing_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    check_sandbox_support.cache_clear()
    try:
        support = check_sandbox_support(SandboxMode.ROOT)
        assert not support.ok
        assert support.problems[0].startswith("the root sandbox mode needs root")
        assert "--sandbox-mode rootless" in support.problems[0]
        assert "never runs unsandboxed" in support.problems[0]
        host = SandboxHost(pool=IPv4Network("10.90.0.0/24"), table="tre_never", prefix="trnever", state_dir=tmp_path)
        spec = SandboxSpec("p.alice", "alice", tmp_path / "data", tmp_path / "out", tmp_path / "home", (8081,))
        with pytest.raises(ConflictError, match=r"^cannot start a sandboxed workspace: the root sandbox mode needs"):
            Sandbox(host, "p.alice").prepare(spec)
        with pytest.raises(ConflictError, match=r"^cannot start a sandboxed workspace"):
            prepare_host(host)
        assert list(tmp_path.iterdir()) == []
    finally:
        check_sandbox_support.cache_clear()


def test_the_rootless_mode_as_root_is_refused_and_nothing_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rootless sandboxes run as the hub's own uid: as root that would be root outside the user namespace."""
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    check_sandbox_support.cache_clear()
    try:
        support = check_sandbox_support(SandboxMode.ROOTLESS)
        assert support.problems[0].startswith("the rootless mode runs workspaces as the user who runs the hub")
        host = SandboxHost(state_dir=tmp_path / "state", mode=SandboxMode.ROOTLESS)
        spec = SandboxSpec("p.alice", "alice", tmp_path / "data", tmp_path / "out", tmp_path / "home", (8081,))
        with pytest.raises(ConflictError, match=r"^cannot start a sandboxed workspace: the rootless mode runs"):
            Sandbox(host, "p.alice").prepare(spec)
        with pytest.raises(ConflictError, match="never as root"):
            prepare_host(host)
        assert list(tmp_path.iterdir()) == []
    finally:
        check_sandbox_support.cache_clear()


@pytest.mark.parametrize(("euid", "requested", "mode"), [
    (0, "auto", SandboxMode.ROOT), (1000, "auto", SandboxMode.ROOTLESS),
    (0, "rootless", SandboxMode.ROOTLESS), (1000, "root", SandboxMode.ROOT),
])  # fmt: skip
def test_auto_is_root_for_root_and_rootless_otherwise(
    monkeypatch: pytest.MonkeyPatch, euid: int, requested: str, mode: SandboxMode
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    assert resolve_mode(requested) is mode


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(InputError, match="sandbox mode 'rootful': use one of auto, root, rootless"):
        resolve_mode("rootful")


def test_a_rootless_host_puts_the_hub_on_loopback_and_runs_as_its_own_user() -> None:
    host = SandboxHost(state_dir=Path("/nonexistent"), mode=SandboxMode.ROOTLESS)
    assert host.hub_address == IPv4Address("127.0.0.1")
    assert {host.link(0).uid, host.link(7).uid} == {os.getuid()}
    assert host.link(7).name == "tre-w00007"  # a slot still names its state


def test_rootless_bwrap_adds_every_namespace_and_only_the_socket_directory(tmp_path: Path) -> None:
    sockets = tmp_path / "tre-w00003" / "sockets"
    argv = bwrap_argv(_layout(tmp_path), ["--symlink", "usr/bin", "/bin"], mounts(sockets))
    assert {"--unshare-user", "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts"} <= set(argv)
    assert {"--disable-userns", "--die-with-parent", "--new-session"} <= set(argv)
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert (str(sockets), "/run/tre") in _pairs(argv, "--ro-bind")
    assert _pairs(argv, "--bind") == [
        ("/ws/outputs", "/outputs"), ("/ws/home", "/home/alice"), (str(sockets / "in"), "/run/tre/in"),
    ]  # fmt: skip
    assert (str(RELAY_SOURCE), "/run/tre-relay.py") in _pairs(argv, "--ro-bind")
    assert argv.index(str(sockets)) > argv.index("/home/alice")  # after the other mounts
    assert argv[-1] == "--"


def test_the_relays_are_told_only_the_allowed_ports() -> None:
    inside = inside_argv([8081, 8010, 8081], 8888, ["jupyterhub-singleuser"])
    assert inside[:4] == [sys.executable, "-I", "/run/tre-relay.py", "inside"]
    assert json.loads(inside[4]) == {"ports": [8010, 8081], "server_port": 8888}
    assert inside[5:] == ["--", "jupyterhub-singleuser"]
    outside = outside_argv(Path("/state/s"), "127.0.0.1", [8081], 5, ["bwrap", "--"])
    config = json.loads(outside[4])
    assert config == {"dir": "/state/s", "host": "127.0.0.1", "ports": [8081], "inbound_fd": 5, "parent": os.getpid()}
    assert outside[-3:] == ["--", "bwrap", "--"]


def test_rootless_ports_that_cannot_be_listened_on_inside_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox_module, "check_sandbox_support", lambda mode: SandboxSupport(()))
    host = SandboxHost(state_dir=tmp_path / "state", mode=SandboxMode.ROOTLESS)
    data = tmp_path / "data"
    data.mkdir()
    spec = SandboxSpec("p.alice", "alice", data, tmp_path / "out", tmp_path / "home", (8081, 8888), server_port=8888)
    with pytest.raises(ConflictError, match="port 8888 is both the workspace server's and one it forwards"):
        Sandbox(host, "p.alice").prepare(spec)
    low = SandboxSpec("p.alice", "alice", data, tmp_path / "out", tmp_path / "home", (8081, 443))
    with pytest.raises(ConflictError, match="port 443 is below 1024: a rootless workspace has no privilege"):
        Sandbox(host, "p.alice").prepare(low)
    assert not (tmp_path / "state" / "tre-w00000" / "sockets").exists()


def test_the_spawner_checks_the_hub_api_is_where_rootless_workspaces_can_reach_it() -> None:
    user = SimpleNamespace(name="alice", url="/user/alice/")
    spawner = SandboxSpawner(user=user, gate=_Gate(["p1"]), sandbox_mode="rootless", allowed_ports=[8010])
    host = spawner.sandbox_host()
    assert host.mode is SandboxMode.ROOTLESS
    spawner.hub_connect_url = "http://127.0.0.1:8081/hub/api"
    assert spawner._hub_ports(host) == (8081, 8010)
    spawner.hub_connect_url = "http://localhost:8082/hub/api"
    assert spawner._hub_ports(host) == (8082, 8010)
    spawner.hub_connect_url = "http://10.213.255.254:8081/hub/api"
    with pytest.raises(SpawnException, match=r"workspaces can reach the hub only at 127\.0\.0\.1"):
        spawner._hub_ports(host)


def test_a_rootless_state_directory_the_hub_cannot_make_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox_module, "check_sandbox_support", lambda mode: SandboxSupport(()))
    (tmp_path / "file").write_text("not a directory")
    host = SandboxHost(state_dir=tmp_path / "file" / "state", mode=SandboxMode.ROOTLESS)
    with pytest.raises(ConflictError, match=r"cannot make the sandbox state directory .*sandbox_state_dir"):
        prepare_host(host)
