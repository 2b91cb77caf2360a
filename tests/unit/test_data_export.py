"""Exporting a project's extract into the directory workspaces mount (``tre provision P --to DIR``).

The extracts come from the real pipeline on demo data, into a real local-directory object store; only the
pseudonymisation key comes from a small in-memory provider (our own ``KeyProvider`` boundary) instead of Vault.
A crash is a child process that dies with ``os._exit`` at a chosen step, so no clean-up code runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import EXAMPLES, REPO, Tre
from tests.support.cli import approve_example, assert_refused, ok
from tre.cli import _data
from tre.data import EngineLimits, PseudonymKey, export_extract, write_demo_data
from tre.data._export import CITATION_FILE, CURRENT, EXTRACTS, MANIFEST_FILE
from tre.data.provision import DataServices
from tre.errors import InputError, IntegrityError, NotFoundError
from tre.governance import PATIENT_DATA_CITATION
from tre.storage import LocalObjectStore, ObjectStore

NAME = "diabetes-outcomes"
PARQUET = "hospital-episodes.parquet"


class Keys:
    """Pseudonymisation keys in memory (Vault's role in production)."""

    def pseudonymisation_key(self, project: str, version: int | None = None) -> PseudonymKey:
        return PseudonymKey(version=1, key=hashlib.sha256(project.encode()).digest())


@pytest.fixture
def objects(isolated_environment: Path) -> LocalObjectStore:
    return LocalObjectStore(isolated_environment / "objects")


@pytest.fixture
def approved(
    tre: Tre, tmp_path: Path, objects: LocalObjectStore, isolated_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> Tre:
    """The example project approved over demo data, with opt-outs imported; provisioning uses the real pipeline."""
    files = write_demo_data(tmp_path / "source", rows=400, seed=11)
    dataset = yaml.safe_load((EXAMPLES / "hospital-episodes.dataset.yaml").read_text())
    dataset["spec"]["location"] = str(files.episodes)
    dataset_file = tmp_path / "dataset.yaml"
    dataset_file.write_text(yaml.safe_dump(dataset))
    for name in ("alice", "bob"):
        ok(tre, "user", "add", name, "--role", "researcher", "-a", "safe-researcher:2027-06-30")
    ok(tre, "user", "add", "carol", "--role", "approver")
    ok(tre, "dataset", "register", "-f", str(dataset_file))
    ok(tre, "project", "apply", "-f", str(EXAMPLES / f"{NAME}.project.yaml"))
    approve_example(tre)
    ok(tre, "optout", "import", str(files.optouts))
    services = DataServices(
        objects=objects,
        keys=Keys(),
        work_root=isolated_environment / "work",
        open_source_store=lambda bucket: pytest.fail("no S3 source here"),
        limits=EngineLimits(memory_limit="256MB", threads=1),
    )
    monkeypatch.setattr(_data, "data_services", lambda: services)
    return tre


def provision(tre: Tre) -> dict[str, Any]:
    """A new extract of the example project; its recorded manifest."""
    ok(tre, "provision", NAME)
    return json.loads(ok(tre, "data", "manifest", NAME, "--output", "json"))  # type: ignore[no-any-return]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def current_extract(directory: Path) -> str:
    link = directory / CURRENT
    target = os.readlink(link)
    assert target.startswith(f"{EXTRACTS}/"), target  # relative: right wherever the volume is mounted
    return target.removeprefix(f"{EXTRACTS}/")


def assert_complete(directory: Path, manifest: dict[str, Any]) -> None:
    """``directory/current`` is exactly ``manifest``'s extract, every file matching its checksum."""
    current = directory / CURRENT
    assert current_extract(directory) == manifest["extract"]
    assert sorted(p.name for p in current.iterdir()) == sorted([PARQUET, MANIFEST_FILE, CITATION_FILE])
    (dataset,) = manifest["datasets"]
    assert sha256(current / PARQUET) == dataset["file"]["sha256"]
    assert json.loads((current / MANIFEST_FILE).read_text()) == manifest
    assert pq.read_metadata(current / PARQUET).num_rows == dataset["rowsWritten"]


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != ".lock")


# ---- the happy path ------------------------------------------------------------------------------------------------


def test_an_extract_is_copied_verified_and_published_as_current(
    approved: Tre, objects: LocalObjectStore, tmp_path: Path
) -> None:
    manifest = provision(approved)
    data = tmp_path / "data"
    previous = os.umask(0o077)  # a strict umask must not make the files unreadable to workspaces
    try:
        exported = export_extract(manifest, objects, data)
    finally:
        os.umask(previous)
    assert exported.copied is True
    assert exported.removed == ()
    assert exported.path == data / EXTRACTS / manifest["extract"]
    assert exported.files == (PARQUET,)
    assert_complete(data, manifest)
    (dataset,) = manifest["datasets"]
    stored = objects.local_path(dataset["file"]["key"])
    assert stored is not None
    assert (data / CURRENT / PARQUET).read_bytes() == stored.read_bytes()
    assert exported.bytes == dataset["file"]["bytes"]
    assert (data / CURRENT / CITATION_FILE).read_text() == PATIENT_DATA_CITATION + "\n"
    assert PATIENT_DATA_CITATION.startswith("This work uses data provided by patients and collected by the NHS")
    assert entries(data) == [CURRENT, EXTRACTS]  # no staging leftovers
    # workspaces run as another uid than the Job: everything they need must be readable by others
    assert (data / CURRENT / PARQUET).stat().st_mode & 0o777 == 0o644
    assert exported.path.stat().st_mode & 0o777 == 0o755
    assert (data / EXTRACTS).stat().st_mode & 0o777 == 0o755


class DownloadOnly(LocalObjectStore):
    """A store with nothing on this machine's disk, as S3 is: every file is downloaded, then checked."""

    def local_path(self, key: str) -> Path | None:
        return None


def test_a_downloaded_extract_is_checked_too(approved: Tre, objects: LocalObjectStore, tmp_path: Path) -> None:
    remote = DownloadOnly(objects.root)
    first = provision(approved)
    data = tmp_path / "data"
    assert export_extract(first, remote, data).copied is True
    assert_complete(data, first)
    second = provision(approved)
    stored = objects.local_path(second["datasets"][0]["file"]["key"])
    assert stored is not None
    stored.write_bytes(stored.read_bytes()[:-1] + b"\0")
    with pytest.raises(IntegrityError, match="the stored copy is damaged or was changed"):
        export_extract(second, remote, data)
    assert_complete(data, first)
    assert entries(data) == [CURRENT, EXTRACTS]


def test_re_running_changes_nothing(approved: Tre, objects: LocalObjectStore, tmp_path: Path) -> None:
    manifest = provision(approved)
    data = tmp_path / "data"
    export_extract(manifest, objects, data)
    before = {p: (p.lstat().st_ino, p.lstat().st_mtime_ns) for p in data.rglob("*")}
    again = export_extract(manifest, objects, data)
    assert again.copied is False
    assert again.removed == ()
    assert {p: (p.lstat().st_ino, p.lstat().st_mtime_ns) for p in data.rglob("*")} == before
    assert_complete(data, manifest)


def test_a_new_extract_replaces_the_old_one_which_is_removed(
    approved: Tre, objects: LocalObjectStore, tmp_path: Path
) -> None:
    first = provision(approved)
    data = tmp_path / "data"
    export_extract(first, objects, data)
    second = provision(approved)
    assert second["extract"] != first["extract"]
    exported = export_extract(second, objects, data)
    assert exported.removed == (first["extract"],)
    assert_complete(data, second)
    assert entries(data / EXTRACTS) == [second["extract"]]  # opted-out patients in the old one: gone at once


# ---- failures leave the current extract as it was ----------------------------------------------------------------


def test_a_checksum_mismatch_publishes_nothing(approved: Tre, objects: LocalObjectStore, tmp_path: Path) -> None:
    first = provision(approved)
    data = tmp_path / "data"
    export_extract(first, objects, data)
    second = provision(approved)
    (dataset,) = second["datasets"]
    stored = objects.local_path(dataset["file"]["key"])
    assert stored is not None
    damaged = bytearray(stored.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # same size, different content
    stored.write_bytes(bytes(damaged))
    with pytest.raises(IntegrityError, match=r"hospital-episodes\.parquet has SHA-256 .* but the manifest says"):
        export_extract(second, objects, data)
    assert_complete(data, first)
    assert entries(data) == [CURRENT, EXTRACTS]
    assert entries(data / EXTRACTS) == [first["extract"]]


def test_a_missing_file_publishes_nothing(approved: Tre, objects: LocalObjectStore, tmp_path: Path) -> None:
    first = provision(approved)
    data = tmp_path / "data"
    export_extract(first, objects, data)
    second = provision(approved)
    objects.delete(second["datasets"][0]["file"]["key"])
    with pytest.raises(NotFoundError, match="is missing from the object store; provision the project again"):
        export_extract(second, objects, data)
    assert_complete(data, first)
    assert entries(data) == [CURRENT, EXTRACTS]


CRASH = """
import json, os, sys
from pathlib import Path
from tre.data import _export
from tre.storage import LocalObjectStore

manifest, objects, directory, step = sys.argv[1:]
def crash(*args, **kwargs):
    os._exit(70)  # killed here: no clean-up code runs
setattr(_export, step, crash)
_export.export_extract(json.loads(Path(manifest).read_text()), LocalObjectStore(Path(objects)), Path(directory))
"""


def crash_during_export(manifest: dict[str, Any], objects: LocalObjectStore, data: Path, step: str) -> None:
    document = data.parent / "manifest-for-child.json"
    document.write_text(json.dumps(manifest))
    command = [sys.executable, "-c", CRASH, str(document), str(objects.root), str(data), step]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 70, result.stderr


def test_a_crash_between_staging_and_the_swap_leaves_the_old_extract_current(
    approved: Tre, objects: LocalObjectStore, tmp_path: Path
) -> None:
    first = provision(approved)
    data = tmp_path / "data"
    export_extract(first, objects, data)
    second = provision(approved)
    crash_during_export(second, objects, data, "_publish")  # staged and verified, not yet renamed into place
    (leftover,) = [p for p in data.iterdir() if p.name.startswith(".staging-")]
    assert (leftover / PARQUET).is_file()
    assert_complete(data, first)
    exported = export_extract(second, objects, data)  # the next run finishes the job and tidies up
    assert exported.copied is True
    assert_complete(data, second)
    assert entries(data) == [CURRENT, EXTRACTS]


@pytest.mark.parametrize(
    ("step", "copied_on_rerun"),
    [("_point_current", False), ("_remove_older", False)],
    ids=["after-rename-before-swap", "after-swap-before-removal"],
)
def test_a_crash_later_on_is_finished_by_the_next_run_without_copying_again(
    approved: Tre, objects: LocalObjectStore, tmp_path: Path, step: str, copied_on_rerun: bool
) -> None:
    first = provision(approved)
    data = tmp_path / "data"
    export_extract(first, objects, data)
    second = provision(approved)
    crash_during_export(second, objects, data, step)
    if step == "_point_current":
        assert_complete(data, first)
    else:
        assert_complete(data, second)
    exported = export_extract(second, objects, data)
    assert exported.copied is copied_on_rerun
    assert exported.removed == (first["extract"],)
    assert_complete(data, second)
    assert entries(data / EXTRACTS) == [second["extract"]]


# ---- refused input -------------------------------------------------------------------------------------------------


def _with_dataset_name(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    changed = json.loads(json.dumps(manifest))
    changed["datasets"][0]["name"] = name
    return changed


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda m: _with_dataset_name(m, "../../etc/evil"), "dataset name '../../etc/evil' is not a plain file name"),
        (lambda m: _with_dataset_name(m, "a/b"), "dataset name 'a/b'"),
        (lambda m: _with_dataset_name(m, ".."), "dataset name '..'"),
        (lambda m: _with_dataset_name(m, "x..y"), "dataset name 'x..y'"),
        (lambda m: _with_dataset_name(m, ".hidden"), "dataset name '.hidden'"),
        (lambda m: _with_dataset_name(m, "/abs"), "dataset name '/abs'"),
        (lambda m: m | {"extract": "../current"}, "extract id '../current'"),
        (lambda m: m | {"extract": "a/b"}, "extract id 'a/b'"),
        (lambda m: m | {"datasets": m["datasets"] * 2}, "lists a dataset twice"),
        (lambda m: m | {"datasets": []}, "lists no datasets"),
        (lambda m: {k: v for k, v in m.items() if k != "extract"}, "extract id None"),
    ],
)
def test_unsafe_or_malformed_manifests_are_refused_before_anything_is_written(
    approved: Tre, objects: LocalObjectStore, tmp_path: Path, change: Any, fragment: str
) -> None:
    manifest = provision(approved)
    data = tmp_path / "data"
    with pytest.raises(InputError, match="refusing to export it") as raised:
        export_extract(change(manifest), objects, data)
    assert fragment in str(raised.value)
    assert not data.exists()
    assert not (tmp_path / "etc").exists()


