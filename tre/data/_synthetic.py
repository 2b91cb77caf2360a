"""Realistic synthetic patient data for the demo, the tests and the benchmarks. No real person is in it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tre.data._nhs import TEST_RANGE_CAPACITY, test_range_numbers

OUTWARD_CODES = ("LS1", "LS6", "M13", "M20", "B15", "B29", "NE1", "NE6", "EH8", "CF10", "BS8", "SW1A", "E1", "N7", "L8")
SEXES = ("F", "M", "I")
ETHNICITIES = tuple("ABCDEFGHJKLMNPRSZ")  # NHS ethnic category codes
DIAGNOSES = ("E11", "E11.9", "E11.65", "I10", "J45", "C50", "N18", "I21", "F32", "K21", "E10", "M54")
FIRST_NAMES = ("Ann", "Ben", "Cara", "Dev", "Ema", "Finn", "Gita", "Hal", "Ines", "Jon", "Kai", "Lea", "Mo", "Nia")
LAST_NAMES = ("Smith", "Jones", "Patel", "Khan", "Brown", "Wilson", "Evans", "Taylor", "Ali", "Walker", "Wright")
_LETTERS = np.array(list("ABDEFGHJLNPQRSTUWXYZ"))  # letters used in the inward code
_EPOCH = dt.date(1970, 1, 1)


@dataclass(frozen=True)
class SyntheticFiles:
    episodes: Path
    optouts: Path
    rows: int
    patients: int
    opted_out: int
    episodes_parquet: Path | None = None  # the same episodes as Parquet, when asked for


def _days(start: dt.date, end: dt.date) -> tuple[int, int]:
    return (start - _EPOCH).days, (end - _EPOCH).days


def _patients(count: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    low, high = _days(dt.date(1930, 1, 1), dt.date(2008, 12, 31))
    inward = (
        rng.integers(0, 10, count).astype(str).astype(object)
        + _LETTERS[rng.integers(0, _LETTERS.size, count)].astype(object)
        + _LETTERS[rng.integers(0, _LETTERS.size, count)].astype(object)
    )
    return {
        "nhs_number": test_range_numbers(count, rng).astype(str),
        "patient_name": (
            np.array(FIRST_NAMES, dtype=object)[rng.integers(0, len(FIRST_NAMES), count)]
            + " "
            + np.array(LAST_NAMES, dtype=object)[rng.integers(0, len(LAST_NAMES), count)]
        ),
        "date_of_birth": rng.integers(low, high, count),
        "postcode": np.array(OUTWARD_CODES, dtype=object)[rng.integers(0, len(OUTWARD_CODES), count)] + " " + inward,
        "sex": np.array(SEXES)[rng.choice(3, count, p=[0.51, 0.485, 0.005])],
        "ethnicity": np.array(ETHNICITIES)[rng.integers(0, len(ETHNICITIES), count)],
    }


def episodes_table(rows: int, patients: int, seed: int = 2026, invalid_fraction: float = 0.001) -> pa.Table:
    """``rows`` hospital episodes for ``patients`` people; a small fraction carry mistyped NHS numbers."""
    rng = np.random.default_rng(seed)
    people = _patients(patients, rng)
    who = rng.integers(0, patients, rows)
    nhs = people["nhs_number"][who].astype(object)
    mistyped = rng.random(rows) < invalid_fraction
    nhs[mistyped] = np.char.add("12345", rng.integers(10000, 99999, int(mistyped.sum())).astype(str))
    low, high = _days(dt.date(2015, 1, 1), dt.date(2025, 12, 31))
    hba1c = np.round(rng.normal(52, 12, rows), 1)
    return pa.table(
        {
            "nhs_number": pa.array(nhs, pa.string()),
            "patient_name": pa.array(people["patient_name"][who], pa.string()),
            "date_of_birth": pa.array(people["date_of_birth"][who].astype(np.int32), pa.int32()).cast(pa.date32()),
            "postcode": pa.array(people["postcode"][who], pa.string()),
            "sex": pa.array(people["sex"][who], pa.string()),
            "ethnicity": pa.array(people["ethnicity"][who], pa.string()),
            "diagnosis_code": pa.array(np.array(DIAGNOSES)[rng.integers(0, len(DIAGNOSES), rows)], pa.string()),
            "admission_date": pa.array(rng.integers(low, high, rows).astype(np.int32), pa.int32()).cast(pa.date32()),
            "length_of_stay": pa.array(rng.geometric(0.25, rows).astype(np.int64), pa.int64()),
            "hba1c": pa.array(hba1c, pa.float64(), mask=rng.random(rows) < 0.05),
        }
    )


def write_optouts(path: Path, table: pa.Table, fraction: float, seed: int) -> int:
    """Opt-out file: a fraction of the patients, one NHS number a line (some spaced 3-3-4), plus two bad lines."""
    rng = np.random.default_rng(seed + 1)
    valid = np.unique(np.array([n for n in table.column("nhs_number").to_pylist() if n.startswith("999")]))
    chosen = rng.choice(valid, size=max(1, int(valid.size * fraction)), replace=False)
    lines = [f"{n[:3]} {n[3:6]} {n[6:]}" if i % 3 == 0 else n for i, n in enumerate(sorted(chosen))]
    path.write_text("\n".join([*lines, "not-a-number", "9990000001"]) + "\n", encoding="utf-8")
    return len(chosen)


def write_demo_data(
    directory: Path,
    *,
    rows: int = 20_000,
    patients: int | None = None,
    seed: int = 2026,
    optout_fraction: float = 0.05,
    parquet: bool = False,
) -> SyntheticFiles:
    """Write ``hospital-episodes.csv`` (and, with ``parquet``, the same rows as ``hospital-episodes.parquet``) and
    ``optouts.txt`` into ``directory``.

    By default one patient per four episodes, capped by the size of the NHS test number range."""
    directory.mkdir(parents=True, exist_ok=True)
    patients = patients or min(max(1, rows // 4), TEST_RANGE_CAPACITY)
    table = episodes_table(rows, patients, seed)
    episodes = directory / "hospital-episodes.csv"
    _atomically(episodes, lambda path: pacsv.write_csv(table, path, pacsv.WriteOptions(quoting_style="needed")))
    episodes_parquet = directory / "hospital-episodes.parquet" if parquet else None
    if episodes_parquet:
        _atomically(episodes_parquet, lambda path: pq.write_table(table, path, compression="zstd"))
    optouts = directory / "optouts.txt"
    opted_out = write_optouts(optouts, table, optout_fraction, seed)
    return SyntheticFiles(episodes, optouts, rows, patients, opted_out, episodes_parquet)


def _atomically(target: Path, write: Callable[[Path], object]) -> None:
    partial = target.with_name(f".{target.name}.partial")
    write(partial)
    partial.replace(target)
