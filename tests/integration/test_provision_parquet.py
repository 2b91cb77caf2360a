"""``tre provision`` from a Parquet source: the extract a CSV source of the same rows gives, pseudonyms included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import EXAMPLES, Tre
from tests.integration.test_provision import NAME, manifest, vault_settings  # noqa: F401 - a fixture
from tests.support.cli import approve_example, ok
from tre.data import sha256_file, write_demo_data


def _declaration(tmp_path: Path, source: Path, source_format: str) -> Path:
    dataset = yaml.safe_load((EXAMPLES / "hospital-episodes.dataset.yaml").read_text())
    dataset["spec"]["location"], dataset["spec"]["format"] = str(source), source_format
    path = tmp_path / f"dataset-{source_format}.yaml"
    path.write_text(yaml.safe_dump(dataset))
    return path


def _rows(document: dict[str, Any]) -> list[tuple[Any, ...]]:
    (dataset,) = document["datasets"]
    return sorted(tuple(r.values()) for r in pq.read_table(dataset["file"]["localPath"]).to_pylist())


def _counts(document: dict[str, Any]) -> dict[str, int]:
    (dataset,) = document["datasets"]
    return {k: v for k, v in dataset.items() if k.startswith(("rows", "invalid", "optOuts"))}


@pytest.mark.usefixtures("vault_settings")  # a real OpenBao holds the project's key
def test_a_parquet_source_gives_the_extract_its_csv_gives(tre: Tre, tmp_path: Path) -> None:
    files = write_demo_data(tmp_path / "data", rows=3000, seed=7, parquet=True)
    assert files.episodes_parquet is not None
    ok(tre, "user", "add", "alice", "--role", "researcher", "-a", "safe-researcher:2027-06-30")
    ok(tre, "user", "add", "bob", "--role", "researcher", "-a", "safe-researcher:2027-06-30")
    ok(tre, "user", "add", "carol", "--role", "approver")
    ok(tre, "dataset", "register", "-f", str(_declaration(tmp_path, files.episodes, "csv")))
    ok(tre, "project", "apply", "-f", str(EXAMPLES / "diabetes-outcomes.project.yaml"))
    approve_example(tre)
    ok(tre, "optout", "import", str(files.optouts))
    ok(tre, "provision", NAME)
    from_csv = manifest(tre)

    ok(tre, "dataset", "register", "-f", str(_declaration(tmp_path, files.episodes_parquet, "parquet")))
    ok(tre, "provision", NAME)
    from_parquet = manifest(tre)

    assert from_parquet["extract"] != from_csv["extract"]
    assert from_parquet["datasets"][0]["source"]["format"] == "parquet"
    assert from_parquet["datasets"][0]["source"]["sha256"] == sha256_file(files.episodes_parquet)
    assert _counts(from_parquet) == _counts(from_csv)
    assert _counts(from_csv)["rowsWritten"] > 0
    assert _rows(from_parquet) == _rows(from_csv)  # the same pseudonyms: extracts stay linkable within the project


def test_demo_data_writes_the_same_rows_as_csv_and_parquet(tmp_path: Path) -> None:
    files = write_demo_data(tmp_path, rows=500, parquet=True)
    assert files.episodes_parquet is not None
    from_parquet = pq.read_table(files.episodes_parquet)
    from_csv = pacsv.read_csv(files.episodes, convert_options=pacsv.ConvertOptions(column_types=from_parquet.schema))
    assert from_csv.equals(from_parquet)
    assert not list(tmp_path.glob(".*.partial"))
    assert write_demo_data(tmp_path / "csv-only", rows=10).episodes_parquet is None