def test_a_real_directory_named_current_is_not_replaced(
    approved: Tre, objects: LocalObjectStore, tmp_path: Path
) -> None:
    manifest = provision(approved)
    data = tmp_path / "data"
    (data / CURRENT).mkdir(parents=True)
    (data / CURRENT / "keep.txt").write_text("someone's file")
    with pytest.raises(InputError, match="exists and is not a symlink; move it away"):
        export_extract(manifest, objects, data)
    assert (data / CURRENT / "keep.txt").read_text() == "someone's file"
    assert not (data / EXTRACTS).exists()


UNWRITABLE = """
import json, sys
from pathlib import Path
from tre.data import export_extract
from tre.errors import InputError
from tre.storage import LocalObjectStore

manifest, objects, directory = sys.argv[1:]
try:
    export_extract(json.loads(Path(manifest).read_text()), LocalObjectStore(Path(objects)), Path(directory))
except InputError as error:
    print(error)
    sys.exit(1)
"""


def without_privilege(command: list[str]) -> list[str]:
    """Run as root without the capabilities that override file permissions (or as is, when not root)."""
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("setpriv (util-linux) is needed to drop root's permission overrides")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps", "-all", "--", *command]


def test_a_directory_it_may_not_write_is_refused_in_one_line(
    approved: Tre, objects: LocalObjectStore, tmp_path: Path
) -> None:
    manifest = provision(approved)
    document = tmp_path / "manifest.json"
    document.write_text(json.dumps(manifest))
    data = tmp_path / "data"
    data.mkdir(mode=0o555)
    data.chmod(0o555)
    command = without_privilege([sys.executable, "-c", UNWRITABLE, str(document), str(objects.root), str(data)])
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 1, result.stderr
    assert result.stdout.strip() == (
        f"cannot write the extract to {data} (Permission denied); mount the data volume writable for this user "
        "(the Job's fsGroup) or choose another directory"
    )
    assert list(data.iterdir()) == []


