"""``tre optout import`` and ``tre provision`` end to end: a real OpenBao, the local store and S3 (moto)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import EXAMPLES, Tre
from tests.support import openbao
from tests.support import s3 as s3_support
from tests.support.cli import approve_example, assert_refused, ok
from tests.support.postgres import free_port
from tre.clients.vault import VaultClient
from tre.data import pseudonym, sha256_file, write_demo_data
from tre.data._optout import parse_optout_file

NAME = "diabetes-outcomes"
APPROVED = [
    "nhs_number",
    "date_of_birth",
    "postcode",
    "sex",
    "diagnosis_code",
    "admission_date",
    "length_of_stay",
    "hba1c",
]


@pytest.fixture
def vault_settings(bao: openbao.OpenBaoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> VaultClient:
    token_file = tmp_path / "vault-token"
    token_file.write_text(bao.root_token)
    token_file.chmod(0o600)
    monkeypatch.setenv("TRE_VAULT_ADDR", bao.url)
    monkeypatch.setenv("TRE_VAULT_TOKEN_FILE", str(token_file))
    return VaultClient(bao.url, bao.root_token)


@pytest.fixture
def workspace(tmp_path: Path) -> dict[str, Path]:
    """Demo data and declarations whose locations point at it."""
    files = write_demo_data(tmp_path / "data", rows=3000, seed=7)
    dataset = yaml.safe_load((EXAMPLES / "hospital-episodes.dataset.yaml").read_text())
    dataset["spec"]["location"] = str(files.episodes)
    dataset_file = tmp_path / "dataset.yaml"
    dataset_file.write_text(yaml.safe_dump(dataset))
    return {"dataset": dataset_file, "episodes": files.episodes, "optouts": files.optouts, "root": tmp_path}


@pytest.fixture
def approved(tre: Tre, workspace: dict[str, Path], vault_settings: VaultClient) -> Tre:
    ok(tre, "user", "add", "alice", "--role", "researcher", "-a", "safe-researcher:2027-06-30")
    ok(tre, "user", "add", "bob", "--role", "researcher", "-a", "safe-researcher:2027-06-30")
    ok(tre, "user", "add", "carol", "--role", "approver")
    ok(tre, "dataset", "register", "-f", str(workspace["dataset"]))
    ok(tre, "project", "apply", "-f", str(EXAMPLES / "diabetes-outcomes.project.yaml"))
    approve_example(tre)
    return tre


def manifest(tre: Tre) -> dict[str, Any]:
    return json.loads(ok(tre, "data", "manifest", NAME, "--output", "json"))  # type: ignore[no-any-return]


def extract_rows(document: dict[str, Any]) -> list[dict[str, Any]]:
    (dataset,) = document["datasets"]
    return pq.read_table(dataset["file"]["localPath"]).to_pylist()  # type: ignore[no-any-return]


def opted_out_pseudonyms(vault: VaultClient, optouts: Path, key_version: int) -> set[str]:
    key = vault.pseudonymisation_key(NAME, key_version).key
    return {pseudonym(key, str(n)) for n in parse_optout_file(optouts).numbers.tolist()}


def test_provision_refuses_without_approval_or_opt_outs(
    tre: Tre, workspace: dict[str, Path], vault_settings: VaultClient
) -> None:
    ok(tre, "user", "add", "alice", "--role", "researcher", "-a", "t:2027-06-30")
    ok(tre, "user", "add", "bob", "--role", "researcher", "-a", "t:2027-06-30")
    ok(tre, "dataset", "register", "-f", str(workspace["dataset"]))
    ok(tre, "project", "apply", "-f", str(EXAMPLES / "diabetes-outcomes.project.yaml"))
    assert_refused(tre("provision", NAME), "may not have data", "no review committee approval")
    ok(tre, "user", "add", "carol", "--role", "approver")
    approve_example(tre)
    assert_refused(tre("provision", NAME), "no national data opt-out list")
    assert_refused(tre("data", "manifest", NAME), "has no extract yet")
    assert_refused(tre("provision"), "give a PROJECT, or --stale")


def test_provision_writes_only_approved_pseudonymised_data_without_opt_outs(
    approved: Tre, workspace: dict[str, Path], vault_settings: VaultClient
) -> None:
    out = ok(approved, "optout", "import", str(workspace["optouts"]))
    assert "skipped 2 invalid lines" in out
    ok(approved, "provision", NAME)
    document = manifest(approved)
    (dataset,) = document["datasets"]
    rows = extract_rows(document)
    assert dataset["rowsWritten"] == len(rows) > 0
    assert dataset["rowsRead"] == 3000
    assert dataset["optOutsRemoved"] > 0
    assert dataset["rowsRead"] >= dataset["rowsMatchingFilter"] >= dataset["rowsWritten"]
    assert document["citation"].startswith("This work uses data provided by patients")
    assert document["optOutVersion"] == 1
    assert dataset["source"]["sha256"] == sha256_file(workspace["episodes"])
    assert dataset["file"]["sha256"] == sha256_file(Path(dataset["file"]["localPath"]))
    assert set(rows[0]) == set(APPROVED)
    assert "patient_name" not in set(rows[0])
    forbidden = opted_out_pseudonyms(vault_settings, workspace["optouts"], document["keyVersion"])
    assert not forbidden & {r["nhs_number"] for r in rows}
    assert {r["diagnosis_code"] for r in rows} <= {"E11", "E11.9", "E11.65"}
    assert all(len(r["postcode"] or "") <= 4 for r in rows)
    entries = [json.loads(line) for line in ok(approved, "audit", "export", "--project", NAME).splitlines()]
    assert [e["action"] for e in entries][-1] == "data.provisioned"


def test_new_opt_out_version_makes_extracts_stale_and_reprovisioning_removes_them(
    approved: Tre, workspace: dict[str, Path], vault_settings: VaultClient
) -> None:
    ok(approved, "optout", "import", str(workspace["optouts"]))
    ok(approved, "provision", NAME)
    first = manifest(approved)
    kept = {r["nhs_number"] for r in extract_rows(first)}
    key = vault_settings.pseudonymisation_key(NAME, first["keyVersion"]).key
    # opt out ten more patients who are in the extract
    source_numbers = [line.split(",")[0].strip('"') for line in workspace["episodes"].read_text().splitlines()[1:]]
    newly = [n for n in dict.fromkeys(source_numbers) if n.startswith("999") and pseudonym(key, n) in kept][:10]
    assert len(newly) == 10
    second_list = workspace["root"] / "optouts-v2.txt"
    second_list.write_text(workspace["optouts"].read_text() + "\n".join(newly) + "\n")
    out = ok(approved, "optout", "import", str(second_list))
    assert f"now stale (re-provision with 'tre provision --stale'): {NAME}" in out
    assert "diabetes-outcomes" in ok(approved, "provision", "--stale")
    second = manifest(approved)
    assert second["optOutVersion"] == 2
    assert not {pseudonym(key, n) for n in newly} & {r["nhs_number"] for r in extract_rows(second)}
    assert "no stale projects" in ok(approved, "provision", "--stale")
    # a third extract prunes the first; the previous one stays for running workspaces
    ok(approved, "provision", NAME)
    objects = workspace["root"] / "tre-home" / "objects" / "projects" / NAME / "extracts"
    remaining = sorted(p.name for p in objects.iterdir())
    assert first["extract"] not in remaining
    assert second["extract"] in remaining
    assert len(remaining) == 2


def test_failed_provision_leaves_the_previous_extract_served(
    approved: Tre, workspace: dict[str, Path], vault_settings: VaultClient, isolated_environment: Path
) -> None:
    ok(approved, "optout", "import", str(workspace["optouts"]))
    ok(approved, "provision", NAME)
    before = manifest(approved)
    extracts = isolated_environment / "objects" / "projects" / NAME / "extracts"
    listing = sorted(p.relative_to(extracts) for p in extracts.rglob("*"))
    good = workspace["episodes"].read_text()
    workspace["episodes"].write_text(good.replace("\n", ",extra\n", 3))  # ragged rows: a corrupt CSV
    assert_refused(approved("provision", NAME), "dataset hospital-episodes")
    assert manifest(approved) == before
    assert sorted(p.relative_to(extracts) for p in extracts.rglob("*")) == listing
    assert len(extract_rows(before)) == before["datasets"][0]["rowsWritten"]


def test_missing_columns_and_missing_source_are_refused(
    approved: Tre, workspace: dict[str, Path], vault_settings: VaultClient
) -> None:
    ok(approved, "optout", "import", str(workspace["optouts"]))
    lines = workspace["episodes"].read_text().splitlines()
    workspace["episodes"].write_text("\n".join(",".join(line.split(",")[:-1]) for line in lines) + "\n")
    assert_refused(approved("provision", NAME), "does not match its declaration (missing hba1c)")
    workspace["episodes"].unlink()
    assert_refused(approved("provision", NAME), "does not exist")


def test_vault_unconfigured_or_unreachable_is_refused(
    approved: Tre, workspace: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ok(approved, "optout", "import", str(workspace["optouts"]))
    monkeypatch.setenv("TRE_VAULT_ADDR", f"http://127.0.0.1:{free_port()}")
    assert_refused(approved("provision", NAME), "unreachable")
    monkeypatch.delenv("TRE_VAULT_ADDR")
    assert_refused(approved("provision", NAME), "Vault is not configured")
    assert_refused(approved("data", "manifest", NAME), "has no extract yet")


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "is empty"), ("\n\n", "is empty"), ("hello\n123\n", "none of its 2 lines is a valid NHS number")],
)
def test_bad_opt_out_files_change_nothing(approved: Tre, tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "optouts.txt"
    path.write_text(content)
    assert_refused(approved("optout", "import", str(path)), message)
    assert json.loads(ok(approved, "optout", "list", "-o", "json")) == []


def test_opt_outs_from_a_csv_column(approved: Tre, tmp_path: Path) -> None:
    path = tmp_path / "optouts.csv"
    path.write_text("id,nhs_number\n1,943 476 5919\n2,bad\n")
    assert "1 NHS numbers" in ok(approved, "optout", "import", str(path), "--column", "nhs_number")
    assert_refused(approved("optout", "import", str(path), "--column", "nhs"), "no column 'nhs'")


def test_a_filter_on_an_unknown_column_blocks_provisioning(
    approved: Tre, workspace: dict[str, Path], tmp_path: Path
) -> None:
    doc = yaml.safe_load((EXAMPLES / "diabetes-outcomes.project.yaml").read_text())
    doc["spec"]["datasets"][0]["filter"].append({"column": "favourite_colour", "op": "==", "value": "red"})
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    ok(approved, "project", "apply", "-f", str(path))
    assert_refused(approved("provision", NAME), "no column favourite_colour")


def test_provision_into_s3_from_an_s3_source(
    approved: Tre, workspace: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server = s3_support.start_moto()
    try:
        client = s3_support.s3_client(server.endpoint_url, server.access_key, server.secret_key)
        for bucket in ("tre-extracts", "trust-sources"):
            client.create_bucket(Bucket=bucket)
        client.put_bucket_versioning(Bucket="tre-extracts", VersioningConfiguration={"Status": "Enabled"})
        client.upload_file(str(workspace["episodes"]), "trust-sources", "hes/episodes.csv")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret_key)
        monkeypatch.setenv("TRE_S3_ENDPOINT_URL", server.endpoint_url)
        monkeypatch.setenv("TRE_OBJECT_STORE_URL", "s3://tre-extracts/tre")
        dataset = yaml.safe_load(workspace["dataset"].read_text())
        dataset["spec"]["location"] = "s3://trust-sources/hes/episodes.csv"
        (tmp_path / "s3-dataset.yaml").write_text(yaml.safe_dump(dataset))
        ok(approved, "dataset", "register", "-f", str(tmp_path / "s3-dataset.yaml"))
        ok(approved, "optout", "import", str(workspace["optouts"]))
        ok(approved, "provision", NAME)
        (entry,) = manifest(approved)["datasets"]
        assert entry["file"]["uri"].startswith("s3://tre-extracts/tre/projects/diabetes-outcomes/extracts/")
        assert entry["file"]["localPath"] is None
        assert entry["file"]["versionId"]
        key = entry["file"]["uri"].removeprefix("s3://tre-extracts/")
        local = tmp_path / "from-s3.parquet"
        client.download_file("tre-extracts", key, str(local))
        assert pq.read_table(local).num_rows == entry["rowsWritten"]
    finally:
        server.stop()


def test_key_rotation_changes_every_pseudonym_and_is_audited(
    approved: Tre, workspace: dict[str, Path], vault_settings: VaultClient
) -> None:
    ok(approved, "optout", "import", str(workspace["optouts"]))
    ok(approved, "provision", NAME)
    before = manifest(approved)
    out = ok(approved, "data", "rotate-key", NAME)
    assert f"key now version {before['keyVersion'] + 1}" in out
    ok(approved, "provision", NAME)
    after = manifest(approved)
    assert after["keyVersion"] == before["keyVersion"] + 1
    old, new = {r["nhs_number"] for r in extract_rows(before)}, {r["nhs_number"] for r in extract_rows(after)}
    assert len(old) == len(new)
    assert not old & new
    entries = [json.loads(line) for line in ok(approved, "audit", "export", "--project", NAME).splitlines()]
    rotated = [e for e in entries if e["action"] == "data.key-rotated"]
    assert [(e["details"]["from"], e["details"]["to"]) for e in rotated] == [
        (before["keyVersion"], after["keyVersion"])
    ]
    assert_refused(approved("data", "rotate-key", "no-such-project"), "no project called no-such-project")
