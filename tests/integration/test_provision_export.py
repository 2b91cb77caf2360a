"""``tre provision P --to DIR`` as the cluster's provisioning Job runs it: a real OpenBao, reached with the
project-scoped token that docs/how-to/deploy-kubernetes.md tells the operator to create (the policy is read from
that page, so the page and this test cannot drift apart), the settings in the environment as the Job's Secret
gives them, and the local-directory object store."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac  # type: ignore[import-untyped]
import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import EXAMPLES, REPO, Tre
from tests.integration.conftest import unique
from tests.support import openbao
from tests.support.cli import ok
from tre.clients.vault import VaultClient
from tre.data import sha256_file, write_demo_data
from tre.errors import PermissionDeniedError, TreError

HOW_TO = REPO / "docs" / "how-to" / "deploy-kubernetes.md"
POLICY_LINE = re.compile(r'^path "secret/data/pseudonymisation/\$PROJECT" \{ capabilities = (\[.*\]) \}$', re.M)


def documented_policy(project: str) -> str:
    """The Vault policy the how-to gives the provisioning Job, for ``project``."""
    found = POLICY_LINE.search(HOW_TO.read_text(encoding="utf-8"))
    assert found is not None, f"{HOW_TO} no longer shows the provisioning policy"
    return f'path "secret/data/pseudonymisation/{project}" {{ capabilities = {found.group(1)} }}\n'


@pytest.fixture
def project_name() -> str:
    return unique("export")


@pytest.fixture
def job_token(bao: openbao.OpenBaoServer, project_name: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The how-to's token: an orphan with only the project's provisioning policy, not even ``default``."""
    root = hvac.Client(url=bao.url, token=bao.root_token)
    policy = f"tre-provision-{project_name}"
    root.sys.create_or_update_acl_policy(name=policy, policy=documented_policy(project_name))
    created = root.auth.token.create_orphan(policies=[policy], no_default_policy=True, ttl="768h")
    token = str(created["auth"]["client_token"])
    monkeypatch.setenv("TRE_VAULT_ADDR", bao.url)
    monkeypatch.setenv("TRE_VAULT_TOKEN", token)  # as the Job's Secret gives it (envFrom)
    monkeypatch.delenv("TRE_VAULT_TOKEN_FILE", raising=False)
    yield token
    root.adapter.close()


@pytest.fixture
def approved(tre: Tre, tmp_path: Path, project_name: str) -> Tre:
    files = write_demo_data(tmp_path / "source", rows=1500, seed=3)
    dataset = yaml.safe_load((EXAMPLES / "hospital-episodes.dataset.yaml").read_text())
    dataset["spec"]["location"] = str(files.episodes)
    project = yaml.safe_load((EXAMPLES / "diabetes-outcomes.project.yaml").read_text())
    project["metadata"]["name"] = project_name
    for name, document in (("dataset", dataset), ("project", project)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(document))
    for user in ("alice", "bob"):
        ok(tre, "user", "add", user, "--role", "researcher", "-a", "safe-researcher:2027-06-30")
    ok(tre, "user", "add", "carol", "--role", "approver")
    ok(tre, "dataset", "register", "-f", str(tmp_path / "dataset.yaml"))
    ok(tre, "project", "apply", "-f", str(tmp_path / "project.yaml"))
    ok(tre, "project", "approve", project_name, "--by", "carol", "--reference", "R", "--expires", "2027-01-31",
       "--agreement", "A")  # fmt: skip
    ok(tre, "optout", "import", str(files.optouts))
    return tre


def current_manifest(tre: Tre, project: str) -> dict[str, Any]:
    return json.loads(ok(tre, "data", "manifest", project, "--output", "json"))  # type: ignore[no-any-return]


def test_the_job_provisions_and_publishes_with_only_the_documented_vault_policy(
    approved: Tre, job_token: str, project_name: str, tmp_path: Path
) -> None:
    data = tmp_path / "volume"
    out = ok(approved, "provision", project_name, "--to", str(data))  # the first run creates the project's key
    first = current_manifest(approved, project_name)
    assert f"extract {first['extract']} copied to {data / 'current'}" in out
    (dataset,) = first["datasets"]
    published = data / "current" / "hospital-episodes.parquet"
    assert sha256_file(published) == dataset["file"]["sha256"]
    assert pq.read_metadata(published).num_rows == dataset["rowsWritten"] > 0
    assert json.loads((data / "current" / "manifest.json").read_text()) == first

    ok(approved, "provision", project_name, "--to", str(data))  # the Job again: the key is read, not made again
    second = current_manifest(approved, project_name)
    assert second["keyVersion"] == first["keyVersion"] == 1
    assert (data / "current").readlink() == Path("extracts", second["extract"])
    assert sorted(p.name for p in (data / "extracts").iterdir()) == [second["extract"]]


def test_the_documented_token_reaches_nothing_else(
    bao: openbao.OpenBaoServer, job_token: str, project_name: str, vault: VaultClient
) -> None:
    vault.pseudonymisation_key(project_name)  # the key exists (made with the root token here)
    other = unique("other")
    vault.pseudonymisation_key(other)
    with VaultClient(bao.url, job_token) as scoped:
        assert scoped.pseudonymisation_key(project_name).version == 1  # its own key: readable
        with pytest.raises(PermissionDeniedError):
            scoped.pseudonymisation_key(other)  # another project's: refused
        with pytest.raises(TreError):
            scoped.rotate_pseudonymisation_key(project_name)  # no update: it cannot replace its key
    assert vault.pseudonymisation_key(project_name).version == 1
