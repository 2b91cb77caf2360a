"""Random actions by random users against the real airlock service and store: the invariants always hold.

The files pass, fail or need review in the disclosure checks (an NHS number, small counts declared as counts, a
numeric table without evidence), so releases need checkers' overrides, and the invariant checks them."""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.integration.test_api import NOW, seed
from tre.airlock import FileKind, State, TableKind, Vote, user_can_review_project
from tre.airlock import service as airlock
from tre.errors import TreError
from tre.services import Actor
from tre.storage import LocalObjectStore
from tre.store import Store, sqlite_url

USERS = ["alice", "bob", "olive", "oscar", "eve", "carol"]
DATA = [
    b"group,n\nA,25\nB,40\n",  # counts that pass when declared a table of counts; otherwise "evidence" review
    b"group,n\nA,3\nB,40\n",  # a count under the threshold when declared; "evidence" review otherwise
    b"x\n",  # text: passes
    b"id\n943 476 5919\n",  # an NHS number: identifiers fail
]
RATIONALES = ["checked against the code", "checked against the code", "", "   "]


class AirlockService(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="airlock-machine-"))
        self.store = Store(sqlite_url(self.tmp / "tre.db"))
        self.store.migrate()
        seed(self.store)
        self.objects = LocalObjectStore(self.tmp / "objects")
        self.requests: list[str] = []
        self.moment = NOW

    def teardown(self) -> None:
        self.store.close()

    def _author_or(self, data: st.DataObject, request_id: str, user: str) -> str:
        """Mostly the request's author (so work progresses), sometimes anyone (so refusals are exercised)."""
        with self.store.transaction(write=False) as unit:
            author = unit.airlock.get(request_id).author  # type: ignore[union-attr]
        return data.draw(st.sampled_from([author, author, author, user]))

    def _act(self, user: str, action: str, *args: object, **kwargs: object) -> None:
        """Run one service action as ``user``; refusals are expected and must change nothing (checked below)."""
        self.moment += dt.timedelta(minutes=1)
        try:
            with self.store.transaction() as unit:
                actor = Actor(user, unit.users.get(user))
                getattr(airlock, action)(unit, actor, *args, now=self.moment, **kwargs)
        except TreError:
            pass

    @precondition(lambda self: len(self.requests) < 2)
    @rule(user=st.sampled_from(["alice", "bob", "alice", "eve"]))
    def create(self, user: str) -> None:
        before = len(self.requests)
        self._act(user, "create_request", "diabetes-outcomes", title="T")
        with self.store.transaction(write=False) as unit:
            self.requests = [r.id for r in unit.airlock.find()]
        assert len(self.requests) in (before, before + 1)

    @precondition(lambda self: self.requests)
    @rule(
        data=st.data(),
        user=st.sampled_from(USERS),
        kind=st.sampled_from([FileKind.OUTPUT, FileKind.OUTPUT, FileKind.CODE]),
        content=st.sampled_from(DATA),
        table=st.sampled_from([None, TableKind.FREQUENCY]),
    )
    def add(self, data: st.DataObject, user: str, kind: FileKind, content: bytes, table: TableKind | None) -> None:
        request_id = data.draw(st.sampled_from(self.requests))
        name = data.draw(st.sampled_from(["t1.csv", "t2.csv"]))
        author = self._author_or(data, request_id, user)
        self._act(author, "add_file", self.objects, request_id, name=name, kind=kind, data=content, table=table)

    @precondition(lambda self: self.requests)
    @rule(data=st.data(), user=st.sampled_from(USERS))
    def submit(self, data: st.DataObject, user: str) -> None:
        request_id = data.draw(st.sampled_from(self.requests))
        self._act(self._author_or(data, request_id, user), "submit", self.objects, request_id)

    @precondition(lambda self: self.requests)
    @rule(
        data=st.data(),
        user=st.sampled_from(["olive", "oscar"] * 3 + ["alice", "bob"]),
        choice=st.sampled_from([Vote.APPROVE] * 5 + [Vote.CHANGES, Vote.REJECT]),
    )
    def vote(self, data: st.DataObject, user: str, choice: Vote) -> None:
        with self.store.transaction(write=False) as unit:
            in_review = [r.id for r in unit.airlock.find() if r.state == State.IN_REVIEW.value]
            request_id = data.draw(st.sampled_from(in_review or self.requests))
            names = [f.name for f in unit.airlock.files(request_id)] or ["t1.csv"]
        name = data.draw(st.sampled_from(names))
        self._act(user, "vote", request_id, file=name, choice=choice, comment="c")

    @precondition(lambda self: self.requests)
    @rule(
        data=st.data(),
        user=st.sampled_from(["olive", "oscar"] * 3 + ["alice", "bob"]),
        rationale=st.sampled_from(RATIONALES),
    )
    def override(self, data: st.DataObject, user: str, rationale: str) -> None:
        """Mostly a rule that flagged the file, sometimes one that did not (refused)."""
        with self.store.transaction(write=False) as unit:
            in_review = [r for r in unit.airlock.find() if r.state == State.IN_REVIEW.value]
            request = data.draw(st.sampled_from(in_review or unit.airlock.find()))
            checks = unit.airlock.checks(request.id, request.round)
        flagged = [(c.file, c.rule) for c in checks if c.status != "pass"] or [("t1.csv", "size")]
        file, rule_ = data.draw(st.sampled_from([*flagged, *flagged, ("t1.csv", "size")]))
        self._act(user, "override", request.id, file=file, rule=rule_, rationale=rationale)

    @precondition(lambda self: self.requests)
    @rule()
    def release(self) -> None:
        airlock.release_approved(self.store, self.objects, now=self.moment)

    @precondition(lambda self: self.requests)
    @rule(data=st.data(), user=st.sampled_from(USERS))
    def withdraw(self, data: st.DataObject, user: str) -> None:
        """Authors give up on returned requests; anyone else trying is refused."""
        with self.store.transaction(write=False) as unit:
            returned = [r.id for r in unit.airlock.find() if r.state == State.RETURNED.value]
        if returned:
            request_id = data.draw(st.sampled_from(returned))
            self._act(self._author_or(data, request_id, user), "withdraw", request_id)

    @invariant()
    def nothing_leaves_without_two_independent_approvals(self) -> None:
        with self.store.transaction(write=False) as unit:
            project = unit.projects.get("diabetes-outcomes").project.spec  # type: ignore[union-attr]
            for request in unit.airlock.find():
                released = list(self.objects.list(airlock.release_prefix(request)))
                if request.state not in (State.APPROVED.value, State.RELEASED.value):
                    assert not released, f"{request.id} is {request.state} but has released files"
                    continue
                outputs = [f.name for f in unit.airlock.files(request.id) if f.kind == FileKind.OUTPUT.value]
                assert outputs
                checks = unit.airlock.checks(request.id, request.round)
                overrides = unit.airlock.overrides(request.id, request.round)
                for name in outputs:
                    latest = {
                        b.checker: b.vote for b in unit.airlock.ballots(request.id, request.round) if b.file == name
                    }
                    flagged = {c.rule for c in checks if c.file == name and c.status != "pass"}
                    assert any(c.file == name for c in checks), "an output released without automated checks"
                    approvers = {
                        c
                        for c, v in latest.items()
                        if v == Vote.APPROVE.value
                        and flagged
                        <= {o.rule for o in overrides if (o.checker, o.file) == (c, name) and o.rationale.strip()}
                    }
                    assert len(approvers) >= 2, (request.id, name, latest, flagged, overrides)
                    assert request.author not in approvers
                    for checker in approvers:
                        assert user_can_review_project(unit.users.get(checker), project)  # type: ignore[arg-type]
                if request.state == State.RELEASED.value:
                    self.self_justifying_decision_record(request)

    def self_justifying_decision_record(self, request: object) -> None:
        """decision.json alone shows, for every released file, two approvers who overrode each fail and review."""
        record = json.loads(self.objects.get_bytes(airlock.release_prefix(request) + "decision.json"))  # type: ignore[arg-type]
        for item in record["files"]:
            flagged = {c["rule"] for c in record["checks"] if c["file"] == item["name"] and c["status"] != "pass"}
            latest = {v["checker"]: v["vote"] for v in record["votes"] if v["file"] == item["name"]}
            covered = [
                checker
                for checker, vote in latest.items()
                if vote == "approve"
                and flagged
                <= {o["rule"] for o in record["overrides"] if (o["checker"], o["file"]) == (checker, item["name"])}
            ]
            assert len(covered) >= 2, (item, record)
            assert all(o["rationale"].strip() for o in record["overrides"])

    @invariant()
    def every_state_change_is_audited_and_the_log_verifies(self) -> None:
        with self.store.transaction(write=False) as unit:
            assert unit.audit.verify().ok
            changes = [e for e in unit.audit.entries() if e.action == "airlock.state-changed"]
            for request in unit.airlock.find():
                mine = [e.details["to"] for e in changes if e.target == request.id]
                assert (mine[-1] if mine else State.DRAFT.value) == request.state


