"""Provisioning throughput and memory: our DuckDB pipeline against a straightforward pandas version.

    .venv/bin/python benchmarks/provision.py [--rows 5000000] [--skip-pandas]

Generates a synthetic hospital-episodes CSV (NHS numbers from the test range), then runs the same steps in each
implementation, each in its own process so peak RSS is per implementation: read, keep the approved columns and
the rows matching the approved filter, drop invalid NHS numbers and opted-out patients, pseudonymise the NHS
number (HMAC-SHA256 with the project key), generalise date of birth to the year and postcode to the outward code,
write Parquet. Prints rows/s and peak RSS for each, and checks that both wrote the same rows.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

KEY = bytes(range(32))
FILTER_CODES = ["E11", "E11.9", "E11.65"]
COLUMNS = [
    "nhs_number",
    "date_of_birth",
    "postcode",
    "sex",
    "diagnosis_code",
    "admission_date",
    "length_of_stay",
    "hba1c",
]


def run_ours(source: Path, optouts: Path, output: Path, work: Path) -> None:
    from tre.data import PseudonymKey, plan_extract, run_extract
    from tre.governance import approved_datasets
    from tre.spec import Dataset, Project, load

    dataset = load(Dataset, REPO / "examples" / "hospital-episodes.dataset.yaml")
    project = load(Project, REPO / "examples" / "diabetes-outcomes.project.yaml")
    plan = plan_extract(dataset, project.spec.datasets[0], approved_datasets(project.spec, {})[0])
    # the opt-out list as stored by 'tre optout import' (done once per list version, not per extract)
    run_extract(
        plan, source, optouts=optouts.with_suffix(".parquet"), key=PseudonymKey(1, KEY), output=output, temp_dir=work
    )


def run_pandas(source: Path, optouts: Path, output: Path, work: Path) -> None:
    import hashlib
    import hmac

    import pandas as pd

    from tre.governance.nhs_number import is_valid_nhs_number

    del work
    frame = pd.read_csv(source, dtype={"nhs_number": str}, parse_dates=["date_of_birth", "admission_date"])
    frame = frame[frame["diagnosis_code"].isin(FILTER_CODES) & (frame["admission_date"] >= "2020-01-01")]
    frame = frame[COLUMNS].copy()
    numbers = frame["nhs_number"].str.replace(r"[ -]", "", regex=True)
    valid = numbers.map(lambda n: isinstance(n, str) and n.isdigit() and is_valid_nhs_number(n))
    opted = {line.strip().replace(" ", "") for line in optouts.read_text().splitlines()}
    keep = valid & ~numbers.isin(opted)
    frame, numbers = frame[keep], numbers[keep]
    frame["nhs_number"] = numbers.map(lambda n: hmac.new(KEY, n.encode(), hashlib.sha256).hexdigest()[:32])
    frame["date_of_birth"] = frame["date_of_birth"].dt.year.astype("int32")
    outward = r"^([A-Z]{1,2}[0-9][A-Z0-9]?) ?[0-9][A-Z]{2}$"
    frame["postcode"] = frame["postcode"].str.strip().str.upper().str.extract(outward, expand=False)
    frame["admission_date"] = frame["admission_date"].dt.date
    frame.to_parquet(output, index=False)


def generate(directory: Path, rows: int) -> None:
    from tre.data import parse_optout_file, write_demo_data

    files = write_demo_data(directory, rows=rows)
    files.optouts.with_suffix(".parquet").write_bytes(parse_optout_file(files.optouts).to_parquet_bytes())


def child(args: argparse.Namespace) -> None:
    if args.child == "generate":
        generate(Path(args.work), int(args.source))
        return
    runner = {"ours": run_ours, "pandas": run_pandas}[args.child]
    runner(Path(args.source), Path(args.optouts), Path(args.output), Path(args.work))


def measure(name: str, source: Path, optouts: Path, work: Path) -> tuple[float, float, Path]:
    """Wall seconds and peak RSS (MiB) of one implementation, run in a fresh process."""
    output = work / f"{name}.parquet"
    argv = [sys.executable, __file__, "--child", name, "--source", str(source), "--optouts", str(optouts)]
    argv += ["--output", str(output), "--work", str(work)]
    started = time.perf_counter()
    process = subprocess.Popen(argv)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"{name} failed with status {status}")
    return seconds, usage.ru_maxrss / 1024, output


def same_rows(first: Path, second: Path) -> bool:
    import pyarrow.parquet as pq

    def rows(path: Path) -> list[tuple[object, ...]]:
        table = pq.read_table(path).select(COLUMNS)
        return sorted(tuple(str(v) for v in row.values()) for row in table.to_pylist())

    return rows(first) == rows(second)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--skip-pandas", action="store_true", help="only our pipeline (e.g. for 10M-row memory runs)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    for hidden in ("--source", "--optouts", "--output", "--work"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    with tempfile.TemporaryDirectory(prefix="tre-bench-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        # generated in its own process: a child's peak RSS on Linux starts from its parent's at fork
        data = work / "data"
        subprocess.run(
            [sys.executable, __file__, "--child", "generate", "--source", str(args.rows), "--work", str(data)],
            check=True,
        )
        episodes, optouts = data / "hospital-episodes.csv", data / "optouts.txt"
        size = episodes.stat().st_size / 1024**2
        took = time.perf_counter() - started
        print(f"generated {args.rows:,} rows ({size:,.0f} MiB CSV) in {took:.1f}s on {os.cpu_count()} cores")
        results = {"ours (DuckDB)": measure("ours", episodes, optouts, work)}
        if not args.skip_pandas:
            results["pandas baseline"] = measure("pandas", episodes, optouts, work)
        print()
        print(f"{'implementation':<18} {'seconds':>8} {'rows/s':>12} {'peak RSS MiB':>13} {'vs pandas':>10}")
        baseline = results.get("pandas baseline", (None,))[0]
        for name, (seconds, rss, _) in results.items():
            ratio = f"{baseline / seconds:.1f}x" if baseline else "-"
            print(f"{name:<18} {seconds:>8.2f} {args.rows / seconds:>12,.0f} {rss:>13,.0f} {ratio:>10}")
        if not args.skip_pandas:
            agree = same_rows(results["ours (DuckDB)"][2], results["pandas baseline"][2])
            print(f"\nsame rows written by both: {'yes' if agree else 'NO'}")
            if not agree:
                raise SystemExit(1)


if __name__ == "__main__":
    main()
