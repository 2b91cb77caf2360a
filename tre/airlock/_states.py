"""The airlock request lifecycle: every state, who owns it, and every allowed transition, in one place."""

from __future__ import annotations

from enum import StrEnum

from tre.errors import ConflictError


class State(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    CHECKING = "checking"
    IN_REVIEW = "in-review"
    RETURNED = "returned"
    APPROVED = "approved"
    RELEASED = "released"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"
    REVOKED = "revoked"


class Owner(StrEnum):
    """Who must act next while a request is in a state."""

    AUTHOR = "author"
    CHECKER = "checker"
    SYSTEM = "system"
    NOBODY = "nobody"


OWNERS: dict[State, Owner] = {
    State.DRAFT: Owner.AUTHOR,
    State.SUBMITTED: Owner.SYSTEM,
    State.CHECKING: Owner.SYSTEM,
    State.IN_REVIEW: Owner.CHECKER,
    State.RETURNED: Owner.AUTHOR,
    State.APPROVED: Owner.SYSTEM,
    State.RELEASED: Owner.NOBODY,
    State.REJECTED: Owner.NOBODY,
    State.WITHDRAWN: Owner.NOBODY,
    State.REVOKED: Owner.NOBODY,
}

# Every allowed transition, and who may make it.
VALID_STATE_TRANSITIONS: dict[State, dict[State, Owner]] = {
    State.DRAFT: {State.SUBMITTED: Owner.AUTHOR, State.WITHDRAWN: Owner.AUTHOR},
    State.SUBMITTED: {State.CHECKING: Owner.SYSTEM, State.WITHDRAWN: Owner.AUTHOR},
    State.CHECKING: {State.IN_REVIEW: Owner.SYSTEM},  # failed checks go to checkers too (see _overrides)
    State.IN_REVIEW: {
        State.APPROVED: Owner.SYSTEM,
        State.RETURNED: Owner.SYSTEM,
        State.REJECTED: Owner.SYSTEM,
        State.WITHDRAWN: Owner.AUTHOR,
    },
    State.RETURNED: {State.SUBMITTED: Owner.AUTHOR, State.WITHDRAWN: Owner.AUTHOR},
    State.APPROVED: {State.RELEASED: Owner.SYSTEM, State.REVOKED: Owner.CHECKER},
    State.RELEASED: {State.REVOKED: Owner.CHECKER},
    State.REJECTED: {},
    State.WITHDRAWN: {},
    State.REVOKED: {},
}

TERMINAL = frozenset(state for state, targets in VALID_STATE_TRANSITIONS.items() if not targets)


def can_transition(current: State, target: State, by: Owner) -> bool:
    return VALID_STATE_TRANSITIONS[current].get(target) is by


def check_transition(current: State, target: State, by: Owner) -> None:
    """Raise ConflictError unless ``by`` may move a request from ``current`` to ``target``."""
    allowed = VALID_STATE_TRANSITIONS[current]
    if target not in allowed:
        options = ", ".join(sorted(allowed)) or "nothing (it is final)"
        raise ConflictError(f"a {current.value} request cannot become {target.value}; it can become: {options}")
    if allowed[target] is not by:
        raise ConflictError(f"only the {allowed[target].value} moves a request from {current.value} to {target.value}")


def mermaid_diagram() -> str:
    """The lifecycle as a Mermaid state diagram, generated from VALID_STATE_TRANSITIONS."""
    lines = ["stateDiagram-v2", f"    [*] --> {_node(State.DRAFT)}"]
    for source, targets in VALID_STATE_TRANSITIONS.items():
        for target, by in targets.items():
            lines.append(f"    {_node(source)} --> {_node(target)}: {by.value}")
    lines.extend(f"    {_node(state)} --> [*]" for state in sorted(TERMINAL))
    return "\n".join(lines) + "\n"


def _node(state: State) -> str:
    return state.value.replace("-", "_")
