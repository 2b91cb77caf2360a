"""tre.sdc against plain pandas and ACRO: time per table, and per-cell agreement of the disclosure rules with ACRO.

    .venv/bin/python benchmarks/sdc.py [--rows 1000000] [--repeats 3] [--seed 0]

Needs ``acro`` (the dev extra: ``pip install -e '.[dev]'``).

Two synthetic record sets of ``--rows`` records with a positive, skewed value (lognormal; one record in 2,000 is
10,000 times larger, so some cells are dominated):

* long: group columns of 10 and 20 equally likely levels (a 10x20 table, every cell large);
* wide: 200x20 cells, the 200 levels Zipf-distributed (exponent 1.7), so the tail has small and empty cells.

For each, counts (``crosstab(a, b)``) and means (``pivot_table(values=v, index=a, columns=b, aggfunc="mean")``) are
timed with plain pandas, tre.sdc and ACRO (``suppress=False``) on the same frame, each the median of ``--repeats``
rounds that run the three in turn (so load from elsewhere on a shared machine falls on all three alike). pandas
makes only the table; tre.sdc makes the same table (equal to pandas', tested) plus each cell's evidence (count,
missing, negatives, sum, the two largest contributions) and the outcome of every rule; ACRO makes the table and its
checks. Then each cell's outcome for threshold, zeros, dominance and p% is compared with ACRO's per-cell outcome
table (as tests/unit/test_sdc_acro_agreement.py does). ACRO's threshold check also fails empty cells, so our
threshold is compared as threshold or zeros. ACRO applies no zeros check to a table of means (an empty cell shows
NaN there); tre.sdc applies it to every table, so the empty cells of mean tables disagree. Disagreements are
printed, not fatal: the script exits non-zero only on a crash.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ACRO_CHECKS = {
    "threshold": "MinimumThresholdCheck",
    "zeros": "PresenceOfZeroCheck",
    "dominance": "NKCheck",
    "p_percent": "PPercentCheck",
}


def records(rows: int, levels: tuple[int, int], zipf: float | None, seed: int) -> pd.DataFrame:
    """Records with group labels a (levels[0]) and b (levels[1]) and a positive value v."""
    rng = np.random.default_rng(seed)
    weights = np.ones(levels[0]) if zipf is None else 1.0 / np.arange(1, levels[0] + 1) ** zipf
    a = rng.choice(levels[0], size=rows, p=weights / weights.sum())
    b = rng.integers(0, levels[1], size=rows)
    v = rng.lognormal(3.0, 1.0, size=rows)
    v[rng.random(rows) < 0.0005] *= 10_000.0
    a_labels = np.array([f"a{i:03d}" for i in range(levels[0])], dtype=object)
    b_labels = np.array([f"b{j:02d}" for j in range(levels[1])], dtype=object)
    return pd.DataFrame({"a": a_labels[a], "b": b_labels[b], "v": np.round(v, 2)})


def median_seconds(calls: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Each call's median wall time over ``repeats`` rounds, and its last result.

    Every round runs each call once, in turn, so that load from elsewhere on a shared machine falls on all alike.
    """
    times: dict[str, list[float]] = {tool: [] for tool in calls}
    results: dict[str, Any] = {}
    for _ in range(repeats):
        for tool, call in calls.items():
            gc.collect()
            start = time.perf_counter()
            results[tool] = call()
            times[tool].append(time.perf_counter() - start)
    return {tool: statistics.median(seconds) for tool, seconds in times.items()}, results