def test_a_file_in_place_of_the_directory_is_refused(approved: Tre, objects: ObjectStore, tmp_path: Path) -> None:
    manifest = provision(approved)
    (tmp_path / "data").write_text("not a directory")
    with pytest.raises(InputError, match="is not a directory; give --to a directory"):
        export_extract(manifest, objects, tmp_path / "data")
    with pytest.raises(InputError, match="is not a directory; give --to a directory"):
        export_extract(manifest, objects, tmp_path / "data" / "below")


# ---- the command ---------------------------------------------------------------------------------------------------


def test_tre_provision_to_provisions_then_publishes(approved: Tre, tmp_path: Path) -> None:
    data = tmp_path / "volume"
    out = ok(approved, "provision", NAME, "--to", str(data))
    manifest = json.loads(ok(approved, "data", "manifest", NAME, "--output", "json"))
    lines = out.splitlines()
    assert lines[-1] == (
        f"{NAME}: extract {manifest['extract']} copied to {data / CURRENT} "
        f"(1 files, {manifest['datasets'][0]['file']['bytes']} bytes)"
    )
    assert_complete(data, manifest)
    audit = [json.loads(line) for line in ok(approved, "audit", "export", "--project", NAME).splitlines()]
    assert [e["action"] for e in audit][-2:] == ["data.provisioned", "data.exported"]
    assert audit[-1]["target"] == manifest["extract"]
    assert audit[-1]["details"] == {"directory": str(data), "copied": True, "removed": []}
    again = ok(approved, "provision", NAME, "--to", str(data))  # the Job retried: a new extract replaces the old
    newer = json.loads(ok(approved, "data", "manifest", NAME, "--output", "json"))
    assert f"extract {newer['extract']} copied to" in again
    assert_complete(data, newer)
    assert entries(data / EXTRACTS) == [newer["extract"]]


def test_tre_provision_to_refuses_bad_targets_before_provisioning(approved: Tre, tmp_path: Path) -> None:
    assert_refused(approved("provision", "--stale", "--to", str(tmp_path)), "give a PROJECT instead of --stale")
    (tmp_path / "file").write_text("x")
    assert_refused(approved("provision", NAME, "--to", str(tmp_path / "file")), "is not a directory")
    (tmp_path / "taken" / CURRENT).mkdir(parents=True)
    assert_refused(approved("provision", NAME, "--to", str(tmp_path / "taken")), "is not a symlink")
    assert_refused(approved("data", "manifest", NAME), "has no extract yet")  # refused before the pipeline ran
