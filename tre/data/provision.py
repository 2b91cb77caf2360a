"""Provision a project's extract: gate check, pipeline per dataset, files then manifest, record and audit.

Three steps, so the database is never locked while data is processed: read what is needed (one read
transaction), build the extract in the object store under a new id (no transaction), then re-check the gate
and record it (one write transaction). A failure anywhere removes what this run wrote; the previous extract
stays intact and served until the new one is recorded.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tre import services
from tre.data._keys import KeyProvider, PseudonymKey
from tre.data._optout import ParsedOptOuts
from tre.data._pipeline import EngineLimits, ExtractCounts, run_extract, sha256_file
from tre.data._plan import ExtractPlan, plan_extract
from tre.errors import ConflictError, InputError
from tre.governance import PATIENT_DATA_CITATION
from tre.services import Actor, check_actor_is_admin, timestamp
from tre.spec import Approval, Dataset, DatasetRequest
from tre.storage import ObjectStore
from tre.store import Extract, OptOutVersion, Store, Unit

KEEP_EXTRACTS = 2  # the current one, and the previous one that running workspaces may still have mounted


@dataclass(frozen=True)
class DataServices:
    """What provisioning needs from outside: where extracts go, where keys come from, where sources are."""

    objects: ObjectStore
    keys: KeyProvider
    work_root: Path
    open_source_store: Callable[[str], ObjectStore]
    limits: EngineLimits = field(default_factory=EngineLimits)


@dataclass(frozen=True)
class _Inputs:
    project: str
    generation: int
    plans: tuple[ExtractPlan, ...]
    optout: OptOutVersion | None
    dataset_generations: dict[str, int]


def extract_prefix(project: str, extract_id: str) -> str:
    return f"projects/{project}/extracts/{extract_id}/"


def check_no_blockers(unit: Unit, name: str, today: dt.date) -> services.ProjectStatus:
    status = services.project_status(unit, services.get_project(unit, name), today=today)
    if status.blockers:
        reasons = "; ".join(b.message for b in status.blockers)
        raise ConflictError(f"project {name} may not have data: {reasons}; see 'tre project show {name}'")
    return status


def _gather(unit: Unit, name: str, today: dt.date) -> _Inputs:
    status = check_no_blockers(unit, name, today)
    approval = status.approval
    assert approval is not None  # no blockers means an approval is in force
    datasets = {s.dataset.name: s for s in unit.datasets.all()}
    plans = tuple(_plan(datasets[r.name].dataset, r, approval) for r in status.stored.project.spec.datasets)
    optout = unit.optouts.latest()
    if optout is None and any(p.nhs_number_column for p in plans):
        raise ConflictError("no national data opt-out list has been imported; run 'tre optout import FILE' first")
    generations = {name: datasets[name].generation for name in (p.dataset for p in plans)}
    return _Inputs(name, status.stored.generation, plans, optout, generations)


def _plan(dataset: Dataset, request: DatasetRequest, approval: Approval) -> ExtractPlan:
    approved = approval.dataset(request.name)
    assert approved is not None  # the gate checked it
    return plan_extract(dataset, request, approved)


def provision_project(store: Store, actor: Actor, name: str, data: DataServices, *, now: dt.datetime) -> dict[str, Any]:
    """Build and record a new extract for an approved project; returns its manifest."""
    check_actor_is_admin(actor, "provision data")
    with store.transaction(write=False) as unit:
        inputs = _gather(unit, name, now.date())
    extract_id = f"{now:%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(3)}"
    manifest = _build(inputs, extract_id, actor, data, now)
    try:
        with store.transaction() as unit:
            check_no_blockers(unit, name, now.date())
            _record(unit, actor, inputs, extract_id, manifest, now)
            stale = unit.extracts.for_project(name)[KEEP_EXTRACTS:]
            _prune(unit, actor, data.objects, stale, now)
    except BaseException:
        _remove_prefix(data.objects, extract_prefix(name, extract_id))
        raise
    return manifest


def _build(inputs: _Inputs, extract_id: str, actor: Actor, data: DataServices, now: dt.datetime) -> dict[str, Any]:
    data.work_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="extract-", dir=data.work_root))
    prefix = extract_prefix(inputs.project, extract_id)
    try:
        key = data.keys.pseudonymisation_key(inputs.project)
        optouts = _local_copy(data.objects, inputs.optout.object_key, work) if inputs.optout else None
        entries = [_extract_one(plan, inputs, key, optouts, work, prefix, data) for plan in inputs.plans]
        manifest = _manifest(inputs, extract_id, actor, key, entries, now)
        info = data.objects.put_bytes(prefix + "manifest.json", json.dumps(manifest, indent=2).encode())
        manifest["manifest"] = {"key": info.key, "uri": info.uri}
        return manifest
    except BaseException:
        _remove_prefix(data.objects, prefix)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _local_copy(objects: ObjectStore, key: str, work: Path) -> Path:
    local = objects.local_path(key)
    if local is not None and local.is_file():
        return local
    target = work / Path(key).name
    objects.download(key, target)
    return target


def _source_path(plan: ExtractPlan, work: Path, data: DataServices) -> Path:
    if plan.location.startswith("s3://"):
        bucket, _, key = plan.location.removeprefix("s3://").partition("/")
        target = work / f"source-{plan.dataset}.{plan.format}"
        data.open_source_store(bucket).download(key, target)
        return target
    path = Path(plan.location)
    if not path.is_file():
        raise InputError(f"dataset {plan.dataset}: source {path} does not exist; check the dataset's location")
    return path


def _extract_one(
    plan: ExtractPlan,
    inputs: _Inputs,
    key: PseudonymKey,
    optouts: Path | None,
    work: Path,
    prefix: str,
    data: DataServices,
) -> dict[str, Any]:
    source = _source_path(plan, work, data)
    output = work / f"{plan.dataset}.parquet"
    limits_dir = work / "spill"
    limits_dir.mkdir(exist_ok=True)
    result = run_extract(plan, source, optouts=optouts, key=key, output=output, temp_dir=limits_dir, limits=data.limits)
    output_sha256 = sha256_file(output)
    info = data.objects.put_file(prefix + output.name, output)
    output.unlink()
    local = data.objects.local_path(info.key)
    return {
        "name": plan.dataset,
        "source": {
            "location": plan.location,
            "format": plan.format,
            "sha256": result.source_sha256,
            "generation": inputs.dataset_generations[plan.dataset],
        },
        **_counts(result.counts),
        "columns": [{"name": c.name, "transform": c.transform.value} for c in plan.outputs],
        "pseudonymisedColumns": list(plan.pseudonymised),
        "filter": [c.model_dump(mode="json") for c in plan.filter],
        "file": {
            "key": info.key,
            "uri": info.uri,
            "localPath": str(local) if local else None,
            "sha256": output_sha256,
            "bytes": info.size,
            "versionId": info.version_id,
        },
    }


def _counts(counts: ExtractCounts) -> dict[str, int]:
    return {
        "rowsRead": counts.rows_read,
        "rowsMatchingFilter": counts.rows_matching_filter,
        "invalidNhsNumbers": counts.invalid_nhs_numbers,
        "optOutsRemoved": counts.opt_outs_removed,
        "rowsWritten": counts.rows_written,
    }


def _manifest(
    inputs: _Inputs, extract_id: str, actor: Actor, key: PseudonymKey, entries: list[dict[str, Any]], now: dt.datetime
) -> dict[str, Any]:
    return {
        "project": inputs.project,
        "extract": extract_id,
        "projectGeneration": inputs.generation,
        "createdAt": timestamp(now),
        "createdBy": actor.name,
        "keyVersion": key.version,
        "optOutVersion": inputs.optout.version if inputs.optout else None,
        "citation": PATIENT_DATA_CITATION,
        "datasets": entries,
    }


def _record(
    unit: Unit, actor: Actor, inputs: _Inputs, extract_id: str, manifest: dict[str, Any], now: dt.datetime
) -> None:
    unit.extracts.add(
        Extract(
            id=extract_id,
            project=inputs.project,
            created_at=timestamp(now),
            optout_version=manifest["optOutVersion"] or 0,
            key_version=manifest["keyVersion"],
            manifest_key=manifest["manifest"]["key"],
            manifest=json.dumps(manifest, sort_keys=True),
        )
    )
    summary = {
        d["name"]: {k: d[k] for k in ("rowsRead", "optOutsRemoved", "rowsWritten")} for d in manifest["datasets"]
    }
    details = {"extract": extract_id, "optOutVersion": manifest["optOutVersion"], "keyVersion": manifest["keyVersion"]}
    unit.audit.append(
        at=timestamp(now),
        actor=actor.name,
        action="data.provisioned",
        project=inputs.project,
        target=extract_id,
        details=details | {"datasets": summary},
    )


def _prune(unit: Unit, actor: Actor, objects: ObjectStore, old: list[Extract], now: dt.datetime) -> None:
    for extract in old:
        _remove_prefix(objects, extract_prefix(extract.project, extract.id))
        unit.extracts.delete(extract.id)
        unit.audit.append(
            at=timestamp(now),
            actor=actor.name,
            action="data.extract-removed",
            project=extract.project,
            target=extract.id,
            details={"reason": "superseded"},
        )


def _remove_prefix(objects: ObjectStore, prefix: str) -> None:
    for info in list(objects.list(prefix)):
        objects.delete(info.key)


def stale_projects(unit: Unit) -> list[str]:
    """Projects whose current extract predates the newest opt-out list."""
    latest = unit.optouts.latest()
    if latest is None:
        return []
    stale = []
    for stored in unit.projects.all():
        current = unit.extracts.current(stored.name)
        if current is not None and current.optout_version < latest.version:
            stale.append(stored.name)
    return stale


def import_optouts(
    unit: Unit, actor: Actor, parsed: ParsedOptOuts, objects: ObjectStore, *, source: str, now: dt.datetime
) -> tuple[OptOutVersion, list[str]]:
    """Store a new opt-out version; returns it and the projects it makes stale."""
    check_actor_is_admin(actor, "import opt-out lists")
    latest = unit.optouts.latest()
    version = (latest.version if latest else 0) + 1
    key = f"optouts/v{version:06d}.parquet"
    objects.put_bytes(key, parsed.to_parquet_bytes())
    item = OptOutVersion(
        version, timestamp(now), int(parsed.numbers.size), len(parsed.invalid_lines), parsed.sha256, key
    )
    unit.optouts.add(item)
    stale = stale_projects(unit)
    details = {
        "version": version,
        "numbers": item.numbers,
        "invalidLines": item.invalid_lines,
        "sha256": item.sha256,
        "source": source,
        "projectsStale": stale,
    }
    unit.audit.append(at=timestamp(now), actor=actor.name, action="optout.imported", target=key, details=details)
    return item, stale
