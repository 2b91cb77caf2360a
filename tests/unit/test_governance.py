"""The governance gate: each blocker appears exactly when its rule is broken, and the gate opens only when none is."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import EXAMPLES
from tre.errors import InputError, PermissionDeniedError
from tre.governance import (
    BlockerCode,
    Phase,
    approved_datasets,
    check_approval,
    derive_phase,
    project_blockers,
    redact,
    register_entry,
    user_can_approve,
)
from tre.governance.nhs_number import check_digit, find_nhs_numbers, is_valid_nhs_number
from tre.spec import Accreditation, Approval, Condition, Dataset, Project, Role, User, load

TODAY = dt.date(2026, 6, 1)
DATASET = load(Dataset, EXAMPLES / "hospital-episodes.dataset.yaml")
PROJECT = load(Project, EXAMPLES / "diabetes-outcomes.project.yaml")
REQUESTED = frozenset(PROJECT.spec.datasets[0].columns)


def accredited(name: str, *roles: Role, expires: dt.date = dt.date(2028, 1, 1)) -> User:
    return User(
        name=name,
        roles=frozenset(roles or (Role.RESEARCHER,)),
        accreditations=(Accreditation(name="safe-researcher", expires=expires),),
    )


USERS = {
    "alice": accredited("alice"),
    "bob": accredited("bob"),
    "carol": User(name="carol", roles=frozenset({Role.APPROVER})),
}


def approval(**changes: Any) -> Approval:
    fields: dict[str, Any] = {
        "project": PROJECT.name,
        "approver": "carol",
        "reference": "25/NE/0001",
        "decided": dt.date(2026, 5, 1),
        "expires": dt.date(2027, 5, 1),
        "datasets": approved_datasets(PROJECT.spec, {}),
        "agreement_reference": "DSA-1",
        "agreement_signed": dt.date(2026, 5, 2),
    }
    return Approval(**(fields | changes))


def codes(**changes: Any) -> list[BlockerCode]:
    args: dict[str, Any] = {
        "approval": approval(),
        "datasets": {DATASET.name: DATASET.spec},
        "users": USERS,
        "today": TODAY,
    }
    spec = changes.pop("spec", PROJECT.spec)
    args |= changes
    return [b.code for b in project_blockers(spec, **args)]


def with_request(**changes: Any) -> Any:
    request = PROJECT.spec.datasets[0].model_copy(update=changes)
    return PROJECT.spec.model_copy(update={"datasets": [request]})


def test_fully_approved_project_has_no_blockers() -> None:
    assert codes() == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"approval": None}, [BlockerCode.NO_APPROVAL]),
        ({"today": dt.date(2027, 5, 1)}, []),  # last day in force
        ({"today": dt.date(2027, 5, 2)}, [BlockerCode.APPROVAL_EXPIRED]),  # the day after
        ({"today": dt.date(2026, 4, 30)}, [BlockerCode.APPROVAL_NOT_IN_FORCE, BlockerCode.AGREEMENT_NOT_SIGNED]),
        ({"approval": approval(approver="bob")}, [BlockerCode.APPROVER_IS_MEMBER]),
        ({"approval": approval(agreement_reference=None)}, [BlockerCode.NO_AGREEMENT]),
        ({"approval": approval(agreement_signed=None)}, [BlockerCode.NO_AGREEMENT]),
        ({"approval": approval(agreement_signed=dt.date(2026, 7, 1))}, [BlockerCode.AGREEMENT_NOT_SIGNED]),
        ({"approval": approval(datasets=())}, [BlockerCode.DATASET_NOT_APPROVED]),
        ({"datasets": {}}, [BlockerCode.UNKNOWN_DATASET]),
        ({"users": {k: v for k, v in USERS.items() if k != "bob"}}, [BlockerCode.UNKNOWN_USER]),
        (
            {"users": USERS | {"bob": User(name="bob", roles=frozenset({Role.RESEARCHER}))}},
            [BlockerCode.NOT_ACCREDITED],
        ),
        (
            {"users": USERS | {"bob": accredited("bob", expires=dt.date(2026, 5, 31))}},
            [BlockerCode.ACCREDITATION_EXPIRED],
        ),
        ({"users": USERS | {"bob": accredited("bob", expires=TODAY)}}, []),  # valid through its expiry day
        ({"users": USERS | {"bob": accredited("bob", Role.OUTPUT_CHECKER)}}, [BlockerCode.NOT_A_RESEARCHER]),
    ],
)
def test_each_rule_blocks(changes: dict[str, Any], expected: list[BlockerCode]) -> None:
    assert codes(**changes) == expected


def test_columns_beyond_approval_block() -> None:
    narrowed = approved_datasets(PROJECT.spec, {DATASET.name: REQUESTED - {"postcode"}})
    blockers = project_blockers(
        PROJECT.spec,
        approval=approval(datasets=narrowed),
        datasets={DATASET.name: DATASET.spec},
        users=USERS,
        today=TODAY,
    )
    assert [b.code for b in blockers] == [BlockerCode.COLUMNS_NOT_APPROVED]
    assert "postcode" in blockers[0].message


def test_unknown_columns_and_filter_columns_block() -> None:
    spec = with_request(columns=["sex", "shoe_size"])
    assert BlockerCode.UNKNOWN_COLUMN in codes(spec=spec)
    spec = with_request(filter=[Condition(column="favourite_colour", op="==", value="red")])
    assert BlockerCode.UNKNOWN_COLUMN in codes(spec=spec)


def test_changing_the_filter_after_approval_blocks() -> None:
    widened = with_request(filter=[])
    assert codes(spec=widened) == [BlockerCode.FILTER_NOT_APPROVED]


def unmet() -> list[Any]:
    return project_blockers(PROJECT.spec, approval=None, datasets={}, users={}, today=TODAY)


@pytest.mark.parametrize(
    ("expires_offset", "blocked", "expected"),
    [(-1, False, Phase.EXPIRED), (-1, True, Phase.EXPIRED), (0, False, Phase.APPROVED), (0, True, Phase.PENDING)],
)
def test_phase(expires_offset: int, blocked: bool, expected: Phase) -> None:
    item = approval(expires=TODAY + dt.timedelta(days=expires_offset))
    assert derive_phase(item, unmet() if blocked else [], TODAY) is expected


def test_phase_without_approval_is_pending() -> None:
    assert derive_phase(None, unmet(), TODAY) is Phase.PENDING


# ---- recording an approval -------------------------------------------------------------------------------------


def check(item: Approval, approver: User | None = None) -> None:
    check_approval(
        item, spec=PROJECT.spec, approver=approver or USERS["carol"], datasets={DATASET.name: DATASET.spec}, today=TODAY
    )


def test_valid_approval_passes_checks() -> None:
    check(approval())


def test_approval_by_member_or_non_approver_is_refused() -> None:
    with pytest.raises(PermissionDeniedError, match="does not have the approver role"):
        check(approval(approver="alice"), approver=USERS["alice"])
    member_approver = accredited("bob", Role.RESEARCHER, Role.APPROVER)
    with pytest.raises(PermissionDeniedError, match="is a member of this project"):
        check(approval(approver="bob"), approver=member_approver)
    assert not user_can_approve(member_approver, PROJECT.spec)
    assert user_can_approve(USERS["carol"], PROJECT.spec)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"expires": dt.date(2026, 5, 31)}, "expiry date 2026-05-31 is in the past"),
        ({"decided": dt.date(2026, 6, 2)}, "decision date 2026-06-02 is in the future"),
        ({"agreement_signed": dt.date(2026, 6, 2)}, "agreement signed date 2026-06-02 is in the future"),
    ],
)
def test_approval_dates_are_checked(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        check(approval(**changes))


def test_cannot_approve_more_than_requested_or_unknown_columns() -> None:
    with pytest.raises(InputError, match="does not request"):
        approved_datasets(PROJECT.spec, {"other-dataset": frozenset({"x"})})
    wider = approved_datasets(PROJECT.spec, {DATASET.name: REQUESTED | {"patient_name"}})
    with pytest.raises(InputError, match="did not request: patient_name"):
        check(approval(datasets=wider))


# ---- properties ------------------------------------------------------------------------------------------------

ALL_COLUMNS = sorted(DATASET.spec.column_names)
days = st.integers(min_value=-800, max_value=800).map(lambda n: TODAY + dt.timedelta(days=n))


@given(
    requested=st.sets(st.sampled_from(ALL_COLUMNS), min_size=1),
    approved=st.sets(st.sampled_from(ALL_COLUMNS), min_size=1),
    decided=days,
    expires=days,
    accreditation_expires=days,
    approver=st.sampled_from(["carol", "alice", "bob"]),
)
def test_gate_opens_only_when_every_rule_holds(
    requested: set[str],
    approved: set[str],
    decided: dt.date,
    expires: dt.date,
    accreditation_expires: dt.date,
    approver: str,
) -> None:
    spec = with_request(columns=sorted(requested))
    item = approval(
        datasets=approved_datasets(spec, {DATASET.name: frozenset(approved)}),
        decided=decided,
        expires=expires,
        agreement_signed=decided,
        approver=approver,
    )
    users = USERS | {"bob": accredited("bob", expires=accreditation_expires)}
    blockers = project_blockers(spec, approval=item, datasets={DATASET.name: DATASET.spec}, users=users, today=TODAY)
    every_rule_holds = (
        requested <= approved
        and decided <= TODAY <= expires
        and accreditation_expires >= TODAY
        and approver not in spec.all_members
    )
    assert (blockers == []) == every_rule_holds


# ---- register and identifiers ----------------------------------------------------------------------------------


def test_nhs_number_check_digit() -> None:
    assert is_valid_nhs_number("9434765919")
    assert is_valid_nhs_number("943 476 5919")
    assert is_valid_nhs_number("943-476-5919")
    assert not is_valid_nhs_number("9434765918")
    assert not is_valid_nhs_number("94347659190")
    assert check_digit("000000006") is None  # weighted sum 12, remainder 10: no valid number
    assert find_nhs_numbers("patient 9434765919 and 1234567890") == ["9434765919"]


@given(st.text(alphabet="0123456789", min_size=9, max_size=9))
def test_every_valid_number_has_exactly_one_check_digit(first_nine: str) -> None:
    valid = [d for d in "0123456789" if is_valid_nhs_number(first_nine + d)]
    assert len(valid) == (0 if check_digit(first_nine) is None else 1)


def test_register_entry_redacts_identifiers_and_names_no_people() -> None:
    spec = PROJECT.spec.model_copy(update={"lay_summary": "Ask alice@example.org about patient 943 476 5919."})
    entry = register_entry(PROJECT.name, spec, approval(), released_outputs=3)
    values = " ".join(str(v) for v in entry.as_dict().values())
    assert "9434765919" not in values.replace(" ", "")
    assert "alice@example.org" not in values
    assert "[redacted]" in entry.lay_summary
    for person in ("alice", "bob", "carol"):
        assert person not in values
    assert entry.released_outputs == 3
    assert redact("no identifiers here") == "no identifiers here"
