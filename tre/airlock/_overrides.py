"""Overrides: a checker's recorded judgement, with a rationale, that an automated fail or review may be released.

The rule (docs/explanation/airlock.md, "Overrides"): an approve vote on an output file counts towards its approval
only when the same checker has overridden, in the same review round, every automated result on that file that is
not a pass. So no file whose automated result is fail or review is released unless two eligible checkers approved
it and each of them recorded why, rule by rule. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from tre.airlock._checks import Status
from tre.errors import ConflictError, InputError

MAX_RATIONALE = 2_000
NEEDS_OVERRIDE = frozenset({Status.FAIL, Status.REVIEW})


@dataclass(frozen=True)
class Flag:
    """An automated result on a file that a checker must override before approving it."""

    file: str
    rule: str
    status: Status


@dataclass(frozen=True)
class Override:
    """One checker's override of one rule's result on one file, with the reason."""

    checker: str
    file: str
    rule: str
    rationale: str


def flags(results: Iterable[tuple[str, str, Status]]) -> frozenset[Flag]:
    """The (file, rule, status) results that need an override: every fail and review."""
    return frozenset(Flag(file, rule, Status(status)) for file, rule, status in results if status in NEEDS_OVERRIDE)


def check_override(override: Override, flagged: Collection[Flag]) -> Flag:
    """The flag ``override`` answers; InputError if the rationale is missing or too long, or nothing is flagged."""
    rationale = override.rationale.strip()
    if not rationale:
        raise InputError("an override needs a rationale: say why this result is safe to release")
    if len(override.rationale) > MAX_RATIONALE:
        raise InputError(f"a rationale is at most {MAX_RATIONALE} characters")
    for flag in flagged:
        if (flag.file, flag.rule) == (override.file, override.rule):
            return flag
    on_file = sorted(flag.rule for flag in flagged if flag.file == override.file)
    options = ", ".join(on_file) if on_file else "none: every check on it passed"
    raise InputError(f"rule {override.rule} did not flag {override.file}; its flagged rules are: {options}")


def missing_overrides(checker: str, file: str, flagged: Collection[Flag], overrides: Iterable[Override]) -> list[str]:
    """The rules flagged on ``file`` that ``checker`` has not overridden with a rationale, sorted."""
    done = {o.rule for o in overrides if o.checker == checker and o.file == file and o.rationale.strip()}
    return sorted({flag.rule for flag in flagged if flag.file == file} - done)


def user_can_approve(checker: str, file: str, flagged: Collection[Flag], overrides: Iterable[Override]) -> bool:
    return not missing_overrides(checker, file, flagged, overrides)


def check_user_can_approve(checker: str, file: str, flagged: Collection[Flag], overrides: Iterable[Override]) -> None:
    missing = missing_overrides(checker, file, flagged, overrides)
    if missing:
        raise ConflictError(
            f"{file} has automated results that need your override before you approve it: {', '.join(missing)};"
            f" 'tre airlock override ID --file {file} --rule RULE --rationale WHY' for each"
        )