def calls(df: pd.DataFrame, statistic: str, session: Any) -> dict[str, Callable[[], Any]]:
    """The same table in pandas, tre.sdc and ACRO."""
    from tre import sdc

    if statistic == "counts":
        return {
            "pandas": lambda: pd.crosstab(df["a"], df["b"]),
            "tre.sdc": lambda: sdc.crosstab(df["a"], df["b"]),
            "acro": lambda: acro_table(session, "crosstab", index=df["a"], columns=df["b"]),
        }
    kwargs = {"values": "v", "index": "a", "columns": "b", "aggfunc": "mean"}
    return {
        "pandas": lambda: pd.pivot_table(df, **kwargs),
        "tre.sdc": lambda: sdc.pivot_table(df, "v", "a", "b", aggfunc="mean"),
        "acro": lambda: acro_table(session, "pivot_table", data=df, **kwargs),
    }


def acro_table(session: Any, method: str, **kwargs: Any) -> Any:
    """Run an ACRO table call and return its per-cell outcome table (dropping the output from the session)."""
    getattr(session, method)(**kwargs)
    key, record = list(session.results.results.items())[-1]
    session.remove_output(key)
    return record.outcome


def agreement(checked: Any, outcome: Any) -> list[tuple[str, int, int, int, int]]:
    """Per rule: cells compared, cells we flag, cells ACRO flags, agreements."""
    table = checked.table
    outcome = outcome.reindex(index=table.index, columns=table.columns).fillna("ok").astype(str).to_numpy()
    results = checked.results
    ours = {
        rule: (results.loc[results["rule"] == rule, "status"].to_numpy() == "fail").reshape(table.shape)
        for rule in ACRO_CHECKS
        if (results["rule"] == rule).any()
    }
    if "threshold" in ours:
        ours["threshold"] = ours["threshold"] | ours["zeros"]  # ACRO's threshold also fails empty cells
    rows = []
    for rule, mask in ours.items():
        theirs = np.char.find(outcome.astype(str), ACRO_CHECKS[rule]) >= 0
        rows.append((rule, mask.size, int(mask.sum()), int(theirs.sum()), int((mask == theirs).sum())))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()

    warnings.simplefilter("ignore")  # ACRO and its dependencies warn on import and on every table
    import acro

    logging.disable(logging.INFO)  # ACRO logs every table it checks (its loggers are not under "acro")
    os.chdir(tempfile.mkdtemp(prefix="tre-sdc-bench-"))  # ACRO writes its artifacts to the working directory
    session = acro.ACRO(suppress=False)

    datasets = {
        "long 10x20": records(options.rows, (10, 20), None, options.seed),
        "wide 200x20": records(options.rows, (200, 20), 1.7, options.seed + 1),
    }
    timings, agreements = [], []
    for name, df in datasets.items():
        for statistic in ("counts", "means"):
            case = f"{name} {statistic}"
            seconds, results = median_seconds(calls(df, statistic, session), options.repeats)
            timings.append((case, seconds["pandas"], seconds["tre.sdc"], seconds["acro"]))
            agreements += [(case, *row) for row in agreement(results["tre.sdc"], results["acro"])]
            print(f"done: {case} ({results['tre.sdc'].table.size} cells)", file=sys.stderr)

    print(f"\n{options.rows:,} records per dataset; median of {options.repeats} runs (seconds)\n")
    print(f"{'case':<20} | {'pandas s':>8} | {'tre.sdc s':>9} | {'acro s':>7} | {'tre.sdc/pandas':>14} | acro/tre.sdc")
    for case, pandas_s, ours_s, acro_s in timings:
        ratios = f"{ours_s / pandas_s:14.1f} | {acro_s / ours_s:12.1f}"
        print(f"{case:<20} | {pandas_s:8.3f} | {ours_s:9.3f} | {acro_s:7.3f} | {ratios}")
    print("\nPer-cell agreement with ACRO (flagged = fail)\n")
    print(f"{'case':<20} | {'rule':<9} | {'cells':>5} | {'ours':>5} | {'acro':>5} | {'agree':>5} | disagree")
    for case, rule, cells, ours_n, acro_n, agree in agreements:
        print(f"{case:<20} | {rule:<9} | {cells:5d} | {ours_n:5d} | {acro_n:5d} | {agree:5d} | {cells - agree:8d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
