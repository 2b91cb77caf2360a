"""Statistical disclosure control: the rules at their thresholds, evidence, pandas parity, suppression and sidecars."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pandas.core.algorithms
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import REPO
from tre import sdc
from tre.errors import InputError
from tre.sdc import _cells, _evidence, _tables
from tre.sdc._suppress import protect

POLICIES = REPO / "policies" / "disclosure"


def records(cells: dict[tuple[str, int], list[float]]) -> pd.DataFrame:
    """One record per value, in the cell (a, b) it is listed under."""
    rows = [(a, b, value) for (a, b), values in cells.items() for value in values]
    return pd.DataFrame(rows, columns=["a", "b", "v"])


def counts_frame(counts: np.ndarray) -> pd.DataFrame:
    """Records whose crosstab of a by b is ``counts`` (rows r0.., columns c0..)."""
    cells = {(f"r{i}", f"c{j}"): [1.0] * int(n) for (i, j), n in np.ndenumerate(counts)}
    return records(cells)  # type: ignore[arg-type]


def status(checked: sdc.CheckedTable, rule: str, row: object, column: object) -> str:
    results = checked.results
    match = results[(results["rule"] == rule) & (results["row"] == row) & (results["column"] == column)]
    assert len(match) == 1, f"expected one {rule} result for ({row}, {column})"
    return str(match["status"].iloc[0])


def mean_table(values: list[float], rules: sdc.RuleSet = sdc.DEFAULT_RULES) -> sdc.CheckedTable:
    """A one-cell mean table over ``values`` plus a large, safe neighbouring cell."""
    df = records({("x", 1): values, ("x", 2): [5.0] * 30})
    return sdc.crosstab(df["a"], df["b"], df["v"], aggfunc="mean", rules=rules)


# --- rules and policy files -------------------------------------------------------------------------------------


def test_default_policy_file_matches_acro_defaults() -> None:
    assert sdc.load_rules(POLICIES / "default.yaml") == sdc.DEFAULT_RULES
    assert sdc.RuleSet(10, 2, 0.9, 0.1, 10, True, True, "default") == sdc.DEFAULT_RULES


def test_strict_policy_file_is_stricter() -> None:
    strict = sdc.load_rules(POLICIES / "strict.yaml")
    assert (strict.name, strict.threshold, strict.dominance_k, strict.p_ratio) == ("strict", 20, 0.8, 0.2)
    assert strict.min_dof >= sdc.DEFAULT_RULES.min_dof


def test_unknown_rules_are_refused_by_name(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("threshold: 5\nsafe_threshold: 10\nbogus: 1\n")
    with pytest.raises(InputError, match="bogus, safe_threshold"):
        sdc.load_rules(policy)


@pytest.mark.parametrize(
    "text",
    ["threshold: 0", "threshold: 2.5", "dominance_k: 0", "dominance_k: 1.5", "p_ratio: -0.1", "zeros_disclosive: 3",
     "- a list", "threshold: [unclosed"],
)  # fmt: skip
def test_bad_policy_values_are_refused(tmp_path: Path, text: str) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(text + "\n")
    with pytest.raises(InputError):
        sdc.load_rules(policy)


def test_partial_policy_keeps_defaults_and_takes_the_file_name(tmp_path: Path) -> None:
    policy = tmp_path / "small-cohort.yaml"
    policy.write_text("threshold: 25\n")
    assert sdc.load_rules(policy) == sdc.RuleSet(threshold=25, name="small-cohort")


# --- each rule at, just below and just above its threshold ------------------------------------------------------


@pytest.mark.parametrize(
    ("threshold", "n", "expected"),
    [(10, 9, "fail"), (10, 10, "pass"), (10, 11, "pass"), (20, 19, "fail"), (20, 20, "pass"), (20, 21, "pass"),
     (10, 1, "fail")],
)  # fmt: skip
def test_threshold_rule(threshold: int, n: int, expected: str) -> None:
    df = records({("x", 1): [1.0] * n, ("x", 2): [1.0] * 40})
    checked = sdc.crosstab(df["a"], df["b"], rules=sdc.RuleSet(threshold=threshold))
    assert status(checked, "threshold", "x", 1) == expected
    assert status(checked, "threshold", "x", 2) == "pass"
    assert checked.status == expected
    params = checked.results.loc[checked.results["rule"] == "threshold", "parameters"].iloc[0]
    assert params == {"threshold": threshold}


def test_threshold_counts_contributors_not_records_with_missing_values() -> None:
    assert status(mean_table([2.0] * 10), "threshold", "x", 1) == "pass"
    assert status(mean_table([2.0] * 9 + [np.nan]), "threshold", "x", 1) == "fail"


@pytest.mark.parametrize(("n", "zeros_disclosive", "zeros", "threshold"),
    [(0, True, "fail", "pass"), (0, False, "pass", "pass"), (1, True, "pass", "fail"), (12, True, "pass", "pass")],
)  # fmt: skip
def test_zeros_rule(n: int, zeros_disclosive: bool, zeros: str, threshold: str) -> None:
    cells = {("x", 1): [1.0] * 12, ("x", 2): [1.0] * 12, ("y", 1): [1.0] * 12, ("y", 2): [1.0] * n}
    df = records(cells)
    checked = sdc.crosstab(df["a"], df["b"], rules=sdc.RuleSet(zeros_disclosive=zeros_disclosive))
    assert checked.table.loc["y", 2] == n
    assert status(checked, "zeros", "y", 2) == zeros
    assert status(checked, "threshold", "y", 2) == threshold


def test_an_empty_cell_of_a_mean_table_fails_the_zeros_rule() -> None:
    df = records({("x", 1): [1.0] * 12, ("y", 2): [1.0] * 12})
    checked = sdc.crosstab(df["a"], df["b"], df["v"], aggfunc="mean")
    assert np.isnan(checked.table.loc["x", 2])
    assert status(checked, "zeros", "x", 2) == "fail"


# Twelve contributors: two large ones, ten small ones; the top two hold 90% of the total at the boundary.
@pytest.mark.parametrize(
    ("small", "k", "expected"),
    [(1.0, 0.9, "pass"), (0.99, 0.9, "fail"), (1.01, 0.9, "pass"), (2.25, 0.8, "pass"), (2.2, 0.8, "fail"),
     (2.3, 0.8, "pass")],
)  # fmt: skip
def test_dominance_rule(small: float, k: float, expected: str) -> None:
    checked = mean_table([45.0, 45.0] + [small] * 10, sdc.RuleSet(dominance_k=k))
    assert status(checked, "dominance", "x", 1) == expected
    assert status(checked, "dominance", "x", 2) == "pass"


def test_dominance_n_counts_the_n_largest() -> None:
    values = [30.0, 30.0, 30.0] + [1.0] * 10  # top 2 hold 60/100, top 3 hold 90/100
    assert status(mean_table(values, sdc.RuleSet(dominance_n=2, dominance_k=0.85)), "dominance", "x", 1) == "pass"
    assert status(mean_table(values, sdc.RuleSet(dominance_n=3, dominance_k=0.85)), "dominance", "x", 1) == "fail"
    assert mean_table(values, sdc.RuleSet(dominance_n=3)).evidence["top_n_sum"].loc["x", 1] == 90.0


# top1 = 50, top2 = 40, ten small ones: p * top1 = 5 (p = 0.1) or 10 (p = 0.2) at the boundary.
@pytest.mark.parametrize(
    ("small", "p", "expected"),
    [(0.5, 0.1, "pass"), (0.49, 0.1, "fail"), (0.51, 0.1, "pass"), (1.0, 0.2, "pass"), (0.99, 0.2, "fail"),
     (1.01, 0.2, "pass")],
)  # fmt: skip
def test_p_percent_rule(small: float, p: float, expected: str) -> None:
    checked = mean_table([50.0, 40.0] + [small] * 10, sdc.RuleSet(p_ratio=p))
    assert status(checked, "p_percent", "x", 1) == expected


def test_a_single_contributor_fails_both_dominance_rules() -> None:
    checked = mean_table([1000.0] + [0.0] * 11)
    assert status(checked, "dominance", "x", 1) == "fail"
    assert status(checked, "p_percent", "x", 1) == "fail"


def test_all_zero_contributions_are_not_dominated() -> None:
    checked = mean_table([0.0] * 12)
    assert status(checked, "dominance", "x", 1) == "pass"
    assert status(checked, "p_percent", "x", 1) == "pass"


def test_negatives_make_dominance_a_review_in_their_cell_only() -> None:
    df = records({("x", 1): [-1.0] + [5.0] * 11, ("x", 2): [100.0] + [1.0] * 11, ("y", 1): [5.0] * 12})
    checked = sdc.crosstab(df["a"], df["b"], df["v"], aggfunc="sum")
    assert checked.evidence["negatives"].loc["x", 1] == 1
    assert status(checked, "dominance", "x", 1) == "review"
    assert status(checked, "p_percent", "x", 1) == "review"
    assert status(checked, "dominance", "x", 2) == "fail"  # another cell's negatives do not excuse this one
    assert status(checked, "dominance", "y", 1) == "pass"
    reasons = {f["reason"] for f in checked.flagged() if f["row"] == "x" and f["column"] == 1}
    assert any("negative" in reason for reason in reasons)


def test_missing_values_are_a_review_with_a_reason() -> None:
    checked = mean_table([2.0] * 11 + [np.nan])
    assert status(checked, "missing", "x", 1) == "review"
    assert status(checked, "missing", "x", 2) == "pass"
    assert checked.status == "review"
    assert checked.evidence["missing"].loc["x", 1] == 1
    flagged = checked.flagged()
    assert flagged == [
        {"row": "x", "column": 1, "rule": "missing", "value": 1.0, "status": "review", "reason": flagged[0]["reason"]}
    ]
    assert "missing" in flagged[0]["reason"]
    unchecked = mean_table([2.0] * 11 + [np.nan], sdc.RuleSet(check_missing=False))
    assert "missing" not in set(unchecked.results["rule"])
    assert unchecked.status == "pass"


@pytest.mark.parametrize(
    ("aggfunc", "rules"),
    [(None, {"threshold", "zeros"}), ("count", {"threshold", "zeros", "missing"}),
     ("mean", {"threshold", "zeros", "dominance", "p_percent", "missing"}),
     ("sum", {"threshold", "zeros", "dominance", "p_percent", "missing"}),
     ("median", {"threshold", "zeros", "missing"}), ("std", {"threshold", "zeros", "missing"}),
     ("max", {"threshold", "zeros", "missing"})],
)  # fmt: skip
def test_which_rules_apply_to_which_tables(aggfunc: str | None, rules: set[str]) -> None:
    df = records({("x", 1): [1.0] * 12, ("x", 2): [2.0] * 12})
    values = None if aggfunc is None else df["v"]
    checked = sdc.crosstab(df["a"], df["b"], values, aggfunc=aggfunc)
    assert set(checked.results["rule"]) == rules
    assert checked.status == "pass"


def test_status_is_the_worst_outcome() -> None:
    assert mean_table([2.0] * 12).status == "pass"
    assert mean_table([2.0] * 11 + [np.nan]).status == "review"
    assert mean_table([2.0] * 3 + [np.nan]).status == "fail"


# --- empty and single-cell tables ---------------------------------------------------------------------------------


def test_an_empty_table_needs_review() -> None:
    empty = records({})
    for checked in (sdc.crosstab(empty["a"], empty["b"]), sdc.pivot_table(empty, "v", "a", "b", margins=True)):
        assert checked.table.size == 0
        assert checked.status == "review"
        assert [f["rule"] for f in checked.flagged()] == ["empty_table"]
        assert checked.evidence["count"].shape == checked.table.shape


@pytest.mark.parametrize(("n", "expected"), [(3, "fail"), (10, "pass")])
def test_a_single_cell_table(n: int, expected: str) -> None:
    df = records({("x", 1): [1.0] * n})
    assert sdc.crosstab(df["a"], df["b"]).status == expected
    checked = sdc.crosstab(df["a"], df["b"], suppress=True)
    assert checked.status == ("review" if expected == "fail" else "pass")
    assert checked.table.shape == (1, 1)
    assert bool(checked.suppressed.loc["x", 1]) == (expected == "fail")
    with_margins = sdc.crosstab(df["a"], df["b"], suppress=True, margins=True)
    assert with_margins.table.shape == (2, 2)
    assert bool(with_margins.suppressed.to_numpy().all()) == (expected == "fail")


# --- the table is pandas' table --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def survey() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 2_000
    df = pd.DataFrame({
        "sex": rng.choice(["F", "M"], n), "band": rng.choice([1, 2, 3, 4], n), "site": rng.choice(list("pqrs"), n),
        "cost": rng.gamma(2.0, 100.0, n), "flag": rng.choice([True, False], n),
    })  # fmt: skip
    df.loc[rng.choice(n, 25, replace=False), "cost"] = np.nan
    df.loc[rng.choice(n, 5, replace=False), "cost"] *= -1
    df["grade"] = pd.Categorical(rng.choice(["a", "b"], n), categories=["a", "b", "unused"])
    return df


CROSSTAB_CASES = {
    "counts": ({"index": "sex", "columns": "band"}, {}),
    "counts, two row keys, margins": ({"index": ["sex", "site"], "columns": "band"}, {"margins": True}),
    "counts, two column keys": ({"index": "band", "columns": ["sex", "flag"]}, {}),
    "counts, categorical": ({"index": "grade", "columns": "sex"}, {"margins": True}),
    "mean": ({"index": "sex", "columns": "band", "values": "cost"}, {"aggfunc": "mean"}),
    "mean, margins": (
        {"index": ["sex", "site"], "columns": "band", "values": "cost"}, {"aggfunc": "mean", "margins": True}
    ),
    "sum, margins": (
        {"index": "site", "columns": ["band", "sex"], "values": "cost"}, {"aggfunc": "sum", "margins": True}
    ),
    "count of values": ({"index": "site", "columns": "band", "values": "cost"}, {"aggfunc": "count"}),
    "median": ({"index": "site", "columns": "band", "values": "cost"}, {"aggfunc": "median"}),
    "std, margins": ({"index": "site", "columns": "band", "values": "cost"}, {"aggfunc": "std", "margins": True}),
}  # fmt: skip


@pytest.mark.parametrize("case", CROSSTAB_CASES)
def test_crosstab_is_pandas_crosstab(survey: pd.DataFrame, case: str) -> None:
    names, options = CROSSTAB_CASES[case]

    def series(key: str) -> object:
        name = names.get(key)
        return [survey[n] for n in name] if isinstance(name, list) else None if name is None else survey[name]

    expected = pd.crosstab(series("index"), series("columns"), values=series("values"), **options)
    checked = sdc.crosstab(series("index"), series("columns"), series("values"), **options)
    pd.testing.assert_frame_equal(checked.table, expected, check_exact=True)
    by_name = sdc.crosstab(names["index"], names["columns"], names.get("values"), data=survey, **options)
    pd.testing.assert_frame_equal(by_name.table, expected, check_exact=True)
    for frame in checked.evidence.values():
        assert frame.index.equals(expected.index)
        assert frame.columns.equals(expected.columns)
    assert len(checked.results) == expected.size * checked.results["rule"].nunique()


PIVOT_CASES = [
    {"index": "sex", "columns": "band", "aggfunc": "mean"},
    {"index": ["sex", "site"], "columns": "band", "aggfunc": "sum", "margins": True},
    {"index": "site", "aggfunc": "mean"},
    {"index": ["site", "band"], "aggfunc": "median", "margins": True},
    {"index": "site", "columns": ["sex", "flag"], "aggfunc": "count", "margins": True},
]


@pytest.mark.parametrize("options", PIVOT_CASES)
def test_pivot_table_is_pandas_pivot_table(survey: pd.DataFrame, options: dict[str, object]) -> None:
    expected = pd.pivot_table(survey, values="cost", **options)  # type: ignore[call-overload]
    checked = sdc.pivot_table(survey, "cost", **options)  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(checked.table, expected, check_exact=True)
    assert checked.evidence["count"].shape == expected.shape


# --- evidence: one grouping pass, equal to a cell-by-cell reference ---------------------------------------------


def reference_evidence(df: pd.DataFrame, mask: pd.Series) -> dict[str, float]:
    """The evidence of the records selected by ``mask``, computed the slow, obvious way."""
    values = df.loc[mask, "cost"]
    present = [*values.dropna().abs().sort_values(ascending=False).tolist(), 0.0, 0.0]
    return {
        "count": float(mask.sum()), "sum": float(values.sum()), "top1": present[0], "top2": present[1],
        "negatives": float((values < 0).sum()), "missing": float(values.isna().sum()),
    }  # fmt: skip


@pytest.mark.parametrize("margins", [True, False])  # pandas' path, and the one-grouping path
def test_evidence_matches_a_cell_by_cell_reference(survey: pd.DataFrame, margins: bool) -> None:
    checked = sdc.crosstab(survey["site"], survey["band"], survey["cost"], aggfunc="sum", margins=margins)
    for row in checked.table.index:
        for column in checked.table.columns:
            mask = pd.Series(True, index=survey.index)
            if row != "All":
                mask &= survey["site"] == row
            if column != "All":
                mask &= survey["band"] == column
            expected = reference_evidence(survey, mask)
            actual = {name: float(frame.loc[row, column]) for name, frame in checked.evidence.items()}
            for name, value in expected.items():
                assert actual[name] == pytest.approx(value), (row, column, name)


def test_each_key_is_hashed_once(survey: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    """The table and its evidence come from one factorisation of each key, the bulk of pandas' own time."""
    hashed: list[object] = []
    original, depth = pandas.core.algorithms.factorize, [0]

    def counting(values: object, *args: object, **kwargs: object) -> object:
        if len(values) == len(survey) and not depth[0]:  # type: ignore[arg-type]
            hashed.append(getattr(values, "name", type(values).__name__))
        depth[0] += 1  # a Series' factorize calls factorize on its array: count the outer call only
        try:
            return original(values, *args, **kwargs)
        finally:
            depth[0] -= 1

    monkeypatch.setattr(pandas.core.algorithms, "factorize", counting)
    monkeypatch.setattr(pd, "factorize", counting)
    sdc.pivot_table(survey, "cost", "site", "band", aggfunc="mean")
    sdc.crosstab(survey["sex"], survey["site"])
    assert hashed == ["site", "band", "sex", "site"]