TestAirlockService = AirlockService.TestCase
TestAirlockService.settings = settings(
    max_examples=40, stateful_step_count=60, deadline=None, suppress_health_check=list(HealthCheck)
)


def test_the_machine_releases_flagged_outputs_so_its_invariant_is_not_vacuous() -> None:
    machine = AirlockService()
    try:
        machine._act("alice", "create_request", "diabetes-outcomes", title="T")
        with machine.store.transaction(write=False) as unit:
            (request,) = unit.airlock.find()
        machine.requests = [request.id]
        machine._act(
            "alice", "add_file", machine.objects, request.id, name="t1.csv", kind=FileKind.OUTPUT, data=DATA[1]
        )
        machine._act("alice", "submit", machine.objects, request.id)
        for checker in ("olive", "oscar"):
            machine._act(checker, "vote", request.id, file="t1.csv", choice=Vote.APPROVE)  # refused: not overridden
        with machine.store.transaction(write=False) as unit:
            assert unit.airlock.get(request.id).state == State.IN_REVIEW.value  # type: ignore[union-attr]
            assert unit.airlock.ballots(request.id) == []
        for checker in ("olive", "oscar"):
            machine._act(checker, "override", request.id, file="t1.csv", rule="evidence", rationale=RATIONALES[0])
            machine._act(checker, "vote", request.id, file="t1.csv", choice=Vote.APPROVE)
        machine.release()
        with machine.store.transaction(write=False) as unit:
            assert unit.airlock.get(request.id).state == State.RELEASED.value  # type: ignore[union-attr]
        machine.nothing_leaves_without_two_independent_approvals()
    finally:
        machine.teardown()
