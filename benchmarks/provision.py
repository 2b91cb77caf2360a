"""Provisioning throughput and memory: our pipeline against a straightforward pandas version.

    .venv/bin/python benchmarks/provision.py [--rows 5000000] [--repeat 3] [--sources csv,parquet] [--skip-pandas]

Generates a synthetic hospital-episodes dataset (NHS numbers from the test range) as CSV and as Parquet (the same
rows), then runs the same steps in each implementation, each in its own process so peak RSS is per implementation:
checksum the source, read the columns the extract uses, keep the rows matching the approved filter, drop invalid NHS
numbers and opted-out patients, pseudonymise the NHS number (HMAC-SHA256 with the project key), generalise date of
birth to the year and postcode to the outward code, write Parquet. Prints wall and CPU seconds, rows/s and peak RSS
for each, the CPU seconds of each stage of ours, and checks that all wrote the same rows. The pandas baseline reads
the CSV; it also runs on the Parquet source, as a like-for-like comparison. With --repeat, the runs take turns and
the fastest run of each is reported (on a shared machine the fastest run is the one least disturbed by others).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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


LIBRARIES = {
    "ours": ("duckdb", "pyarrow.csv", "pyarrow.parquet", "tre.data", "tre.governance", "tre.spec"),
    "pandas": ("numpy", "pandas", "pyarrow.parquet"),
}


def run_ours(source: Path, optouts: Path, output: Path, work: Path) -> None:
    from tre.data import PseudonymKey, plan_extract, run_extract
    from tre.governance import approved_datasets
    from tre.spec import Dataset, Project, load

    dataset = load(Dataset, REPO / "examples" / "hospital-episodes.dataset.yaml")
    project = load(Project, REPO / "examples" / "diabetes-outcomes.project.yaml")
    plan = plan_extract(dataset, project.spec.datasets[0], approved_datasets(project.spec, {})[0])
    plan = dataclasses.replace(plan, format=source.suffix.lstrip("."), location=str(source))
    # the opt-out list as stored by 'tre optout import' (done once per list version, not per extract)
    result = run_extract(
        plan, source, optouts=optouts.with_suffix(".parquet"), key=PseudonymKey(1, KEY), output=output, temp_dir=work
    )
    output.with_suffix(".stages.json").write_text(json.dumps(result.stage_seconds))


def run_pandas(source: Path, optouts: Path, output: Path, work: Path) -> None:
    import hashlib
    import hmac

    import numpy as np
    import pandas as pd

    del work
    with source.open("rb") as handle:  # the manifest records the source's checksum; ours computes it while reading
        hashlib.file_digest(handle, "sha256").hexdigest()
    if source.suffix == ".parquet":
        frame = pd.read_parquet(source, columns=COLUMNS)
        for name in ("date_of_birth", "admission_date"):
            frame[name] = pd.to_datetime(frame[name])
    else:
        frame = pd.read_csv(
            source,
            usecols=COLUMNS,
            dtype={"nhs_number": str},
            parse_dates=["date_of_birth", "admission_date"],
            date_format="%Y-%m-%d",
        )
    frame = frame[frame["diagnosis_code"].isin(FILTER_CODES) & (frame["admission_date"] >= "2020-01-01")].copy()
    numbers = frame["nhs_number"].str.replace(r"[ -]", "", regex=True)
    ten_digits = numbers.str.fullmatch(r"[0-9]{10}").fillna(False).to_numpy(bool)
    as_int = pd.to_numeric(numbers.where(ten_digits, "0")).to_numpy(np.int64)
    digits = (as_int[:, None] // 10 ** np.arange(9, -1, -1)) % 10
    valid = ten_digits & ((digits * np.arange(10, 0, -1)).sum(axis=1) % 11 == 0)  # Modulus 11, vectorised
    opted = np.isin(as_int, pd.read_parquet(optouts.with_suffix(".parquet"))["nhs_number"].to_numpy())
    keep = valid & ~opted
    frame, numbers = frame[keep], numbers[keep]
    pseudonyms = {n: hmac.new(KEY, n.encode(), hashlib.sha256).hexdigest()[:32] for n in numbers.unique()}
    frame["nhs_number"] = numbers.map(pseudonyms)  # each distinct number hashed once, as ours does
    frame["date_of_birth"] = frame["date_of_birth"].dt.year.astype("int32")
    outward = r"^([A-Z]{1,2}[0-9][A-Z0-9]?) ?[0-9][A-Z]{2}$"
    frame["postcode"] = frame["postcode"].str.strip().str.upper().str.extract(outward, expand=False)
    frame["admission_date"] = frame["admission_date"].dt.date
    frame.to_parquet(output, index=False)


def generate(directory: Path, rows: int) -> None:
    from tre.data import parse_optout_file, write_demo_data

    files = write_demo_data(directory, rows=rows, parquet=True)
    files.optouts.with_suffix(".parquet").write_bytes(parse_optout_file(files.optouts).to_parquet_bytes())


def child(args: argparse.Namespace) -> None:
    if args.child == "generate":
        generate(Path(args.work), int(args.source))
        return
    runner = {"ours": run_ours, "pandas": run_pandas}[args.child]
    for module in LIBRARIES[args.child]:  # loaded before the clock starts: the work alone is timed
        importlib.import_module(module)
    started = time.perf_counter()
    output = Path(args.output)
    runner(Path(args.source), Path(args.optouts), output, Path(args.work))
    output.with_suffix(".seconds").write_text(str(time.perf_counter() - started))


@dataclass(frozen=True)
class Run:
    seconds: float  # the whole process: interpreter start, imports, the work
    cpu_seconds: float
    rss_mib: float
    work_seconds: float  # the work alone, libraries already imported
    stages: dict[str, float]  # ours only: CPU seconds per stage


def measure(name: str, source: Path, optouts: Path, work: Path) -> Run:
    """Wall and CPU seconds and peak RSS (MiB) of one implementation on one source, run in a fresh process."""
    implementation = name.split("-")[0]
    argv = [sys.executable, __file__, "--child", implementation, "--source", str(source), "--optouts", str(optouts)]
    output = work / f"{name}.parquet"
    argv += ["--output", str(output), "--work", str(work)]
    started = time.perf_counter()
    process = subprocess.Popen(argv)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"{name} failed with status {status}")
    work_seconds = float(output.with_suffix(".seconds").read_text())
    stages_file = output.with_suffix(".stages.json")
    stages = json.loads(stages_file.read_text()) if stages_file.exists() else {}
    return Run(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, work_seconds, stages)


def rows_of(path: Path) -> list[tuple[object, ...]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path).select(COLUMNS)
    return sorted(tuple(str(v) for v in row.values()) for row in table.to_pylist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each implementation, taking turns; best kept")
    parser.add_argument("--sources", default="csv,parquet", help="source formats: csv, parquet, or csv,parquet")
    parser.add_argument("--skip-pandas", action="store_true", help="only our pipeline (e.g. for 10M-row memory runs)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    for hidden in ("--source", "--optouts", "--output", "--work"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    formats = [f.strip() for f in args.sources.split(",") if f.strip()]
    if not formats or set(formats) - {"csv", "parquet"}:
        raise SystemExit("--sources takes csv, parquet or csv,parquet")

    with tempfile.TemporaryDirectory(prefix="tre-bench-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        # generated in its own process: a child's peak RSS on Linux starts from its parent's at fork
        data = work / "data"
        subprocess.run(
            [sys.executable, __file__, "--child", "generate", "--source", str(args.rows), "--work", str(data)],
            check=True,
        )
        sources = {f: data / f"hospital-episodes.{f}" for f in formats}
        sizes = ", ".join(f"{sources[f].stat().st_size / 1024**2:,.0f} MiB {f}" for f in formats)
        took = time.perf_counter() - started
        print(f"generated {args.rows:,} rows ({sizes}) in {took:.1f}s on {os.cpu_count()} cores")
        names = [f"ours-{f}" for f in formats] + ([] if args.skip_pandas else [f"pandas-{f}" for f in formats])
        runs: dict[str, list[Run]] = {name: [] for name in names}
        for _ in range(args.repeat):
            for name in names:
                runs[name].append(measure(name, sources[name.split("-")[1]], data / "optouts.txt", work))
        report(runs, args.rows)
        stage_report(runs)
        check_same_rows(work, names)


def label(name: str) -> str:
    implementation, source = name.split("-")
    return f"{implementation} ({'CSV' if source == 'csv' else 'Parquet'})"


def report(runs: dict[str, list[Run]], rows: int) -> None:
    best = {name: min(found, key=lambda r: r.seconds) for name, found in runs.items()}
    repeat = len(next(iter(runs.values())))
    print(f"\nfastest of {repeat} run(s) each; peak RSS is the largest of any run")
    print("seconds, CPU s, rows/s: the whole process; work s: the same run without starting Python and importing")
    print("vs pandas: against the pandas baseline (reading the CSV); same source: against pandas reading the same file")
    header = f"{'seconds':>8} {'CPU s':>7} {'rows/s':>12} {'peak RSS MiB':>13} {'vs pandas':>10} {'same source':>12}"
    print(f"{'implementation':<18} {header} {'work s':>7} {'work rows/s':>12}")
    baseline = best["pandas-csv"].seconds if "pandas-csv" in best else None
    for name, run in best.items():
        rss = max(r.rss_mib for r in runs[name])
        ratio = f"{baseline / run.seconds:.1f}x" if baseline else "-"
        same = best.get("pandas-" + name.split("-")[1])
        like = f"{same.seconds / run.seconds:.1f}x" if same else "-"
        speed = f"{run.seconds:>8.2f} {run.cpu_seconds:>7.2f} {rows / run.seconds:>12,.0f}"
        work = f"{run.work_seconds:>7.2f} {rows / run.work_seconds:>12,.0f}"
        print(f"{label(name):<18} {speed} {rss:>13,.0f} {ratio:>10} {like:>12} {work}")
    if repeat > 1:
        for name, found in runs.items():
            print(f"{label(name)}: all runs {', '.join(f'{r.seconds:.2f}' for r in found)} s")


def stage_report(runs: dict[str, list[Run]]) -> None:
    """CPU seconds per stage of ours, in its fastest run: on the thread that did the work (the stages overlap)."""
    ours = {name: min(found, key=lambda r: r.seconds) for name, found in runs.items() if name.startswith("ours")}
    stages = list(dict.fromkeys(stage for run in ours.values() for stage in run.stages))
    if not stages:
        return
    print("\nours: CPU seconds per stage in the fastest run (the stages run on three threads and overlap)")
    print(f"{'stage':<14}" + "".join(f"{label(name):>16}" for name in ours))
    for stage in [*stages, "all stages"]:
        cells = [sum(r.stages.values()) if stage == "all stages" else r.stages.get(stage, 0.0) for r in ours.values()]
        print(f"{stage:<14}" + "".join(f"{cell:>16.2f}" for cell in cells))


def check_same_rows(work: Path, names: list[str]) -> None:
    if len(names) < 2:
        return
    first = rows_of(work / f"{names[0]}.parquet")
    different = [label(name) for name in names[1:] if rows_of(work / f"{name}.parquet") != first]
    print(f"\nsame rows written by all: {'yes' if not different else 'NO: ' + ', '.join(different)}")
    if different:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