@pytest.mark.parametrize(
    ("values", "tops"),
    [([7.0, 7.0, 7.0, 1.0], [7.0, 7.0, 7.0]), ([3.0, np.nan, -9.0, 2.0], [9.0, 3.0, 2.0]), ([4.0], [4.0, 0.0, 0.0]),
     ([np.nan, np.nan], [0.0, 0.0, 0.0]), ([0.0, 5.0, 5.0, 6.0], [6.0, 5.0, 5.0])],
)  # fmt: skip
def test_largest_contributions_with_ties_missing_and_negatives(values: list[float], tops: list[float]) -> None:
    codes = np.array([0] * len(values) + [-1, 1])  # the -1 record is in no cell (a missing key)
    group = _evidence.tally(codes, 3, np.array([*values, 500.0, 100.0]), 3)
    assert group.tops.tolist() == [tops, [100.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    assert group.count.tolist() == [len(values), 1, 0]


# --- the one-grouping path gives what pandas' own call gives --------------------------------------------------------


def both_paths(monkeypatch: pytest.MonkeyPatch, call: Callable[[], sdc.CheckedTable]) -> sdc.CheckedTable:
    """Run ``call`` on the one-grouping path and on pandas' path; assert both give the same checked table."""
    taken: list[object] = []
    with monkeypatch.context() as spied:
        spied.setattr(_tables, "grid_cells", lambda *args: taken.append(args) or _evidence.grid_cells(*args))
        fast = call()
    assert taken, "the call did not take the one-grouping path"
    with monkeypatch.context() as patched:
        patched.setattr(_cells, "supported", lambda *args: False)
        slow = call()
    pd.testing.assert_frame_equal(fast.table, slow.table, check_exact=True)
    pd.testing.assert_frame_equal(fast.results, slow.results, check_exact=True)
    for name, frame in slow.evidence.items():
        pd.testing.assert_frame_equal(fast.evidence[name], frame, check_exact=True, obj=name)
    pd.testing.assert_frame_equal(fast.suppressed, slow.suppressed)
    assert fast.status == slow.status
    return fast


def key_cases() -> dict[str, tuple[object, object]]:
    """Row and column keys of awkward kinds, 60 records each."""
    rng = np.random.default_rng(11)
    words = rng.choice(["b", "a", "c"], 60).astype(object)
    words[[3, 17]] = None
    floats = rng.choice([2.5, -1.0, 0.0], 60)
    floats[[5, 40]] = np.nan
    mixed = np.array([1, "x", 2.0] * 20, dtype=object)
    days = pd.Series(pd.to_datetime(rng.choice(["2024-01-02", "2023-05-06"], 60)))
    return {
        "strings with None": (pd.Series(words, name="w"), pd.Series(rng.choice([3, 1, 2], 60), name="n")),
        "floats with NaN, bools": (pd.Series(floats, name="f"), pd.Series(rng.choice([True, False], 60), name="t")),
        "mixed objects, dates": (pd.Series(mixed, name="m"), days.rename("d")),
        "unnamed arrays": (rng.choice(["p", "q"], 60), list(rng.choice([10, 20, 30], 60))),
        "same name twice": (pd.Series(words, name="k"), pd.Series(rng.choice(["u", "v"], 60), name="k")),
        "all one cell": (pd.Series(["x"] * 60, name="a"), pd.Series([1] * 60, name="b")),
        "an empty cell": (pd.Series(["x"] * 30 + ["y"] * 30, name="a"), pd.Series([1] * 40 + [2] * 20, name="b")),
        "numbers and booleans as objects": (
            pd.Series(rng.choice([3, 1, 2], 60).astype(object), name="o"),
            pd.Series(rng.choice([True, False], 60).astype(object), name="p"),
        ),
        "narrow integers, timedeltas": (
            pd.Series(rng.choice([3, 1], 60).astype(np.int32), name="i"),
            pd.Series(pd.to_timedelta(rng.choice([1, 2], 60), unit="D"), name="t"),
        ),
        "a shared index that is unique but not a range": (
            pd.Series(words, index=np.arange(60) * 3),
            pd.Series(floats, index=np.arange(60) * 3),
        ),
    }


def value_cases() -> dict[str, object]:
    rng = np.random.default_rng(12)
    costs = rng.gamma(2.0, 50.0, 60)
    costs[[0, 9, 33]] = np.nan
    costs[[4, 21]] *= -1
    return {
        "floats": costs,
        "integers": rng.integers(-3, 40, 60),
        "one NaN group": np.where(np.arange(60) < 20, np.nan, costs),
        "float32": costs.astype(np.float32),
        "uint8": rng.integers(0, 200, 60).astype(np.uint8),
    }


@pytest.mark.parametrize("keys", key_cases())
@pytest.mark.parametrize("aggfunc", [None, "count", "sum", "mean", "median", "std", "min", "max"])
def test_crosstab_on_one_grouping_is_pandas_crosstab(
    monkeypatch: pytest.MonkeyPatch, keys: str, aggfunc: str | None
) -> None:
    rows, columns = key_cases()[keys]
    for name, values in value_cases().items() if aggfunc else [("none", None)]:
        if isinstance(rows, pd.Series):
            values = None if values is None else pd.Series(values, index=rows.index)
        expected = pd.crosstab(rows, columns, values=values, aggfunc=aggfunc)
        checked = both_paths(monkeypatch, functools.partial(sdc.crosstab, rows, columns, values, aggfunc=aggfunc))
        pd.testing.assert_frame_equal(checked.table, expected, check_exact=True, obj=name)


@pytest.mark.parametrize("columns", ["band", None])
@pytest.mark.parametrize("aggfunc", ["count", "sum", "mean", "median", "std", "min", "max"])
@pytest.mark.parametrize("values", ["cost", "band"])
def test_pivot_table_on_one_grouping_is_pandas_pivot_table(
    monkeypatch: pytest.MonkeyPatch, survey: pd.DataFrame, columns: str | None, aggfunc: str, values: str
) -> None:
    if values == columns:
        return
    expected = pd.pivot_table(survey, values=values, index="site", columns=columns, aggfunc=aggfunc)
    checked = both_paths(monkeypatch, lambda: sdc.pivot_table(survey, values, "site", columns, aggfunc=aggfunc))
    pd.testing.assert_frame_equal(checked.table, expected, check_exact=True)


PANDAS_ONLY = {
    "categorical key": (pd.Series(pd.Categorical(["a", "b"] * 15, categories=["a", "b", "c"]), name="c"), None),
    "string dtype key": (pd.Series(["a", "b"] * 15, dtype="string", name="s"), None),
    "nullable integer values": (pd.Series(["a", "b"] * 15, name="k"), pd.Series(range(30), dtype="Int64")),
}


@pytest.mark.parametrize("case", PANDAS_ONLY)
def test_inputs_only_pandas_can_tabulate_take_its_path(monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    rows, values = PANDAS_ONLY[case]
    columns = pd.Series(["u", "v", "v"] * 10, name="b")
    aggfunc = None if values is None else "sum"
    monkeypatch.setattr(_tables, "grid_cells", lambda *args: pytest.fail("took the one-grouping path"))
    checked = sdc.crosstab(rows, columns, values, aggfunc=aggfunc)
    expected = pd.crosstab(rows, columns, values=values, aggfunc=aggfunc)
    pd.testing.assert_frame_equal(checked.table, expected, check_exact=True)


def test_a_duplicated_index_fails_as_in_pandas() -> None:
    rows, columns = pd.Series(["a", "b", "a"], index=[0, 0, 1]), pd.Series(["u", "v", "v"], index=[0, 0, 1])
    with pytest.raises(ValueError, match="duplicate labels"):
        pd.crosstab(rows, columns)
    with pytest.raises(ValueError, match="duplicate labels"):
        sdc.crosstab(rows, columns)


def test_suppression_on_one_grouping_is_the_same(monkeypatch: pytest.MonkeyPatch, survey: pd.DataFrame) -> None:
    small = survey.iloc[:120]
    checked = both_paths(monkeypatch, lambda: sdc.crosstab(small["site"], small["band"], suppress=True))
    assert checked.suppressed.to_numpy().any()
    both_paths(monkeypatch, lambda: sdc.pivot_table(small, "cost", "site", "band", aggfunc="mean", suppress=True))


@settings(max_examples=80, deadline=None)
@given(
    rows=st.lists(st.sampled_from(["a", "b", "c", None]), min_size=1, max_size=40),
    data=st.data(),
    aggfunc=st.sampled_from([None, "count", "sum", "mean", "median", "std", "min", "max"]),
)
def test_one_grouping_matches_pandas_on_any_small_table(
    rows: list[str | None], data: st.DataObject, aggfunc: str | None
) -> None:
    n = len(rows)
    columns = data.draw(st.lists(st.sampled_from([1.0, 2.0, 3.0, np.nan]), min_size=n, max_size=n))
    values = data.draw(st.lists(st.sampled_from([0.0, 1.5, -2.0, 7.0, 1e6, np.nan]), min_size=n, max_size=n))
    a, b = pd.Series(rows, name="a", dtype=object), pd.Series(columns, name="b")
    v = pd.Series(values, name="v") if aggfunc else None
    with pytest.MonkeyPatch.context() as monkeypatch:
        if pd.crosstab(a, b, values=v, aggfunc=aggfunc).size == 0:
            return  # an empty table comes from pandas' path either way
        checked = both_paths(monkeypatch, lambda: sdc.crosstab(a, b, v, aggfunc=aggfunc))
    pd.testing.assert_frame_equal(checked.table, pd.crosstab(a, b, values=v, aggfunc=aggfunc), check_exact=True)


# --- suppression -------------------------------------------------------------------------------------------------


def recovered(values: np.ndarray, hidden: np.ndarray) -> dict[tuple[int, int], float]:
    """Attack a table with its totals as the last row and column: solve every row or column with one unknown.

    Repeats until nothing more is learnt; returns the hidden cells recovered and the value each was recovered as.
    """
    known, values, found = ~hidden.copy(), values.astype(float).copy(), {}
    progress = True
    while progress:
        progress = False
        for axis in (0, 1):
            for line in range(values.shape[axis]):
                cells = [(line, k) if axis == 0 else (k, line) for k in range(values.shape[1 - axis])]
                unknown = [cell for cell in cells if not known[cell]]
                if len(unknown) != 1:
                    continue
                cell, (*parts, total) = unknown[0], cells
                others = sum(values[c] for c in parts if c != cell)
                values[cell] = others if cell == total else values[total] - others
                found[cell], known[cell], progress = float(values[cell]), True, True
    return found


def attack(checked: sdc.CheckedTable, truth: pd.DataFrame, *, margins: bool) -> dict[tuple[int, int], float]:
    """Recover hidden cells of ``checked`` from its visible cells and (if not shown, assumed known) true totals."""
    hidden = checked.suppressed.to_numpy(dtype=bool)
    if not margins:  # the attacker knows the totals from elsewhere, except a one-cell line's (that is the cell)
        rows, columns = hidden.shape
        hidden = np.pad(hidden, ((0, 1), (0, 1)))
        hidden[:-1, -1] = columns == 1
        hidden[-1, :-1] = rows == 1
        hidden[-1, -1] = rows == 1 and columns == 1
    found = recovered(truth.to_numpy(), hidden)
    table_cells = {(int(i), int(j)) for i, j in np.argwhere(checked.suppressed.to_numpy(dtype=bool))}
    return {cell: value for cell, value in found.items() if cell in table_cells}


def test_the_attack_recovers_a_cell_hidden_by_primary_suppression_alone() -> None:
    truth = pd.DataFrame([[3, 50, 53], [40, 20, 60], [43, 70, 113]])
    hidden = np.zeros((3, 3), dtype=bool)
    hidden[0, 0] = True
    assert recovered(truth.to_numpy(), hidden) == {(0, 0): 3.0}


SUPPRESSION_CASES = [
    np.array([[3, 50, 60], [40, 20, 70], [80, 90, 30]]),
    np.array([[3, 50, 60, 12], [40, 2, 70, 15], [80, 90, 30, 11]]),
    np.array([[0, 15, 16], [14, 0, 13], [12, 11, 40]]),
    np.array([[5, 5], [5, 5]]),
    np.array([[30, 4], [40, 50], [60, 70]]),
]


@pytest.mark.parametrize("margins", [False, True])
@pytest.mark.parametrize("counts", SUPPRESSION_CASES, ids=range(len(SUPPRESSION_CASES)))
def test_no_suppressed_cell_can_be_recomputed_from_the_totals(counts: np.ndarray, margins: bool) -> None:
    df = counts_frame(counts)
    checked = sdc.crosstab(df["a"], df["b"], suppress=True, margins=margins)
    truth = pd.crosstab(df["a"], df["b"], margins=True)
    failing = {(r["row"], r["column"]) for r in checked.flagged() if r["status"] == "fail"}
    assert failing
    assert all(checked.suppressed.loc[cell] for cell in failing)
    assert checked.table.isna().to_numpy().sum() == checked.suppressed.to_numpy().sum()
    assert attack(checked, truth, margins=margins) == {}


def test_secondary_suppression_hides_the_smallest_cells_needed() -> None:
    df = counts_frame(np.array([[3, 50, 60], [40, 20, 70], [80, 90, 30]]))
    checked = sdc.crosstab(df["a"], df["b"], suppress=True, margins=True)
    hidden = checked.suppressed.to_numpy()
    expected = np.zeros((4, 4), dtype=bool)
    expected[:2, :2] = True
    assert (hidden == expected).all()
    assert checked.status == "review"
    assert sdc.crosstab(df["a"], df["b"], margins=True).status == "fail"
    shown_totals = checked.table.loc["All"].to_numpy()
    assert (shown_totals == pd.crosstab(df["a"], df["b"], margins=True).loc["All"].to_numpy()).all()


def test_suppression_leaves_a_safe_table_alone() -> None:
    df = counts_frame(np.array([[30, 50], [40, 20]]))
    checked = sdc.crosstab(df["a"], df["b"], suppress=True, margins=True)
    pd.testing.assert_frame_equal(checked.table, pd.crosstab(df["a"], df["b"], margins=True))
    assert not checked.suppressed.to_numpy().any()


def test_suppression_of_a_mean_table_hides_complements_too() -> None:
    df = records({("x", 1): [1.0] * 4, ("x", 2): [2.0] * 20, ("y", 1): [3.0] * 20, ("y", 2): [4.0] * 20})
    checked = sdc.crosstab(df["a"], df["b"], df["v"], aggfunc="mean", suppress=True)
    assert checked.suppressed.to_numpy().all()


def lines_with_one_hidden(hidden: np.ndarray) -> int:
    rows = (hidden.sum(axis=1) == 1) & (hidden.shape[1] > 1)
    columns = (hidden.sum(axis=0) == 1) & (hidden.shape[0] > 1)
    return int(rows.sum() + columns.sum())


@settings(max_examples=60, deadline=None)
@given(
    counts=st.tuples(st.integers(1, 5), st.integers(1, 4)).flatmap(
        lambda shape: st.lists(st.lists(st.integers(0, 30), min_size=shape[1], max_size=shape[1]),
                               min_size=shape[0], max_size=shape[0])
    ),
    margins=st.booleans(),
)  # fmt: skip
def test_suppressed_frequency_tables_never_hide_exactly_one_cell_in_a_line(
    counts: list[list[int]], margins: bool
) -> None:
    df = counts_frame(np.array(counts))
    checked = sdc.crosstab(df["a"], df["b"], suppress=True, margins=margins)
    hidden = checked.suppressed.to_numpy(dtype=bool)
    assert lines_with_one_hidden(hidden) == 0
    fails = checked.results.loc[checked.results["status"] == "fail", ["row", "column"]]
    assert all(checked.suppressed.loc[row, column] for row, column in fails.itertuples(index=False))
    assert attack(checked, pd.crosstab(df["a"], df["b"], margins=True), margins=margins) == {}


def test_protect_prefers_a_cell_that_closes_two_lines() -> None:
    primary = np.array([[True, False, False], [False, False, True], [False, False, False]])
    weight = np.array([[1.0, 9.0, 9.0], [9.0, 9.0, 1.0], [1.0, 1.0, 1.0]])
    hidden = protect(primary, weight)
    assert lines_with_one_hidden(hidden) == 0
    assert hidden.sum() == 4  # (0, 2) and (1, 0) pair the two primaries; no third row or column is touched


# --- saving with a sidecar -----------------------------------------------------------------------------------------


def test_save_writes_a_csv_and_a_sidecar_that_verify(tmp_path: Path) -> None:
    df = records({("x", 1): [987654.321] + [1.0] * 11, ("x", 2): [3.0] * 20, ("y", 1): [1.0] * 3, ("y", 2): [2.0] * 12})
    checked = sdc.crosstab(df["a"], df["b"], df["v"], aggfunc="sum", suppress=True, margins=True)
    path = tmp_path / "table.csv"
    sidecar = checked.save(path)
    assert sidecar == sdc.sidecar_path(path) == tmp_path / "table.csv.sdc.json"
    assert sdc.verify_saved(path)
    document = json.loads(sidecar.read_text())
    assert document["rules"] == sdc.DEFAULT_RULES.as_dict()
    assert document["status"] == "review"  # suppressed
    assert len(document["results"]) == len(checked.results)
    assert document["evidence_summary"]["cells_suppressed"] == int(checked.suppressed.to_numpy().sum()) > 0
    assert "987654" not in sidecar.read_text()  # the largest contribution is an individual's value
    assert pd.read_csv(path, index_col=0).shape == checked.table.shape


def test_verify_saved_rejects_a_changed_csv_or_sidecar(tmp_path: Path) -> None:
    df = records({("x", 1): [1.0] * 12, ("x", 2): [1.0] * 12})
    path = tmp_path / "t.csv"
    sdc.crosstab(df["a"], df["b"]).save(path)
    original = path.read_bytes()
    path.write_bytes(original.replace(b"12", b"13", 1))
    assert not sdc.verify_saved(path)
    path.write_bytes(original)
    assert sdc.verify_saved(path)
    sidecar = sdc.sidecar_path(path)
    sidecar.write_text(sidecar.read_text().replace('"csv_sha256": "', '"csv_sha256": "0'))
    assert not sdc.verify_saved(path)
    sidecar.unlink()
    assert not sdc.verify_saved(path)


# --- input errors ---------------------------------------------------------------------------------------------------


def test_bad_calls_are_input_errors(survey: pd.DataFrame) -> None:
    with pytest.raises(InputError, match="aggfunc"):
        sdc.crosstab(survey["sex"], survey["band"], survey["cost"], aggfunc="mode")
    with pytest.raises(InputError, match="aggfunc"):
        sdc.crosstab(survey["sex"], survey["band"], survey["cost"])
    with pytest.raises(InputError, match="share one index"):
        sdc.crosstab(survey["sex"], survey["band"].iloc[::-1])
    with pytest.raises(InputError, match="not in the data"):
        sdc.crosstab("sex", "nope", data=survey)
    with pytest.raises(InputError, match="needs values"):
        sdc.crosstab(survey["sex"], survey["band"], aggfunc="sum")
    with pytest.raises(InputError, match="numeric"):
        sdc.crosstab(survey["sex"], survey["band"], survey["site"], aggfunc="mean")
    with pytest.raises(InputError, match="single column"):
        sdc.pivot_table(survey, ["cost", "band"], "sex")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="nope"):
        sdc.pivot_table(survey, "cost", ["sex", "nope"])


# --- regressions ------------------------------------------------------------------------------------------------------


def regression_data(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    latent = 0.5 * x1 - 0.3 * x2 + rng.normal(size=n)
    return pd.DataFrame({"y": latent, "x1": x1, "x2": x2, "event": (latent > 0).astype(int)})


@pytest.mark.parametrize(("n", "expected"), [(12, "fail"), (13, "pass"), (14, "pass")])
def test_ols_residual_degrees_of_freedom(n: int, expected: str) -> None:
    fitted, check = sdc.ols("y ~ x1 + x2", regression_data(n))
    assert check.dof == n - 3 == fitted.df_resid
    assert (check.rule, check.parameters, check.status) == ("min_dof", {"min_dof": 10}, expected)


@pytest.mark.parametrize("fit", [sdc.logit, sdc.probit])
def test_binary_models_are_checked(fit: object) -> None:
    _fitted, check = fit("event ~ x1 + x2", regression_data(400))  # type: ignore[operator]
    assert check.status == "pass"
    assert check.dof == 397
    _, strict = fit("event ~ x1 + x2", regression_data(400), rules=sdc.RuleSet(min_dof=398))  # type: ignore[operator]
    assert strict.status == "fail"
    assert "397" in strict.reason
