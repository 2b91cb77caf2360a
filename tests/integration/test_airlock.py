"""The airlock end to end: requests, automated checks, blind two-checker review, release, revocation, crashes."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLES, REPO, Tre
from tests.support import s3 as s3_support
from tests.support.cli import approve_example, assert_refused, ok
from tre.airlock import FileKind, State, TableKind, Vote
from tre.airlock import service as airlock
from tre.airlock._checks import Status
from tre.clients.s3 import S3Location, S3ObjectStore
from tre.errors import InputError, IntegrityError
from tre.sdc import FileReport, load_rules
from tre.sdc._check_files import FlaggedCell, RuleResult
from tre.services import Actor
from tre.storage import LocalObjectStore, ObjectInfo, ObjectStore
from tre.store import Store, StoredCheck

NAME = "diabetes-outcomes"
TABLE = b"group,count\nA,25\nB,40\n"
FREQUENCY = TableKind.FREQUENCY
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


@pytest.fixture
def tokens(tre: Tre) -> dict[str, str]:
    """Users and their tokens: researchers alice (lead) and bob; checkers olive, oscar, otto; mallory, both a
    member and a checker; eve, a researcher elsewhere; carol, the approver; root, an admin."""
    people = {
        "alice": ["researcher"],
        "bob": ["researcher"],
        "mallory": ["researcher", "output-checker"],
        "olive": ["output-checker"],
        "oscar": ["output-checker"],
        "otto": ["output-checker"],
        "eve": ["researcher"],
        "carol": ["approver"],
        "root": ["admin"],
    }
    for name, roles in people.items():
        ok(tre, "user", "add", name, *[a for r in roles for a in ("--role", r)], "-a", "safe-researcher:2027-06-30")
    ok(tre, "dataset", "register", "-f", str(EXAMPLES / "hospital-episodes.dataset.yaml"))
    return {name: ok(tre, "token", "create", name) for name in people}


@pytest.fixture
def project(tre: Tre, tokens: dict[str, str], tmp_path: Path) -> dict[str, str]:
    declaration = tmp_path / "project.yaml"
    members = "members: [bob, mallory]"  # mallory is a member who is also a checker
    declaration.write_text((EXAMPLES / "diabetes-outcomes.project.yaml").read_text().replace("members: [bob]", members))
    ok(tre, "project", "apply", "-f", str(declaration))
    approve_example(tre)
    return tokens


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def new_request(
    tre: Tre, tokens: dict[str, str], tmp_path: Path, data: bytes = TABLE, name: str = "table1.csv", *extra: str
) -> str:
    """A request with one output (declared a table of counts when it is a CSV) and its code."""
    request_id = ok(
        tre,
        "airlock",
        "create",
        NAME,
        "--title",
        "Table 1",
        "--controls",
        "counts < 10 suppressed",
        token=tokens["alice"],
    )
    declared = ("--table", "frequency") if name.endswith(".csv") else ()
    path = write(tmp_path, name, data)
    ok(tre, "airlock", "add", request_id, path, "--kind", "output", *declared, *extra, token=tokens["alice"])
    ok(
        tre,
        "airlock",
        "add",
        request_id,
        write(tmp_path, "analysis.py", b"print('hi')\n"),
        "--kind",
        "code",
        token=tokens["alice"],
    )
    return request_id


def show(tre: Tre, request_id: str, token: str) -> dict[str, Any]:
    return json.loads(ok(tre, "airlock", "show", request_id, "-o", "json", token=token))  # type: ignore[no-any-return]


def releases(home: Path, request_id: str) -> Path:
    return home / "objects" / "projects" / NAME / "releases" / request_id


def test_walk_through_to_release(tre: Tre, project: dict[str, str], tmp_path: Path, isolated_environment: Path) -> None:
    request_id = new_request(tre, project, tmp_path)
    assert ok(tre, "airlock", "submit", request_id, token=project["alice"]) == f"{request_id}: in-review"
    assert (
        ok(tre, "airlock", "review", request_id, "--file", "table1.csv", "--vote", "approve", token=project["olive"])
        == f"{request_id}: in-review"
    )
    assert show(tre, request_id, project["oscar"])["votes"] == []  # blind until two votes are in
    assert (
        ok(tre, "airlock", "review", request_id, "--file", "table1.csv", "--vote", "approve", token=project["oscar"])
        == f"{request_id}: released"
    )
    released = releases(isolated_environment, request_id)
    assert sorted(p.name for p in released.iterdir()) == ["CITATION.txt", "decision.json", "table1.csv"]
    assert (released / "table1.csv").read_bytes() == TABLE
    assert "collected by the NHS as part of their care and support" in (released / "CITATION.txt").read_text()
    decision = json.loads((released / "decision.json").read_text())
    assert [f["name"] for f in decision["files"]] == ["table1.csv"]  # code is for the checkers, not released
    assert {(v["checker"], v["vote"]) for v in decision["votes"]} == {("olive", "approve"), ("oscar", "approve")}
    assert {c["rule"] for c in decision["checks"]} >= {"file-type", "size", "identifiers"}
    assert show(tre, request_id, project["alice"])["state"] == "released"
    assert_refused(
        tre("airlock", "review", request_id, "--file", "table1.csv", "--vote", "approve", token=project["otto"]),
        "votes are taken only while in review",
    )
    assert ok(tre, "audit", "verify").startswith("audit log intact")
    (entry,) = json.loads(ok(tre, "register", "export"))
    assert entry["released_outputs"] == 1
    ok(tre, "airlock", "revoke", request_id, "--reason", "a cell under 10 was missed", token=project["otto"])
    assert not released.exists()
    assert json.loads(ok(tre, "register", "export"))[0]["released_outputs"] == 0


def test_changes_requested_then_resubmitted(tre: Tre, project: dict[str, str], tmp_path: Path) -> None:
    request_id = new_request(tre, project, tmp_path)
    ok(tre, "airlock", "submit", request_id, token=project["alice"])
    assert_refused(
        tre("airlock", "review", request_id, "--file", "table1.csv", "--vote", "changes", token=project["olive"]),
        "needs a comment",
    )
    for checker in ("olive", "oscar"):
        ok(
            tre,
            "airlock",
            "review",
            request_id,
            "--file",
            "table1.csv",
            "--vote",
            "changes",
            "--comment",
            "round to base 5",
            "--share",
            token=project[checker],
        )
    author_view = show(tre, request_id, project["alice"])
    assert author_view["state"] == "returned"
    assert {v["comment"] for v in author_view["votes"]} == {"round to base 5"}
    assert {v["checker"] for v in author_view["votes"]} == {""}  # the author never learns who voted how
    assert_refused(tre("airlock", "submit", request_id, token=project["alice"]), "unchanged since it was returned")
    ok(
        tre,
        "airlock",
        "add",
        request_id,
        write(tmp_path, "table1.csv", b"group,count\nA,25\nB,40\nC,15\n"),
        "--kind",
        "output",
        "--table",
        "frequency",
        token=project["alice"],
    )
    assert ok(tre, "airlock", "submit", request_id, token=project["alice"]).endswith("in-review")
    assert show(tre, request_id, project["olive"])["round"] == 2
    for checker in ("otto", "oscar"):
        ok(tre, "airlock", "review", request_id, "--file", "table1.csv", "--vote", "approve", token=project[checker])
    assert show(tre, request_id, project["alice"])["state"] == "released"


def zipped() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("inner.csv", "a,b\n")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "rule", "status"),
    [
        ("outputs.zip", b"", "file-type", "fail"),
        ("patients.csv", b"id,nhs\n1,943 476 5919\n", "identifiers", "fail"),
        ("broken.json", b"{not json", "file-type", "fail"),
        ("small.csv", b"group,count\nA,25\nB,4\n", "threshold", "fail"),
        ("figure.bin", b"\x00\x01binary", "file-type", "review"),
    ],
)
def test_failed_checks_reach_the_checkers_and_block_plain_approval(
    tre: Tre, project: dict[str, str], tmp_path: Path, name: str, data: bytes, rule: str, status: str
) -> None:
    request_id = new_request(tre, project, tmp_path, data or zipped(), name)
    assert ok(tre, "airlock", "submit", request_id, token=project["alice"]).endswith("in-review")
    for viewer in ("alice", "olive"):  # the author sees what the checkers will see
        (item,) = [f for f in show(tre, request_id, project[viewer])["files"] if f["name"] == name]
        assert item["status"] == status
        assert {c["rule"]: c["status"] for c in item["checks"]}[rule] == status
    assert "9434765919" not in json.dumps(show(tre, request_id, project["olive"]))
    assert_refused(
        tre("airlock", "review", request_id, "--file", name, "--vote", "approve", token=project["olive"]),
        f"{name} has automated results that need your override before you approve it: ",
        rule,
    )
    assert show(tre, request_id, project["olive"])["votes"] == []


def test_overrides_with_rationale_let_two_checkers_release(
    tre: Tre, project: dict[str, str], tmp_path: Path, isolated_environment: Path
) -> None:
    """An output whose counts fail the threshold is released only after both approving checkers override the
    threshold result with a rationale; the overrides are in show (blind), the audit log, the metrics and
    decision.json."""
    small = b"group,count\nA,25\nB,4\n"
    request_id = new_request(tre, project, tmp_path, small, "small.csv")
    ok(tre, "airlock", "submit", request_id, token=project["alice"])
    (item,) = [f for f in show(tre, request_id, project["olive"])["files"] if f["name"] == "small.csv"]
    (threshold,) = [c for c in item["checks"] if c["rule"] == "threshold"]
    assert threshold["cells"] == [
        {"row": "B", "column": "count", "rule": "threshold", "value": 4, "status": "fail",
         "reason": "fewer than 10 contributors"}
    ]  # fmt: skip
    override = ("airlock", "override", request_id, "--file", "small.csv")
    for args, message in (
        ((*override, "--rule", "threshold", "--rationale", "  "), "needs a rationale"),
        ((*override, "--rule", "zeros", "--rationale", "fine"), "rule zeros did not flag small.csv"),
        (("airlock", "override", request_id, "--file", "nope.csv", "--rule", "x", "--rationale", "y"), "no file"),
    ):
        assert_refused(tre(*args, token=project["olive"]), message)
    for user, message in (("alice", "output-checker role"), ("mallory", "is a member of the project")):
        assert_refused(tre(*override, "--rule", "threshold", "--rationale", "ok", token=project[user]), message)
    why = "B is a published national figure (ONS table 4), not a count of this cohort"
    ok(tre, *override, "--rule", "threshold", "--rationale", why, token=project["olive"])
    ok(tre, "airlock", "review", request_id, "--file", "small.csv", "--vote", "approve", token=project["olive"])
    text = ok(tre, "airlock", "show", request_id, token=project["olive"]).splitlines()
    assert "  small.csv [output] fail: threshold fail" in text
    assert f"  override: olive small.csv threshold: {why}" in text
    assert show(tre, request_id, project["oscar"])["overrides"] == []  # as blind as the votes
    assert show(tre, request_id, project["alice"])["overrides"] == []  # never shown to the author in review
    assert_refused(
        tre("airlock", "review", request_id, "--file", "small.csv", "--vote", "approve", token=project["oscar"]),
        "need your override",  # olive's override does not stand for oscar
    )
    ok(tre, *override, "--rule", "threshold", "--rationale", "agree: external figure", token=project["oscar"])
    assert ok(
        tre, "airlock", "review", request_id, "--file", "small.csv", "--vote", "approve", token=project["oscar"]
    ).endswith("released")
    decision = json.loads((releases(isolated_environment, request_id) / "decision.json").read_text())
    assert [(o["checker"], o["file"], o["rule"], o["status"], o["rationale"]) for o in decision["overrides"]] == [
        ("olive", "small.csv", "threshold", "fail", why),
        ("oscar", "small.csv", "threshold", "fail", "agree: external figure"),
    ]
    assert all(o["at"] for o in decision["overrides"])
    assert decision["rules"]["name"] == "default"
    assert {c["rule"]: c["status"] for c in decision["checks"] if c["file"] == "small.csv"}["threshold"] == "fail"
    assert decision["files"] == [
        {"name": "small.csv", "sha256": hashlib.sha256(small).hexdigest(), "size": len(small), "table": "frequency"}
    ]
    entries = [json.loads(line) for line in ok(tre, "audit", "export", "--project", NAME).splitlines()]
    overridden = [e for e in entries if e["action"] == "airlock.overridden"]
    assert [(e["actor"], e["details"]["rule"], e["details"]["rationale"]) for e in overridden] == [
        ("olive", "threshold", why),
        ("oscar", "threshold", "agree: external figure"),
    ]
    assert ok(tre, "audit", "verify").startswith("audit log intact")


def test_project_rules_are_chosen_by_an_admin_and_apply_from_the_next_submission(
    tre: Tre, project: dict[str, str], tmp_path: Path
) -> None:
    strict = REPO / "policies" / "disclosure" / "strict.yaml"
    assert json.loads(ok(tre, "airlock", "rules", NAME, "-o", "json", token=project["alice"]))["rules"] == (
        load_rules(REPO / "policies" / "disclosure" / "default.yaml").as_dict()
    )
    assert_refused(tre("airlock", "rules", NAME, "--set", str(strict), token=project["olive"]), "an admin may")
    assert_refused(tre("airlock", "rules", NAME, "--set", str(strict), token=project["alice"]), "an admin may")
    shown = json.loads(ok(tre, "airlock", "rules", NAME, "--set", str(strict), "-o", "json", token=project["root"]))
    assert (shown["rules"]["name"], shown["rules"]["threshold"], shown["setBy"]) == ("strict", 20, "root")
    request_id = new_request(tre, project, tmp_path)  # counts of 25 and 40: pass at 10 and at 20
    ok(tre, "airlock", "submit", request_id, token=project["alice"])
    assert show(tre, request_id, project["olive"])["rules"]["threshold"] == 20
    second = new_request(tre, project, tmp_path, b"group,count\nA,25\nB,15\n", "t2.csv")
    ok(tre, "airlock", "submit", second, token=project["alice"])
    (item,) = [f for f in show(tre, second, project["olive"])["files"] if f["name"] == "t2.csv"]
    assert item["status"] == "fail"  # 15 passes the default threshold of 10, not the strict one of 20
    ok(tre, "airlock", "rules", NAME, "--default", token=project["root"])
    assert json.loads(ok(tre, "airlock", "rules", NAME, "-o", "json"))["rules"]["name"] == "default"
    entries = [json.loads(line) for line in ok(tre, "audit", "export", "--project", NAME).splitlines()]
    changes = [e["details"]["rules"] for e in entries if e["action"] == "airlock.rules-set"]
    assert [c if c == "default" else c["name"] for c in changes] == ["strict", "default"]


def test_bad_input_is_refused_and_changes_nothing(tre: Tre, project: dict[str, str], tmp_path: Path) -> None:
    alice = project["alice"]
    request_id = ok(tre, "airlock", "create", NAME, "--title", "T", token=alice)
    table = write(tmp_path, "t.csv", TABLE)
    link = tmp_path / "link.csv"
    link.symlink_to(table)
    before = show(tre, request_id, alice)
    refusals = [
        (
            ("airlock", "add", request_id, table, "--kind", "output", "--name", "../escape.csv"),
            alice,
            "without directories",
        ),
        (
            ("airlock", "add", request_id, table, "--kind", "output", "--name", "/etc/passwd"),
            alice,
            "without directories",
        ),
        (("airlock", "add", request_id, str(link), "--kind", "output"), alice, "symbolic link"),
        (("airlock", "add", request_id, str(tmp_path), "--kind", "output"), alice, "not a regular file"),
        (("airlock", "add", request_id, write(tmp_path, "empty.csv", b""), "--kind", "output"), alice, "is empty"),
        (("airlock", "add", request_id, table, "--kind", "output"), project["bob"], "only the author"),
        (("airlock", "submit", request_id), alice, "has no output file"),
        (("airlock", "show", "ar-000000000000"), alice, "no airlock request ar-000000000000"),
        (("airlock", "show", request_id), project["eve"], f"no airlock request {request_id}"),
        (("airlock", "create", NAME, "--title", "x"), project["eve"], "is not a researcher on project"),
        (("airlock", "create", NAME, "--title", "x"), None, "set TRE_TOKEN"),
        (("airlock", "withdraw", request_id), project["bob"], "only the author"),
    ]
    for args, token, message in refusals:
        assert_refused(tre(*args, token=token), message)
    assert show(tre, request_id, alice)["files"] == before["files"]
    ok(tre, "airlock", "add", request_id, table, "--kind", "output", token=alice)
    ok(tre, "airlock", "submit", request_id, token=alice)
    for checker, message in (
        ("alice", "does not have the output-checker role"),
        ("mallory", "is a member of the project"),
    ):
        assert_refused(
            tre("airlock", "review", request_id, "--file", "t.csv", "--vote", "approve", token=project[checker]),
            message,
        )
    assert_refused(
        tre("airlock", "review", request_id, "--file", "nope.csv", "--vote", "approve", token=project["olive"]),
        "has no file nope.csv",
    )
    assert show(tre, request_id, project["olive"])["votes"] == []
    assert json.loads(ok(tre, "airlock", "list", "-o", "json", token=project["eve"])) == []
    assert [r["id"] for r in json.loads(ok(tre, "airlock", "list", "-o", "json", token=project["otto"]))] == [
        request_id
    ]


def test_views_are_audited(tre: Tre, project: dict[str, str], tmp_path: Path) -> None:
    request_id = new_request(tre, project, tmp_path)
    show(tre, request_id, project["olive"])
    entries = [json.loads(line) for line in ok(tre, "audit", "export", "--project", NAME).splitlines()]
    assert ("olive", "airlock.viewed", request_id) in {(e["actor"], e["action"], e["target"]) for e in entries}


# ---- release is crash-safe, on the local store and on S3 ----------------------------------------------------------


class CrashingStore:
    """Wraps a store and fails the first time a key ending in ``fail_on`` is written, like a crash mid-release."""

    def __init__(self, inner: ObjectStore, fail_on: str) -> None:
        self.inner, self.fail_on, self.failed = inner, fail_on, False

    def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
        if key.endswith(self.fail_on) and not self.failed:
            self.failed = True
            raise RuntimeError("power cut")
        return self.inner.put_bytes(key, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture(params=["local", "moto"])
def objects(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "local":
        yield LocalObjectStore(tmp_path / "objects")
        return
    server = s3_support.start_moto()
    client = s3_support.s3_client(server.endpoint_url, server.access_key, server.secret_key)
    bucket = f"airlock-{uuid.uuid4().hex[:10]}"  # moto keeps buckets across servers in one process
    client.create_bucket(Bucket=bucket)
    yield S3ObjectStore(S3Location(bucket, "tre", server.endpoint_url, access_key="a", secret_key="s"))
    server.stop()


def _approved_request(store: Store, objects: ObjectStore, tre: Tre, project: dict[str, str]) -> str:
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    with store.transaction() as unit:
        actor = Actor("alice", unit.users.get("alice"))
        request = airlock.create_request(unit, actor, NAME, title="T", now=now)
        airlock.add_file(
            unit, actor, objects, request.id, name="t.csv", kind=FileKind.OUTPUT, data=TABLE, now=now, table=FREQUENCY
        )
        airlock.submit(unit, actor, objects, request.id, now=now)
        for checker in ("olive", "oscar"):
            airlock.vote(
                unit, Actor(checker, unit.users.get(checker)), request.id, file="t.csv", choice=Vote.APPROVE, now=now
            )
        assert unit.airlock.get(request.id).state == State.APPROVED.value  # type: ignore[union-attr]
    return request.id


@pytest.mark.parametrize("fail_on", ["t.csv", "CITATION.txt", "decision.json"])
def test_a_crash_during_release_is_completed_exactly_once(
    tre: Tre, project: dict[str, str], isolated_environment: Path, objects: ObjectStore, fail_on: str
) -> None:
    store = Store(f"sqlite+pysqlite:///{isolated_environment / 'tre.db'}")
    request_id = _approved_request(store, objects, tre, project)
    now = dt.datetime(2026, 6, 2, tzinfo=dt.UTC)
    crashing = CrashingStore(objects, fail_on)
    with pytest.raises(RuntimeError, match="power cut"):
        airlock.release(store, crashing, request_id, now=now)  # type: ignore[arg-type]
    with store.transaction(write=False) as unit:
        assert unit.airlock.get(request_id).state == State.APPROVED.value  # type: ignore[union-attr]
    assert airlock.release_approved(store, objects, now=now) == [request_id]
    assert airlock.release(store, objects, request_id, now=now) is False  # already released: nothing happens
    with store.transaction(write=False) as unit:
        assert unit.airlock.get(request_id).state == State.RELEASED.value  # type: ignore[union-attr]
        assert sum(1 for e in unit.audit.entries() if e.action == "airlock.released") == 1
        assert unit.audit.verify().ok
    prefix = f"projects/{NAME}/releases/{request_id}/"
    assert sorted(i.key.removeprefix(prefix) for i in objects.list(prefix)) == [
        "CITATION.txt",
        "decision.json",
        "t.csv",
    ]
    assert objects.get_bytes(prefix + "t.csv") == TABLE
    store.close()


def test_a_file_changed_in_quarantine_blocks_release(
    tre: Tre, project: dict[str, str], isolated_environment: Path, objects: ObjectStore
) -> None:
    store = Store(f"sqlite+pysqlite:///{isolated_environment / 'tre.db'}")
    request_id = _approved_request(store, objects, tre, project)
    with store.transaction(write=False) as unit:
        (item,) = unit.airlock.files(request_id)
    objects.put_bytes(item.object_key, b"group,count\nA,3\n")  # tampered after approval
    with pytest.raises(IntegrityError, match="changed in quarantine"):
        airlock.release(store, objects, request_id, now=dt.datetime(2026, 6, 2, tzinfo=dt.UTC))
    with store.transaction(write=False) as unit:
        assert unit.airlock.get(request_id).state == State.APPROVED.value  # type: ignore[union-attr]
    assert list(objects.list(f"projects/{NAME}/releases/")) == []
    store.close()


def test_acro_outputs_in_a_request_are_checked_with_their_results_json(
    tre: Tre, project: dict[str, str], isolated_environment: Path, tmp_path: Path
) -> None:
    folder = REPO / "tests" / "fixtures" / "check" / "acro_outputs"
    store = Store(f"sqlite+pysqlite:///{isolated_environment / 'tre.db'}")
    objects = LocalObjectStore(tmp_path / "o")
    with store.transaction() as unit:
        alice = Actor("alice", unit.users.get("alice"))
        request = airlock.create_request(unit, alice, NAME, title="ACRO session", now=NOW)
        for name, kind in (("results.json", FileKind.SUPPORTING), ("output_0_0.csv", FileKind.OUTPUT)):
            data = (folder / name).read_bytes()
            airlock.add_file(unit, alice, objects, request.id, name=name, kind=kind, data=data, now=NOW)
        airlock.submit(unit, alice, objects, request.id, now=NOW)
        checks = airlock.check_results(unit.airlock.checks(request.id, 1))
    store.close()
    table = {c["rule"]: c for c in checks if c["file"] == "output_0_0.csv"}
    assert (table["acro"]["status"], table["threshold"]["status"]) == ("fail", "fail")
    assert {(c["row"], c["column"], c["value"]) for c in table["threshold"]["cells"]} == {
        ("East", "female", 1),
        ("East", "male", 2),
    }
    assert {c["evidence"] for c in checks if c["file"] == "output_0_0.csv"} == {"acro"}


def test_every_flagged_cell_has_a_rule_to_override() -> None:
    """Cells claimed under a rule the file's results do not list (ACRO's, a sidecar's) still get a row, so the
    override requirement covers them."""
    claimed = FlaggedCell("East", "F", "PresenceOfLinkedTableCheck", 3, Status.FAIL, "claimed by ACRO")
    report = FileReport("t.csv", Status.FAIL, "acro", (RuleResult("size", Status.PASS, "10 bytes"),), (claimed,))
    rows = airlock.stored_checks(1, "t.csv", report)
    assert [(r.rule, r.status) for r in rows] == [("size", "pass"), ("PresenceOfLinkedTableCheck", "fail")]
    assert json.loads(rows[1].detail)["cells"][0]["value"] == 3


def test_release_re_derives_the_decision_from_votes_checks_and_overrides(
    tre: Tre, project: dict[str, str], isolated_environment: Path, tmp_path: Path
) -> None:
    """A request marked approved whose record does not support it (here a failing result added behind the
    service's back, with no override) is not released."""
    store = Store(f"sqlite+pysqlite:///{isolated_environment / 'tre.db'}")
    objects = LocalObjectStore(tmp_path / "o")
    request_id = _approved_request(store, objects, tre, project)
    with store.transaction() as unit:
        round_ = unit.airlock.get(request_id).round  # type: ignore[union-attr]
        unit.airlock.add_check(request_id, StoredCheck(round_, "t.csv", "threshold", "fail", '{"detail": "x"}'))
    with pytest.raises(IntegrityError, match="do not approve every output file: release is blocked"):
        airlock.release(store, objects, request_id, now=dt.datetime(2026, 6, 2, tzinfo=dt.UTC))
    assert list(objects.list(f"projects/{NAME}/releases/")) == []
    store.close()


def test_oversized_files_are_refused_by_the_service(
    tre: Tre, project: dict[str, str], isolated_environment: Path, tmp_path: Path
) -> None:
    store = Store(f"sqlite+pysqlite:///{isolated_environment / 'tre.db'}")
    objects = LocalObjectStore(tmp_path / "o")
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    with store.transaction() as unit:
        actor = Actor("alice", unit.users.get("alice"))
        request = airlock.create_request(unit, actor, NAME, title="T", now=now)
    with pytest.raises(InputError, match="over the 10-byte limit"), store.transaction() as unit:
        airlock.add_file(
            unit,
            actor,
            objects,
            request.id,
            name="t.csv",
            kind=FileKind.OUTPUT,
            data=TABLE,
            now=now,
            limits=airlock.Limits(max_file_bytes=10),
        )
    store.close()
