"""Independent review: per-file votes by output checkers, blind until two are in; two agreeing votes decide.

An approve vote counts only with the voter's overrides of every automated fail or review on the file (_overrides).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from tre.airlock._files import FileKind, RequestFile
from tre.airlock._overrides import Flag, Override, user_can_approve
from tre.airlock._states import State
from tre.errors import InputError

VOTES_TO_DECIDE = 2


class Vote(StrEnum):
    APPROVE = "approve"
    CHANGES = "changes"
    REJECT = "reject"


class Decision(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    CHANGES = "changes"
    REJECTED = "rejected"


_DECISION_FOR = {Vote.APPROVE: Decision.APPROVED, Vote.CHANGES: Decision.CHANGES, Vote.REJECT: Decision.REJECTED}


@dataclass(frozen=True)
class Ballot:
    """One checker's vote on one file in one review round."""

    checker: str
    file: str
    vote: Vote
    comment: str | None = None
    shared_with_author: bool = False


def check_ballot(ballot: Ballot) -> None:
    if ballot.vote is not Vote.APPROVE and not (ballot.comment or "").strip():
        raise InputError(f"a '{ballot.vote.value}' vote needs a comment saying what must change or why")


def latest_votes(ballots: Iterable[Ballot]) -> dict[str, dict[str, Vote]]:
    """For each file, each checker's latest vote (a checker may change their mind before the decision)."""
    result: dict[str, dict[str, Vote]] = {}
    for ballot in ballots:
        result.setdefault(ballot.file, {})[ballot.checker] = ballot.vote
    return result


def file_decision(votes: Mapping[str, Vote]) -> Decision:
    """Two checkers casting the same vote decide; disagreement waits for a third. Three different votes: changes."""
    counts = Counter(votes.values())
    agreed = [vote for vote, count in counts.items() if count >= VOTES_TO_DECIDE]
    if agreed:
        return _DECISION_FOR[agreed[0]]
    if len(counts) == len(Vote):
        return Decision.CHANGES
    return Decision.PENDING


def counted_votes(
    ballots: Iterable[Ballot], flagged: Collection[Flag] = (), overrides: Collection[Override] = ()
) -> dict[str, dict[str, Vote]]:
    """Each checker's latest vote per file, leaving out approvals not backed by the checker's own overrides."""
    return {
        file: {
            checker: vote
            for checker, vote in by.items()
            if vote is not Vote.APPROVE or user_can_approve(checker, file, flagged, overrides)
        }
        for file, by in latest_votes(ballots).items()
    }


def request_outcome(
    files: Sequence[RequestFile],
    ballots: Iterable[Ballot],
    flagged: Collection[Flag] = (),
    overrides: Collection[Override] = (),
) -> State | None:
    """The state a reviewed request moves to, or None while any output file is undecided.

    Approved only when every output file is approved (two counted approvals: see ``counted_votes``); otherwise
    returned to the author, unless every output file was rejected, which rejects the request.
    """
    votes = counted_votes(ballots, flagged, overrides)
    decisions = [file_decision(votes.get(f.name, {})) for f in files if f.kind is FileKind.OUTPUT]
    if not decisions or Decision.PENDING in decisions:
        return None
    if all(d is Decision.APPROVED for d in decisions):
        return State.APPROVED
    if all(d is Decision.REJECTED for d in decisions):
        return State.REJECTED
    return State.RETURNED


def visible_ballots(ballots: Sequence[Ballot], viewer: str, *, is_checker: bool) -> list[Ballot]:
    """What ``viewer`` may see: checkers see a file's votes once they have voted on it and two votes are in
    (blind review); the author sees only comments shared with them, never who voted how."""
    if not is_checker:
        return [
            Ballot(checker="", file=b.file, vote=b.vote, comment=b.comment, shared_with_author=True)
            for b in ballots
            if b.shared_with_author and b.comment
        ]
    votes = latest_votes(ballots)
    open_files = {f for f, by in votes.items() if viewer in by and len(by) >= VOTES_TO_DECIDE}
    return [b for b in ballots if b.checker == viewer or b.file in open_files]


def visible_overrides(
    overrides: Sequence[Override], ballots: Sequence[Ballot], viewer: str, *, is_checker: bool
) -> list[Override]:
    """Overrides are as blind as votes: a checker sees their own, and others' on a file once they have voted on it
    and two votes are in; the author sees none until the decision record is released."""
    if not is_checker:
        return []
    votes = latest_votes(ballots)
    open_files = {f for f, by in votes.items() if viewer in by and len(by) >= VOTES_TO_DECIDE}
    return [o for o in overrides if o.checker == viewer or o.file in open_files]
