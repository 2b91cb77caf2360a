"""The per-cell disclosure rules: each turns the evidence into a pass, fail or review outcome for every cell."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from tre.sdc._evidence import Evidence, Floats
from tre.sdc._rules import RuleSet

Kind = Literal["frequency", "linear", "other"]
PASS, FAIL, REVIEW = "pass", "fail", "review"
Labels = NDArray[np.str_]

FREQUENCY_FUNCS = frozenset({"count"})
LINEAR_FUNCS = frozenset({"sum", "mean"})
OTHER_FUNCS = frozenset({"median", "std", "min", "max"})


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One rule's outcome for every cell of a grid."""

    rule: str
    parameters: dict[str, Any]
    status: Labels  # "pass", "fail" or "review" per cell
    value: Floats  # the statistic the rule tested, per cell
    reason: Labels  # why the cell did not pass ("" where it passed)


def kind_of(aggfunc: str | None) -> Kind:
    """Frequency tables count records; linear tables (sum, mean) add values up; the rest summarise them."""
    if aggfunc is None or aggfunc in FREQUENCY_FUNCS:
        return "frequency"
    return "linear" if aggfunc in LINEAR_FUNCS else "other"


def evaluate(evidence: Evidence, rules: RuleSet, kind: Kind, *, has_values: bool) -> list[Outcome]:
    """Run every rule that applies to this kind of table."""
    outcomes = [threshold(evidence, rules), zeros(evidence, rules)]
    if kind == "linear":
        outcomes += [dominance(evidence, rules), p_percent(evidence, rules)]
    if has_values and rules.check_missing:
        outcomes.append(missing(evidence))
    return outcomes


def _labels(status: NDArray[np.bool_], text: str, shape: tuple[int, ...], otherwise: str = "") -> Labels:
    return np.where(status, text, otherwise).astype(str).reshape(shape)


def threshold(evidence: Evidence, rules: RuleSet) -> Outcome:
    """Fail a non-empty cell with fewer than ``threshold`` contributors (empty cells are the zeros rule's)."""
    n = evidence.contributors
    fail = (n > 0) & (n < rules.threshold)
    return Outcome(
        rule="threshold",
        parameters={"threshold": rules.threshold},
        status=_labels(fail, FAIL, n.shape, PASS),
        value=n.astype(np.float64),
        reason=_labels(fail, f"fewer than {rules.threshold} contributors", n.shape),
    )


def zeros(evidence: Evidence, rules: RuleSet) -> Outcome:
    """Fail a cell with no contributors when the policy holds zeros disclosive (they reveal an empty group)."""
    empty = evidence.contributors == 0
    fail = empty & rules.zeros_disclosive
    return Outcome(
        rule="zeros",
        parameters={"zeros_disclosive": rules.zeros_disclosive},
        status=_labels(fail, FAIL, empty.shape, PASS),
        value=evidence.contributors.astype(np.float64),
        reason=_labels(fail, "no contributors: a zero reveals that nobody is in this group", empty.shape),
    )


def _undefined(evidence: Evidence) -> NDArray[np.bool_]:
    """Cells where dominance is undefined: any negative contribution."""
    return evidence.negatives > 0


def dominance(evidence: Evidence, rules: RuleSet) -> Outcome:
    """(n, k) rule: fail when the n largest contributions exceed k of the cell total; review with negatives."""
    top = evidence.top_sum(rules.dominance_n)
    total = evidence.total
    review = _undefined(evidence)
    fail = ~review & (top > rules.dominance_k * total)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(total > 0, top / np.where(total > 0, total, 1.0), np.nan)
    text = f"the largest {rules.dominance_n} contributions exceed {rules.dominance_k:g} of the cell total"
    return Outcome(
        rule="dominance",
        parameters={"n": rules.dominance_n, "k": rules.dominance_k},
        status=np.where(review, REVIEW, _labels(fail, FAIL, top.shape, PASS)).astype(str),
        value=share,
        reason=np.where(review, "dominance is undefined with negative values", _labels(fail, text, top.shape)),
    )


def p_percent(evidence: Evidence, rules: RuleSet) -> Outcome:
    """p% rule: fail when total - top1 - top2 < p * top1 (the second largest can estimate the largest within p)."""
    top1, top2 = evidence.tops[..., 0], evidence.tops[..., 1]
    remainder = evidence.total - top1 - top2
    review = _undefined(evidence)
    fail = ~review & (remainder < rules.p_ratio * top1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(top1 > 0, remainder / np.where(top1 > 0, top1, 1.0), np.nan)
    text = f"the second largest contributor can estimate the largest within {rules.p_ratio:g}"
    return Outcome(
        rule="p_percent",
        parameters={"p": rules.p_ratio},
        status=np.where(review, REVIEW, _labels(fail, FAIL, top1.shape, PASS)).astype(str),
        value=ratio,
        reason=np.where(review, "the p% rule is undefined with negative values", _labels(fail, text, top1.shape)),
    )


def missing(evidence: Evidence) -> Outcome:
    """Review a cell whose statistic silently left out missing values."""
    review = evidence.missing > 0
    return Outcome(
        rule="missing",
        parameters={"check_missing": True},
        status=_labels(review, REVIEW, review.shape, PASS),
        value=evidence.missing.astype(np.float64),
        reason=_labels(review, "missing values were left out of this cell's statistic", review.shape),
    )


def overall(outcomes: list[Outcome]) -> str:
    """The worst status across every rule and cell: fail, then review, then pass."""
    seen = {str(status) for outcome in outcomes for status in np.unique(outcome.status)}
    return FAIL if FAIL in seen else REVIEW if REVIEW in seen else PASS


def failing(outcomes: list[Outcome], shape: tuple[int, ...]) -> NDArray[np.bool_]:
    """Cells that fail at least one rule."""
    mask = np.zeros(shape, dtype=bool)
    for outcome in outcomes:
        mask |= outcome.status == FAIL
    return mask
