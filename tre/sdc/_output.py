"""Saving a checked table with a sidecar that ties its checks to the exact CSV bytes, and verifying the pair."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tre.sdc._tables import CheckedTable

FORMAT = "tre.sdc.table/1"


def sidecar_path(path: str | Path) -> Path:
    """Where the checks of the CSV at ``path`` are written: ``<path>.sdc.json``."""
    return Path(f"{path}.sdc.json")


def save(checked: CheckedTable, path: Path) -> Path:
    """Write the CSV and its sidecar; returns the sidecar's path.

    The sidecar holds the rules, each cell's outcome per rule and a summary of the evidence, but no per-cell
    statistics: the largest contributions and dominance shares describe individuals and must not leave with the table.
    """
    data = checked.table.to_csv(lineterminator="\n").encode("utf-8")
    path.write_bytes(data)
    document = {
        "format": FORMAT,
        "csv": path.name,
        "csv_sha256": hashlib.sha256(data).hexdigest(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "status": checked.status,
        "aggfunc": checked.aggfunc,
        "rules": checked.rules.as_dict(),
        "evidence_summary": evidence_summary(checked),
        "suppressed": _suppressed_cells(checked.suppressed),
        "results": _cell_results(checked.results),
    }
    sidecar = sidecar_path(path)
    sidecar.write_text(json.dumps(document, indent=1, default=_jsonable) + "\n", encoding="utf-8")
    return sidecar


def verify_saved(path: str | Path) -> bool:
    """Whether the CSV at ``path`` is byte for byte the one its sidecar describes."""
    path = Path(path)
    try:
        sidecar, data = sidecar_path(path).read_bytes(), path.read_bytes()
    except OSError:
        return False
    return read_sidecar(path.name, data, sidecar) is not None


def read_sidecar(name: str, data: bytes, sidecar: bytes) -> dict[str, Any] | None:
    """The sidecar document, if it is tre.sdc's and describes exactly ``data`` saved as ``name``; else None.

    The hash is unkeyed: it catches a table edited after its checks, not a researcher who edits both files (see
    docs/explanation/airlock.md, "What the automated checks can be trusted with").
    """
    try:
        document = json.loads(sidecar)
    except (ValueError, UnicodeDecodeError):
        return None
    matches = (
        isinstance(document, dict)
        and document.get("format") == FORMAT
        and document.get("csv") == name
        and document.get("csv_sha256") == hashlib.sha256(data).hexdigest()
    )
    return document if matches else None


def evidence_summary(checked: CheckedTable) -> dict[str, Any]:
    """Table-wide counts from the evidence and the outcomes, safe to release (no cell's statistics, not even the
    smallest count, which could be a suppressed cell's)."""
    results = checked.results
    outcome_counts = results.groupby(["rule", "status"]).size()
    return {
        "cells": int(checked.table.size),
        "cells_with_negatives": int((checked.evidence["negatives"].to_numpy() > 0).sum()),
        "cells_with_missing": int((checked.evidence["missing"].to_numpy() > 0).sum()),
        "cells_suppressed": int(checked.suppressed.to_numpy().sum()),
        "outcomes": {f"{rule}:{status}": int(n) for (rule, status), n in outcome_counts.items()},
    }


def _suppressed_cells(mask: Any) -> list[dict[str, Any]]:
    rows, cols = np.nonzero(mask.to_numpy())
    return [{"row": mask.index[i], "column": mask.columns[j]} for i, j in zip(rows, cols, strict=True)]


def _cell_results(results: Any) -> list[dict[str, Any]]:
    fields = ["row", "column", "rule", "parameters", "status", "reason"]
    return [dict(zip(fields, row, strict=True)) for row in results[fields].itertuples(index=False)]


def _jsonable(value: Any) -> Any:
    """JSON for the labels and numbers pandas hands back (anything unusual becomes a string)."""
    if isinstance(value, np.generic):
        item = value.item()
        return None if isinstance(item, float) and math.isnan(item) else item
    return str(value)
