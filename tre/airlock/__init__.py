"""The airlock: the only way anything leaves a workspace. This package is the pure core (states, review rules,
permissions, file names); storage, the HTTP API and release build on it."""

from tre.airlock._files import FileKind, RequestFile, check_file_name
from tre.airlock._permissions import (
    check_user_can_author,
    check_user_can_review,
    check_user_can_revoke,
    check_user_can_view_request,
    user_can_author,
    user_can_review_project,
    user_can_revoke,
    user_can_view_request,
)
from tre.airlock._review import (
    Ballot,
    Decision,
    Vote,
    check_ballot,
    file_decision,
    latest_votes,
    request_outcome,
    visible_ballots,
)
from tre.airlock._states import (
    OWNERS,
    TERMINAL,
    VALID_STATE_TRANSITIONS,
    Owner,
    State,
    can_transition,
    check_transition,
    mermaid_diagram,
)

__all__ = [
    "OWNERS",
    "TERMINAL",
    "VALID_STATE_TRANSITIONS",
    "Ballot",
    "Decision",
    "FileKind",
    "Owner",
    "RequestFile",
    "State",
    "Vote",
    "can_transition",
    "check_ballot",
    "check_file_name",
    "check_transition",
    "check_user_can_author",
    "check_user_can_review",
    "check_user_can_revoke",
    "check_user_can_view_request",
    "file_decision",
    "latest_votes",
    "mermaid_diagram",
    "request_outcome",
    "user_can_author",
    "user_can_review_project",
    "user_can_revoke",
    "user_can_view_request",
    "visible_ballots",
]
