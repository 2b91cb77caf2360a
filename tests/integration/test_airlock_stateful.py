"""Random actions by random users against the real airlock service and store: the invariants always hold."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.integration.test_api import NOW, seed
from tre.airlock import FileKind, State, Vote, user_can_review_project
from tre.airlock import service as airlock
from tre.errors import TreError
from tre.services import Actor
from tre.storage import LocalObjectStore
from tre.store import Store, sqlite_url

USERS = ["alice", "bob", "olive", "oscar", "eve", "carol"]
DATA = [b"a,b\n1,2\n", b"a,b\n3,4\n", b"x\n"]


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
    )
    def add(self, data: st.DataObject, user: str, kind: FileKind, content: bytes) -> None:
        request_id = data.draw(st.sampled_from(self.requests))
        name = data.draw(st.sampled_from(["t1.csv", "t2.csv"]))
        author = self._author_or(data, request_id, user)
        self._act(author, "add_file", self.objects, request_id, name=name, kind=kind, data=content)

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
                for name in outputs:
                    latest = {
                        b.checker: b.vote for b in unit.airlock.ballots(request.id, request.round) if b.file == name
                    }
                    approvers = {c for c, v in latest.items() if v == Vote.APPROVE.value}
                    assert len(approvers) >= 2, (request.id, name, latest)
                    assert request.author not in approvers
                    for checker in approvers:
                        assert user_can_review_project(unit.users.get(checker), project)  # type: ignore[arg-type]

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
