"""The ``tre`` command: the README walk-through, refusals, identities, expiry, the register."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLES, Clock, Tre
from tests.support.cli import assert_refused, database_dump, ok

DATASET = str(EXAMPLES / "hospital-episodes.dataset.yaml")
PROJECT = str(EXAMPLES / "diabetes-outcomes.project.yaml")
NAME = "diabetes-outcomes"


def show(tre: Tre, token: str | None = None) -> dict[str, object]:
    return json.loads(ok(tre, "project", "show", NAME, "--output", "json", token=token))  # type: ignore[no-any-return]


def blocker_codes(status: dict[str, object]) -> list[str]:
    return [b["code"] for b in status["blockers"]]  # type: ignore[attr-defined, index]


@pytest.fixture
def seeded(tre: Tre) -> Tre:
    """Users, the example dataset and the example project, applied but not approved."""
    ok(tre, "user", "add", "alice", "--role", "researcher", "--accreditation", "safe-researcher:2027-06-30")
    ok(tre, "user", "add", "bob", "--role", "researcher", "--accreditation", "safe-researcher:2027-06-30")
    ok(tre, "user", "add", "carol", "--role", "approver")
    ok(tre, "user", "add", "dave", "--role", "approver", "--role", "researcher")
    ok(tre, "user", "add", "erin", "--role", "researcher", "-a", "safe-researcher:2027-06-30")
    ok(tre, "user", "add", "root", "--role", "admin")
    ok(tre, "dataset", "register", "-f", DATASET)
    ok(tre, "project", "apply", "-f", PROJECT)
    return tre


APPROVE = ("project", "approve", NAME, "--by", "carol", "--reference", "25/NE/0001", "--agreement", "DSA-1")


def approve(tre: Tre, expires: str = "2027-01-31", *extra: str, token: str | None = None) -> str:
    return ok(tre, *APPROVE, "--expires", expires, *extra, token=token)


def test_walk_through_pending_then_approved(seeded: Tre) -> None:
    status = show(seeded)
    assert status["phase"] == "pending"
    assert blocker_codes(status) == ["no-approval"]

    out = approve(seeded)
    assert "phase approved" in out

    status = show(seeded)
    assert status["phase"] == "approved"
    assert status["blockers"] == []
    assert status["approval"]["reference"] == "25/NE/0001"  # type: ignore[index]
    assert ok(seeded, "project", "apply", "-f", PROJECT).strip() == f"project {NAME} unchanged"
    assert ok(seeded, "audit", "verify").startswith("audit log intact")


def test_apply_reports_what_changed(seeded: Tre, tmp_path: Path) -> None:
    doc = yaml.safe_load(Path(PROJECT).read_text())
    doc["spec"]["title"] = "A new title"
    doc["spec"]["members"] = ["bob", "erin"]
    changed = tmp_path / "project.yaml"
    changed.write_text(yaml.safe_dump(doc))
    assert ok(seeded, "project", "apply", "-f", str(changed)).strip() == f"project {NAME} configured (members, title)"
    assert ok(seeded, "dataset", "register", "-f", DATASET).strip() == "dataset hospital-episodes unchanged"


def test_narrowed_approval_leaves_a_blocker_until_the_request_is_narrowed(seeded: Tre, tmp_path: Path) -> None:
    out = approve(
        seeded,
        "2027-01-31",
        "--columns",
        "hospital-episodes:nhs_number,date_of_birth,sex,diagnosis_code,admission_date,length_of_stay,hba1c",
    )
    assert "phase pending" in out
    assert "postcode" in out
    assert blocker_codes(show(seeded)) == ["columns-not-approved"]
    doc = yaml.safe_load(Path(PROJECT).read_text())
    doc["spec"]["datasets"][0]["columns"].remove("postcode")
    narrowed = tmp_path / "project.yaml"
    narrowed.write_text(yaml.safe_dump(doc))
    ok(seeded, "project", "apply", "-f", str(narrowed))
    assert show(seeded)["phase"] == "approved"


def write_project(tmp_path: Path, **spec_changes: object) -> str:
    doc = yaml.safe_load(Path(PROJECT).read_text())
    doc["spec"].update(spec_changes)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


BAD_INPUT = [
    (("project", "apply", "-f", "{unknown_field}"), ["unknown field 'spec.colour'"]),
    (("project", "apply", "-f", "{bad_name}"), ["metadata.name"]),
    (("project", "apply", "-f", "{not_yaml}"), ["not valid YAML"]),
    (("project", "apply", "-f", "{dataset_file}"), ["expected kind: Project"]),
    (("dataset", "register", "-f", "{not_yaml}"), ["not valid YAML"]),
    (("dataset", "register", "-f", "{missing}"), ["cannot read file"]),
    (("user", "add", "alice", "--role", "researcher"), ["user alice already exists"]),
    (("user", "add", "Alice Smith", "--role", "researcher"), ["user 'Alice Smith'", "name"]),
    (("user", "add", "zed", "--role", "researcher", "-a", "training"), ["--accreditation", "NAME:YYYY-MM-DD"]),
    (("user", "add", "zed", "--role", "researcher", "-a", "t:2027-02-30"), ["'2027-02-30' is not a date"]),
    (("user", "accredit", "nobody", "-a", "t:2027-01-01"), ["no user called nobody"]),
    (("project", "show", "nope"), ["no project called nope"]),
    (("dataset", "show", "nope"), ["no dataset called nope"]),
    (("token", "create", "nobody"), ["no user called nobody"]),
    ((*APPROVE[:4], "bob", *APPROVE[5:], "--expires", "2027-01-31"), ["bob does not have the approver role"]),
    ((*APPROVE[:4], "dave", *APPROVE[5:], "--expires", "2027-01-31"), []),  # dave is independent: accepted
    ((*APPROVE[:4], "nobody", *APPROVE[5:], "--expires", "2027-01-31"), ["no user called nobody"]),
    ((*APPROVE, "--expires", "2026-05-31"), ["expiry date 2026-05-31 is in the past"]),
    ((*APPROVE, "--expires", "next year"), ["--expires: 'next year' is not a date"]),
    ((*APPROVE, "--expires", "2027-01-31", "--decided", "2026-07-01"), ["decision date 2026-07-01 is in the future"]),
    ((*APPROVE, "--expires", "2027-01-31", "--columns", "other:a"), ["does not request"]),
    ((*APPROVE, "--expires", "2027-01-31", "--columns", "hospital-episodes"), ["not of the form DATASET:col,col"]),
    ((*APPROVE, "--expires", "2027-01-31", "--columns", "hospital-episodes:patient_name"), ["did not request"]),
    (("project", "approve", "nope", *APPROVE[3:], "--expires", "2027-01-31"), ["no project called nope"]),
]


@pytest.mark.parametrize(("args", "fragments"), BAD_INPUT)
def test_bad_input_is_refused_in_one_line_and_changes_nothing(
    seeded: Tre, isolated_environment: Path, tmp_path: Path, args: tuple[str, ...], fragments: list[str]
) -> None:
    files = {
        "unknown_field": write_project(tmp_path, colour="blue"),
        "bad_name": str(_bad_name(tmp_path)),
        "not_yaml": str(_write(tmp_path / "broken.yaml", "spec: [\n")),
        "dataset_file": DATASET,
        "missing": str(tmp_path / "absent.yaml"),
    }
    args = tuple(a.format(**files) for a in args)
    before = database_dump(isolated_environment)
    result = seeded(*args)
    if not fragments:
        assert result.exit_code == 0, result.stderr
        return
    assert_refused(result, *fragments)
    assert database_dump(isolated_environment) == before


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _bad_name(tmp_path: Path) -> Path:
    doc = yaml.safe_load(Path(PROJECT).read_text())
    doc["metadata"]["name"] = "Bad_Name"
    return _write(tmp_path / "bad-name.yaml", yaml.safe_dump(doc))


def test_approver_who_is_a_member_is_refused(seeded: Tre, isolated_environment: Path, tmp_path: Path) -> None:
    doc = yaml.safe_load(Path(PROJECT).read_text())
    doc["spec"]["members"] = ["bob", "dave"]
    ok(seeded, "project", "apply", "-f", str(_write(tmp_path / "p.yaml", yaml.safe_dump(doc))))
    before = database_dump(isolated_environment)
    result = seeded(*APPROVE[:4], "dave", *APPROVE[5:], "--expires", "2027-01-31")
    assert_refused(result, "dave is a member of this project", "independent")
    assert database_dump(isolated_environment) == before


@pytest.mark.parametrize(
    "args",
    [
        ("project", "apply"),
        ("user", "add", "zed", "--role", "wizard"),
        ("project", "list", "--output", "xml"),
        ("register", "export", "--format", "pdf"),
        ("schema", "workspace"),
        ("no-such-command",),
    ],
)
def test_usage_errors_exit_2(tre: Tre, args: tuple[str, ...]) -> None:
    assert tre(*args).exit_code == 2


# ---- identities --------------------------------------------------------------------------------------------------


@pytest.fixture
def tokens(seeded: Tre) -> dict[str, str]:
    return {name: ok(seeded, "token", "create", name).strip() for name in ("alice", "bob", "carol", "erin", "root")}


def test_tokens_are_opaque_and_stored_only_as_digests(
    seeded: Tre, tokens: dict[str, str], isolated_environment: Path
) -> None:
    assert all(t.startswith("tre_") and len(t) > 40 for t in tokens.values())
    dump = "\n".join(database_dump(isolated_environment))
    assert not any(t in dump for t in tokens.values())


def test_invalid_token_is_refused(seeded: Tre) -> None:
    assert_refused(seeded("project", "list", token="tre_forged"), "TRE_TOKEN is not valid")


def test_permissions_follow_roles_and_membership(seeded: Tre, tokens: dict[str, str]) -> None:
    assert_refused(seeded("user", "add", "zed", "--role", "admin", token=tokens["alice"]), "needs the admin role")
    assert_refused(seeded("token", "create", "alice", token=tokens["alice"]), "needs the admin role")
    assert_refused(seeded("audit", "verify", token=tokens["alice"]), "needs the admin role")
    ok(seeded, "user", "add", "zed", "--role", "researcher", token=tokens["root"])
    # the lead may re-apply their own project; another member may not
    ok(seeded, "project", "apply", "-f", PROJECT, token=tokens["alice"])
    assert_refused(seeded("project", "apply", "-f", PROJECT, token=tokens["bob"]), "only its lead or an admin")
    # an approver acts only as themselves
    assert_refused(
        seeded(*APPROVE[:4], "dave", *APPROVE[5:], "--expires", "2027-01-31", token=tokens["carol"]),
        "cannot record an approval on behalf of dave",
    )
    approve(seeded, token=tokens["carol"])
    entries = [json.loads(line) for line in ok(seeded, "audit", "export").splitlines()]
    approvals = [e for e in entries if e["action"] == "project.approved"]
    assert [e["actor"] for e in approvals] == ["carol"]


def test_projects_are_visible_to_members_and_reviewers_only(seeded: Tre, tokens: dict[str, str]) -> None:
    listed = json.loads(ok(seeded, "project", "list", "-o", "json", token=tokens["erin"]))
    assert listed == []
    assert_refused(seeded("project", "show", NAME, token=tokens["erin"]), f"no project called {NAME}")
    for member in ("alice", "bob", "carol"):
        assert [p["name"] for p in json.loads(ok(seeded, "project", "list", "-o", "json", token=tokens[member]))] == [
            NAME
        ]


# ---- time ----------------------------------------------------------------------------------------------------------


def test_expiry_moves_the_project_to_expired_and_is_audited(seeded: Tre, clock: Clock) -> None:
    approve(seeded, "2026-06-30")
    clock.advance(days=29)
    assert show(seeded)["phase"] == "approved"
    clock.advance(days=1)
    status = show(seeded)
    assert status["phase"] == "expired"
    assert "approval-expired" in blocker_codes(status)
    changes = [json.loads(line) for line in ok(seeded, "audit", "export", "--project", NAME).splitlines()]
    phases = [(e["details"]["from"], e["details"]["to"]) for e in changes if e["action"] == "project.phase-changed"]
    assert phases == [("pending", "approved"), ("approved", "expired")]
    assert ok(seeded, "audit", "verify").startswith("audit log intact")


def test_lapsed_accreditation_blocks_and_renewal_unblocks(seeded: Tre, clock: Clock) -> None:
    approve(seeded, "2028-01-31")
    clock.advance(days=395)  # 2027-07-01: alice's and bob's accreditations lapsed on 2027-06-30
    status = show(seeded)
    assert status["phase"] == "pending"
    assert blocker_codes(status) == ["accreditation-expired", "accreditation-expired"]
    ok(seeded, "user", "accredit", "alice", "-a", "safe-researcher:2028-06-30")
    ok(seeded, "user", "accredit", "bob", "-a", "safe-researcher:2028-06-30")
    assert show(seeded)["phase"] == "approved"


# ---- outputs -------------------------------------------------------------------------------------------------------


def test_register_lists_only_approved_projects_in_each_format(seeded: Tre) -> None:
    assert json.loads(ok(seeded, "register", "export", "--format", "json")) == []
    approve(seeded)
    (entry,) = json.loads(ok(seeded, "register", "export"))
    assert entry["project"] == NAME
    assert entry["approval_reference"] == "25/NE/0001"
    assert entry["datasets"] == "hospital-episodes"
    assert not {"lead", "members", "approver"} & set(entry)
    rows = list(csv.DictReader(io.StringIO(ok(seeded, "register", "export", "--format", "csv"))))
    assert rows[0]["title"] == entry["title"]
    page = ok(seeded, "register", "export", "--format", "html")
    assert "<table>" in page
    assert "collected by the NHS as part of their care and support" in page


def test_register_html_escapes_text(seeded: Tre, tmp_path: Path) -> None:
    ok(seeded, "project", "apply", "-f", write_project(tmp_path, title="<script>alert(1)</script>"))
    approve(seeded)
    page = ok(seeded, "register", "export", "--format", "html")
    assert "<script>" not in page
    assert "&lt;script&gt;" in page


def test_register_and_audit_write_files_when_asked(seeded: Tre, tmp_path: Path) -> None:
    approve(seeded)
    ok(seeded, "register", "export", "--format", "csv", "--out", str(tmp_path / "register.csv"))
    ok(seeded, "audit", "export", "--out", str(tmp_path / "audit.jsonl"))
    assert (tmp_path / "register.csv").read_text().startswith("project,title")
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, len(lines) + 1))
    assert not list(tmp_path.glob(".*.partial"))


def test_audit_export_is_itself_audited(seeded: Tre) -> None:
    first = ok(seeded, "audit", "export").splitlines()
    second = ok(seeded, "audit", "export").splitlines()
    assert len(second) == len(first) + 1
    assert json.loads(second[-1])["action"] == "audit.exported"


@pytest.mark.parametrize("kind", ["project", "dataset"])
def test_schema_command(tre: Tre, kind: str) -> None:
    schema = json.loads(ok(tre, "schema", kind))
    assert schema["additionalProperties"] is False
    assert schema["properties"]["kind"]["const"] == kind.capitalize()


def test_list_and_show_as_tables(seeded: Tre) -> None:
    assert NAME in ok(seeded, "project", "list")
    assert "blocker [no-approval]" in ok(seeded, "project", "show", NAME)
    assert "hospital-episodes" in ok(seeded, "dataset", "list")
    assert "nhs_number" in ok(seeded, "dataset", "show", "hospital-episodes")
    assert "alice" in ok(seeded, "user", "list")
    users = json.loads(ok(seeded, "user", "list", "-o", "json"))
    assert {u["name"] for u in users} >= {"alice", "carol"}


def test_relative_dataset_location_is_resolved_against_the_file(seeded: Tre) -> None:
    dataset = json.loads(ok(seeded, "dataset", "show", "hospital-episodes", "-o", "json"))
    assert dataset["spec"]["location"] == str(EXAMPLES / "data" / "hospital-episodes.csv")
