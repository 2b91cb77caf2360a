"""The airlock's pure core: transitions, review rules, blind voting, file names, and the release invariant."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.conftest import REPO
from tre.airlock import (
    TERMINAL,
    VALID_STATE_TRANSITIONS,
    Ballot,
    Decision,
    FileKind,
    Flag,
    Override,
    Owner,
    RequestFile,
    State,
    Vote,
    can_transition,
    check_ballot,
    check_file_name,
    check_override,
    check_transition,
    check_user_can_approve,
    check_user_can_review,
    file_decision,
    flags,
    mermaid_diagram,
    missing_overrides,
    request_outcome,
    user_can_review_project,
    visible_ballots,
    visible_overrides,
)
from tre.airlock._checks import Status
from tre.errors import ConflictError, InputError, PermissionDeniedError
from tre.spec import ProjectSpec, Role, User

PROJECT = ProjectSpec(
    title="t",
    lay_summary="l",
    organisation="o",
    purpose="p",
    public_benefit="b",
    legal_basis="x",
    lead="alice",
    members=["bob", "mallory"],
)
USERS = {
    "alice": User(name="alice", roles=frozenset({Role.RESEARCHER})),
    "bob": User(name="bob", roles=frozenset({Role.RESEARCHER})),
    "mallory": User(name="mallory", roles=frozenset({Role.RESEARCHER, Role.OUTPUT_CHECKER})),  # member and checker
    "olive": User(name="olive", roles=frozenset({Role.OUTPUT_CHECKER})),
    "oscar": User(name="oscar", roles=frozenset({Role.OUTPUT_CHECKER})),
    "otto": User(name="otto", roles=frozenset({Role.OUTPUT_CHECKER})),
    "eve": User(name="eve", roles=frozenset({Role.RESEARCHER})),  # not a member, not a checker
}


@pytest.mark.parametrize(
    ("current", "target", "by"), list(itertools.product(State, State, Owner)), ids=lambda v: getattr(v, "value", v)
)
def test_every_transition_is_decided_by_the_map(current: State, target: State, by: Owner) -> None:
    allowed = VALID_STATE_TRANSITIONS[current].get(target) is by
    assert can_transition(current, target, by) is allowed
    if allowed:
        check_transition(current, target, by)
    else:
        with pytest.raises(ConflictError):
            check_transition(current, target, by)


def test_terminal_states_and_reachability() -> None:
    assert {State.REJECTED, State.WITHDRAWN, State.REVOKED} == TERMINAL
    reached, frontier = {State.DRAFT}, [State.DRAFT]
    while frontier:
        for target in VALID_STATE_TRANSITIONS[frontier.pop()]:
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(State)
    assert State.RELEASED not in VALID_STATE_TRANSITIONS[State.IN_REVIEW]  # release only after approval


def test_state_diagram_in_docs_matches_the_code() -> None:
    document = (REPO / "docs" / "reference" / "airlock-states.md").read_text()
    assert f"```mermaid\n{mermaid_diagram()}```" in document, "regenerate: python -m tre.airlock"


@pytest.mark.parametrize(
    ("votes", "expected"),
    [
        ({}, Decision.PENDING),
        ({"a": Vote.APPROVE}, Decision.PENDING),
        ({"a": Vote.APPROVE, "b": Vote.APPROVE}, Decision.APPROVED),
        ({"a": Vote.APPROVE, "b": Vote.REJECT}, Decision.PENDING),  # disagreement: a third checker is needed
        ({"a": Vote.APPROVE, "b": Vote.REJECT, "c": Vote.APPROVE}, Decision.APPROVED),
        ({"a": Vote.APPROVE, "b": Vote.REJECT, "c": Vote.REJECT}, Decision.REJECTED),
        ({"a": Vote.CHANGES, "b": Vote.CHANGES}, Decision.CHANGES),
        ({"a": Vote.APPROVE, "b": Vote.REJECT, "c": Vote.CHANGES}, Decision.CHANGES),
    ],
)
def test_file_decisions(votes: dict[str, Vote], expected: Decision) -> None:
    assert file_decision(votes) is expected


def _files(*kinds: FileKind) -> list[RequestFile]:
    return [RequestFile(f"f{i}.csv", kind, "0" * 64, 1) for i, kind in enumerate(kinds)]


def test_request_outcome_needs_every_output_approved() -> None:
    files = _files(FileKind.OUTPUT, FileKind.OUTPUT, FileKind.SUPPORTING)
    approve = [Ballot(c, f, Vote.APPROVE) for c in ("olive", "oscar") for f in ("f0.csv", "f1.csv")]
    assert request_outcome(files, approve[:3]) is None
    assert request_outcome(files, approve) is State.APPROVED
    reject_one = [
        *approve[:1],
        *approve[2:3],
        Ballot("olive", "f1.csv", Vote.REJECT, "x"),
        Ballot("oscar", "f1.csv", Vote.REJECT, "x"),
    ]
    assert request_outcome(files, reject_one) is State.RETURNED
    reject_all = [Ballot(c, f, Vote.REJECT, "x") for c in ("olive", "oscar") for f in ("f0.csv", "f1.csv")]
    assert request_outcome(files, reject_all) is State.REJECTED
    assert request_outcome(_files(FileKind.SUPPORTING), approve) is None  # nothing to release


FAIL_T = Flag("f0.csv", "threshold", Status.FAIL)
REVIEW_E = Flag("f0.csv", "evidence", Status.REVIEW)


def test_only_fail_and_review_results_need_an_override() -> None:
    results = [
        ("f0.csv", "threshold", Status.FAIL),
        ("f0.csv", "evidence", Status.REVIEW),
        ("f0.csv", "size", Status.PASS),
    ]
    assert flags(results) == {FAIL_T, REVIEW_E}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (Override("olive", "f0.csv", "threshold", ""), "needs a rationale"),
        (Override("olive", "f0.csv", "threshold", " \n\t"), "needs a rationale"),
        (Override("olive", "f0.csv", "threshold", "x" * 2001), "at most 2000 characters"),
        (
            Override("olive", "f0.csv", "size", "fine"),
            "rule size did not flag f0.csv; its flagged rules are: evidence, threshold",
        ),
        (Override("olive", "f1.csv", "threshold", "fine"), "its flagged rules are: none"),
    ],
)
def test_an_override_needs_a_rationale_and_a_flagged_rule(override: Override, message: str) -> None:
    with pytest.raises(InputError, match=message):
        check_override(override, {FAIL_T, REVIEW_E})
    assert check_override(Override("olive", "f0.csv", "threshold", "x" * 2000), {FAIL_T}) == FAIL_T


def test_an_approval_counts_only_with_the_approvers_own_overrides() -> None:
    files, flagged = _files(FileKind.OUTPUT), {FAIL_T, REVIEW_E}
    approve = [Ballot("olive", "f0.csv", Vote.APPROVE), Ballot("oscar", "f0.csv", Vote.APPROVE)]
    olive = [
        Override("olive", "f0.csv", "threshold", "published figure"),
        Override("olive", "f0.csv", "evidence", "ok"),
    ]
    assert request_outcome(files, approve) is State.APPROVED  # without flags, two approvals decide
    assert request_outcome(files, approve, flagged) is None
    assert request_outcome(files, approve, flagged, olive) is None  # olive's overrides do not stand for oscar
    assert missing_overrides("oscar", "f0.csv", flagged, olive) == ["evidence", "threshold"]
    with pytest.raises(ConflictError, match="need your override before you approve it: evidence, threshold"):
        check_user_can_approve("oscar", "f0.csv", flagged, olive)
    oscar = [Override("oscar", "f0.csv", "threshold", "agreed"), Override("oscar", "f0.csv", "evidence", "  ")]
    assert request_outcome(files, approve, flagged, olive + oscar) is None  # a blank rationale is no override
    oscar[1] = Override("oscar", "f0.csv", "evidence", "agreed")
    assert request_outcome(files, approve, flagged, olive + oscar) is State.APPROVED


def test_overrides_are_as_blind_as_votes() -> None:
    mine = Override("olive", "f0.csv", "threshold", "published figure")
    ballots = [Ballot("olive", "f0.csv", Vote.APPROVE)]
    assert visible_overrides([mine], ballots, "olive", is_checker=True) == [mine]
    assert visible_overrides([mine], ballots, "oscar", is_checker=True) == []
    ballots.append(Ballot("oscar", "f0.csv", Vote.CHANGES, "no"))
    assert visible_overrides([mine], ballots, "oscar", is_checker=True) == [mine]
    assert visible_overrides([mine], ballots, "alice", is_checker=False) == []


def test_review_is_blind_until_two_votes_are_in() -> None:
    ballots = [Ballot("olive", "f0.csv", Vote.APPROVE)]
    assert visible_ballots(ballots, "oscar", is_checker=True) == []
    assert visible_ballots(ballots, "olive", is_checker=True) == ballots
    ballots.append(Ballot("oscar", "f0.csv", Vote.CHANGES, "round to 5", shared_with_author=True))
    assert len(visible_ballots(ballots, "olive", is_checker=True)) == 2
    assert visible_ballots(ballots, "otto", is_checker=True) == []  # has not voted on it
    author_view = visible_ballots(ballots, "alice", is_checker=False)
    assert [(b.checker, b.comment) for b in author_view] == [("", "round to 5")]


def test_votes_other_than_approve_need_a_comment() -> None:
    check_ballot(Ballot("olive", "f", Vote.APPROVE))
    for vote in (Vote.CHANGES, Vote.REJECT):
        with pytest.raises(InputError, match="needs a comment"):
            check_ballot(Ballot("olive", "f", vote, "  "))


@pytest.mark.parametrize(
    ("reviewer", "author", "message"),
    [
        ("alice", "alice", "does not have the output-checker role"),
        ("mallory", "bob", "is a member of the project"),
        ("eve", "bob", "does not have the output-checker role"),
    ],
)
def test_only_independent_checkers_review(reviewer: str, author: str, message: str) -> None:
    with pytest.raises(PermissionDeniedError, match=message):
        check_user_can_review(USERS[reviewer], PROJECT, author)
    check_user_can_review(USERS["olive"], PROJECT, "bob")


def test_a_checker_cannot_review_their_own_request() -> None:
    checker_author = User(name="olive", roles=frozenset({Role.OUTPUT_CHECKER, Role.RESEARCHER}))
    with pytest.raises(PermissionDeniedError, match="wrote this request"):
        check_user_can_review(checker_author, PROJECT, "olive")


@pytest.mark.parametrize(
    "name",
    [
        "../etc/passwd",
        "a/b.csv",
        "/abs.csv",
        "..",
        ".",
        ".hidden",
        "",
        "x" * 201,
        "a\\b",
        "tab\tname",
        "ünï.csv",
        "\uff46\uff55\uff4c\uff4c.csv",  # full-width look-alikes
        "CITATION.txt",
        "decision.json",
        "nul\x00.csv",
        "-rf",
    ],
)
def test_unsafe_file_names_are_refused(name: str) -> None:
    with pytest.raises(InputError):
        check_file_name(name)


@pytest.mark.parametrize("name", ["table 1.csv", "fig_2.png", "model(a)+b=c.txt", "Results-v2.md"])
def test_plain_file_names_are_accepted(name: str) -> None:
    assert check_file_name(name) == name


# ---- the release invariant, under random actions by random users ---------------------------------------------------


RULES = ["threshold", "identifiers", "evidence"]


@dataclass
class Model:
    """A request as the pure core sees it."""

    author: str = "alice"
    state: State = State.DRAFT
    files: list[RequestFile] = field(default_factory=list)
    ballots: list[Ballot] = field(default_factory=list)
    flagged: frozenset[Flag] = frozenset()  # the automated fails and reviews of this round
    overrides: list[Override] = field(default_factory=list)
    released_with: tuple[list[Ballot], frozenset[Flag], list[Override]] | None = None


class AirlockMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.request = Model()

    def _move(self, target: State, by: Owner) -> bool:
        if not can_transition(self.request.state, target, by):
            return False
        check_transition(self.request.state, target, by)
        self.request.state = target
        return True

    @rule(kind=st.sampled_from(FileKind), number=st.integers(0, 1))
    def add_file(self, kind: FileKind, number: int) -> None:
        if self.request.state in (State.DRAFT, State.RETURNED):
            self.request.files = [f for f in self.request.files if f.name != f"f{number}.csv"]
            self.request.files.append(RequestFile(f"f{number}.csv", kind, "0" * 64, 1))

    @rule(results=st.sets(st.tuples(st.integers(0, 1), st.sampled_from(RULES), st.sampled_from(Status))))
    def submit(self, results: set[tuple[int, str, Status]]) -> None:
        """The automated checks say what they say; the request goes to review regardless."""
        if self.request.files and self._move(State.SUBMITTED, Owner.AUTHOR):
            self.request.ballots, self.request.overrides = [], []  # a new round
            self.request.flagged = flags((f"f{n}.csv", rule, status) for n, rule, status in results)
            self._move(State.CHECKING, Owner.SYSTEM)
            self._move(State.IN_REVIEW, Owner.SYSTEM)

    @rule(
        user=st.sampled_from(["olive", "oscar", "otto", "mallory", "alice"]),
        number=st.integers(0, 1),
        rule_=st.sampled_from(RULES),
        rationale=st.sampled_from(["published figure", "", "  ", "rounded to 5"]),
    )
    def override(self, user: str, number: int, rule_: str, rationale: str) -> None:
        if self.request.state is not State.IN_REVIEW:
            return
        try:
            check_user_can_review(USERS[user], PROJECT, self.request.author)
            override = Override(user, f"f{number}.csv", rule_, rationale)
            check_override(override, self.request.flagged)
        except (PermissionDeniedError, InputError):
            return
        self.request.overrides.append(override)

    @rule(
        user=st.sampled_from(["olive", "oscar", "otto", "mallory", "alice", "eve"]),
        number=st.integers(0, 1),
        vote=st.sampled_from([Vote.APPROVE, Vote.APPROVE, Vote.APPROVE, Vote.CHANGES, Vote.REJECT]),
    )
    def vote(self, user: str, number: int, vote: Vote) -> None:
        if self.request.state is not State.IN_REVIEW:
            return
        try:
            check_user_can_review(USERS[user], PROJECT, self.request.author)
        except PermissionDeniedError:
            return
        # No vote-time refusal here: an approval without overrides is recorded, and request_outcome must not count it.
        self.request.ballots.append(Ballot(user, f"f{number}.csv", vote, "because"))
        request = self.request
        outcome = request_outcome(request.files, request.ballots, request.flagged, request.overrides)
        if outcome is not None:
            self._move(outcome, Owner.SYSTEM)

    @precondition(lambda self: self.request.state is State.APPROVED)
    @rule()
    def release(self) -> None:
        request = self.request
        request.released_with = (list(request.ballots), request.flagged, list(request.overrides))
        self._move(State.RELEASED, Owner.SYSTEM)

    @precondition(lambda self: len(self.request.ballots) >= 3 or self.request.state is State.RETURNED)
    @rule()
    def withdraw(self) -> None:
        self._move(State.WITHDRAWN, Owner.AUTHOR)

    @rule(user=st.sampled_from(sorted(USERS)))
    def revoke(self, user: str) -> None:
        if user_can_review_project(USERS[user], PROJECT):
            self._move(State.REVOKED, Owner.CHECKER)

    @invariant()
    def approved_means_two_independent_approvals_per_output(self) -> None:
        """Every output file: two eligible checkers whose latest vote approves it and who each overrode, with a
        rationale, every automated fail or review on it (so nothing flagged leaves without a recorded reason)."""
        if self.request.state not in (State.APPROVED, State.RELEASED):
            return
        request = self.request
        ballots, flagged, overrides = request.released_with or (request.ballots, request.flagged, request.overrides)
        outputs = [f for f in request.files if f.kind is FileKind.OUTPUT]
        assert outputs
        for file in outputs:
            latest = {b.checker: b.vote for b in ballots if b.file == file.name}
            needed = {f.rule for f in flagged if f.file == file.name}
            approvers = set()
            for checker, vote in latest.items():
                done = {
                    o.rule for o in overrides if (o.checker, o.file) == (checker, file.name) and o.rationale.strip()
                }
                if vote is Vote.APPROVE and needed <= done:
                    approvers.add(checker)
            assert len(approvers) >= 2, (file.name, latest, needed, overrides)
            assert all(user_can_review_project(USERS[c], PROJECT) for c in approvers)
            assert self.request.author not in approvers


TestAirlockMachine = AirlockMachine.TestCase
TestAirlockMachine.settings = settings(max_examples=300, stateful_step_count=25, deadline=None)


def test_the_machine_reaches_release_so_its_invariant_is_not_vacuous() -> None:
    machine = AirlockMachine()
    machine.add_file(kind=FileKind.OUTPUT, number=0)
    machine.submit(results={(0, "threshold", Status.FAIL), (0, "size", Status.PASS)})
    machine.vote(user="olive", number=0, vote=Vote.APPROVE)
    machine.vote(user="oscar", number=0, vote=Vote.APPROVE)
    assert machine.request.state is State.IN_REVIEW  # two approvals, but no overrides of the failed threshold
    machine.override(user="olive", number=0, rule_="threshold", rationale="published figure")
    machine.override(user="oscar", number=0, rule_="threshold", rationale="  ")  # no rationale: refused
    machine.override(user="mallory", number=0, rule_="threshold", rationale="published figure")  # a member
    machine.vote(user="mallory", number=0, vote=Vote.APPROVE)  # a member: not counted
    machine.vote(user="olive", number=0, vote=Vote.APPROVE)
    assert machine.request.state is State.IN_REVIEW
    machine.override(user="oscar", number=0, rule_="threshold", rationale="agreed")
    machine.vote(user="oscar", number=0, vote=Vote.APPROVE)
    assert machine.request.state is State.APPROVED
    machine.release()
    assert machine.request.state is State.RELEASED
    machine.approved_means_two_independent_approvals_per_output()
