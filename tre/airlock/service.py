"""Airlock actions: each checks who may act and whether the state allows it, then changes and audits atomically.

Files go into a quarantine area of the object store, content-addressed by SHA-256, when added (under an object
lock retention where the store has one). Submission runs the disclosure checks of ``tre.sdc`` on every file under
the project's rules and sends the request to review whatever they say: a fail or review is shown to checkers, and
an approval of an output file counts only with the approving checker's override of each such result (_overrides).
Release re-derives the decision from the votes, results and overrides, copies the approved output files to the
project's release area after re-checking every hash, then writes ``CITATION.txt`` and ``decision.json``, then
records the request as released. Release can be re-run after a crash at any point: the copies are identical, and
the state changes exactly once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tre.airlock._checks import Status
from tre.airlock._files import FileKind, RequestFile, TableKind, check_file_name
from tre.airlock._overrides import Flag, Override, check_override, check_user_can_approve, flags
from tre.airlock._permissions import (
    check_user_can_author,
    check_user_can_review,
    check_user_can_revoke,
    check_user_can_set_rules,
    check_user_can_view_request,
    user_can_review_project,
    user_can_view_request,
)
from tre.airlock._review import Ballot, Vote, check_ballot, request_outcome, visible_ballots, visible_overrides
from tre.airlock._states import Owner, State, check_transition
from tre.errors import ConflictError, InputError, IntegrityError, NotFoundError, PermissionDeniedError
from tre.governance import PATIENT_DATA_CITATION
from tre.services import Actor, get_project, timestamp
from tre.spec import ProjectSpec, User
from tre.storage import ObjectStore, put_retained
from tre.store import (
    Store,
    StoredBallot,
    StoredCheck,
    StoredFile,
    StoredOverride,
    StoredRequest,
    StoredRules,
    Unit,
)

if TYPE_CHECKING:
    from tre.sdc import FileReport, RuleSet

DEFAULT_MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_CELLS_PER_RESULT = 200  # flagged cells kept per file and rule; the rest are counted


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES


def _user(actor: Actor) -> User:
    if actor.user is None:
        raise PermissionDeniedError("airlock actions are taken by a named user: set TRE_TOKEN to your token")
    return actor.user


def _request(unit: Unit, request_id: str) -> StoredRequest:
    request = unit.airlock.get(request_id)
    if request is None:
        raise NotFoundError(f"no airlock request {request_id}")
    return request


def _spec(unit: Unit, request: StoredRequest) -> ProjectSpec:
    return get_project(unit, request.project).project.spec


def _audit(unit: Unit, actor: Actor, action: str, request: StoredRequest, now: dt.datetime, **details: Any) -> None:
    unit.audit.append(
        at=timestamp(now),
        actor=actor.name,
        action=f"airlock.{action}",
        project=request.project,
        target=request.id,
        details=details,
    )


def _move(
    unit: Unit, actor: Actor, request: StoredRequest, target: State, by: Owner, now: dt.datetime
) -> StoredRequest:
    check_transition(State(request.state), target, by)
    unit.airlock.update(request.id, state=target.value, now=timestamp(now))
    _audit(unit, actor, "state-changed", request, now, **{"from": request.state, "to": target.value, "by": by.value})
    return _request(unit, request.id)


def create_request(
    unit: Unit, actor: Actor, project: str, *, title: str, context: str = "", controls: str = "", now: dt.datetime
) -> StoredRequest:
    user = _user(actor)
    check_user_can_author(user, get_project(unit, project).project.spec, project)
    if not title.strip() or len(title) > 200:
        raise InputError("a request needs a title of 1 to 200 characters")
    request = StoredRequest(
        id=f"ar-{secrets.token_hex(6)}",
        project=project,
        author=user.name,
        title=title.strip(),
        context=context,
        controls=controls,
        state=State.DRAFT.value,
        round=0,
        created_at=timestamp(now),
        updated_at=timestamp(now),
    )
    unit.airlock.create(request)
    _audit(unit, actor, "created", request, now, title=request.title)
    return request


def _check_author_editing(unit: Unit, actor: Actor, request: StoredRequest) -> None:
    if _user(actor).name != request.author:
        raise PermissionDeniedError(f"only the author ({request.author}) may change request {request.id}")
    if State(request.state) not in (State.DRAFT, State.RETURNED):
        raise ConflictError(f"request {request.id} is {request.state}: files can change only in draft or returned")


def add_file(
    unit: Unit,
    actor: Actor,
    objects: ObjectStore,
    request_id: str,
    *,
    name: str,
    kind: FileKind,
    data: bytes,
    now: dt.datetime,
    limits: Limits = Limits(),
    table: TableKind | None = None,
) -> StoredFile:
    """Copy a file into quarantine and attach it (replacing one of the same name); ``table`` is the author's
    declaration of what a table holds (``frequency``: counts of people)."""
    request = _request(unit, request_id)
    _check_author_editing(unit, actor, request)
    check_file_name(name)
    if not data:
        raise InputError(f"file {name} is empty")
    if len(data) > limits.max_file_bytes:
        raise InputError(f"file {name} is {len(data)} bytes, over the {limits.max_file_bytes}-byte limit")
    digest = hashlib.sha256(data).hexdigest()
    info = put_retained(objects, f"airlock/{request.id}/quarantine/{digest}", data)
    declared = TableKind(table).value if table is not None else None
    item = StoredFile(name, kind.value, digest, len(data), info.key, timestamp(now), declared)
    unit.airlock.put_file(request.id, item)
    unit.airlock.update(request.id, now=timestamp(now))
    lock = {"version": info.version_id, "lockMode": info.lock_mode, "retainUntil": info.retain_until}
    details = {"file": name, "kind": kind.value, "table": declared, "sha256": digest, "size": len(data)}
    _audit(unit, actor, "file-added", request, now, **details, **{k: v for k, v in lock.items() if v})
    return item


def remove_file(unit: Unit, actor: Actor, request_id: str, name: str, *, now: dt.datetime) -> None:
    request = _request(unit, request_id)
    _check_author_editing(unit, actor, request)
    if not unit.airlock.remove_file(request.id, name):
        raise NotFoundError(f"request {request.id} has no file {name}")
    _audit(unit, actor, "file-removed", request, now, file=name)


def _files(unit: Unit, request_id: str) -> list[RequestFile]:
    return _as_request_files(unit.airlock.files(request_id))


def _as_request_files(files: list[StoredFile]) -> list[RequestFile]:
    return [RequestFile(f.name, FileKind(f.kind), f.sha256, f.size) for f in files]


def _fingerprint(files: list[StoredFile]) -> str:
    """One hash of the request's files (names, kinds, contents), to tell whether a resubmission changed anything."""
    listing = sorted((f.name, f.kind, f.sha256) for f in files)
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def submit(
    unit: Unit, actor: Actor, objects: ObjectStore, request_id: str, *, now: dt.datetime, limits: Limits = Limits()
) -> StoredRequest:
    """Submit for review: run the disclosure checks on every file under the project's rules, then go to review.

    A fail or review does not send the request back by itself: checkers see it, and approving such an output file
    needs their override with a rationale (see tre.airlock._overrides)."""
    request = _request(unit, request_id)
    _check_author_editing(unit, actor, request)
    files = unit.airlock.files(request.id)
    if not any(f.kind == FileKind.OUTPUT.value for f in files):
        raise InputError(
            f"request {request.id} has no output file: add one with 'tre airlock add ID FILE --kind output'"
        )
    fingerprint = _fingerprint(files)
    if request.round > 0 and fingerprint == request.submitted_fingerprint:
        raise ConflictError(
            f"request {request.id} is unchanged since it was returned: change a file before resubmitting"
        )
    request = _move(unit, actor, request, State.SUBMITTED, Owner.AUTHOR, now)
    unit.airlock.update(request.id, round=request.round + 1, submitted_fingerprint=fingerprint, now=timestamp(now))
    request = _move(unit, actor, _request(unit, request.id), State.CHECKING, Owner.SYSTEM, now)
    rules = project_rules(unit, request.project)
    results = _run_checks(unit, objects, request, files, rules, limits)
    unit.airlock.update(request.id, rules=json.dumps(rules.as_dict(), sort_keys=True), now=timestamp(now))
    _audit(unit, actor, "checked", request, now, rules=rules.name, results={f: r.value for f, r in results.items()})
    return _move(unit, actor, _request(unit, request.id), State.IN_REVIEW, Owner.SYSTEM, now)


def _run_checks(
    unit: Unit, objects: ObjectStore, request: StoredRequest, files: list[StoredFile], rules: RuleSet, limits: Limits
) -> dict[str, Status]:
    from tre.sdc import check_files  # pandas and numpy: loaded only when something is submitted

    data = {item.name: _verified_bytes(objects, item) for item in files}
    kinds = {item.name: item.table_kind for item in files}
    reports = check_files(data, rules=rules, kinds=kinds, max_bytes=limits.max_file_bytes)
    for name, report in reports.items():
        for check in stored_checks(request.round, name, report):
            unit.airlock.add_check(request.id, check)
    return {name: report.status for name, report in reports.items()}


def stored_checks(round_: int, name: str, report: FileReport) -> list[StoredCheck]:
    """A file's report as one row per rule: its result, the cells it flagged and, for identifiers, where.

    Every rule that flagged a cell gets a row, so an override (which names a rule) can answer for every flag."""
    rows = []
    cells = [{**dataclasses.asdict(cell), "status": str(cell.status)} for cell in report.cells]
    results = [(r.rule, r.status, r.detail) for r in report.results]
    for rule in dict.fromkeys(c["rule"] for c in cells if c["rule"] not in {r[0] for r in results}):
        mine = [c for c in cells if c["rule"] == rule]
        status = Status.FAIL if any(c["status"] == "fail" for c in mine) else Status.REVIEW
        results.append((rule, status, f"{len(mine)} cells flagged"))
    for rule, status, detail in results:
        mine = [c for c in cells if c["rule"] == rule]
        document: dict[str, Any] = {"detail": detail, "evidence": report.evidence}
        if mine:
            document |= {"cells": mine[:MAX_CELLS_PER_RESULT], "cellsOmitted": max(0, len(mine) - MAX_CELLS_PER_RESULT)}
        if rule == "identifiers" and report.findings:
            document["findings"] = [finding.as_dict() for finding in report.findings]
        rows.append(StoredCheck(round_, name, rule, str(status), json.dumps(document, default=str)))
    return rows


def check_results(checks: list[StoredCheck]) -> list[dict[str, Any]]:
    """Automated check results as shown to people and in the decision record."""
    return [{"file": c.file, "rule": c.rule, "status": c.status, **json.loads(c.detail)} for c in checks]


def _flags(unit: Unit, request: StoredRequest) -> frozenset[Flag]:
    return flags((c.file, c.rule, Status(c.status)) for c in unit.airlock.checks(request.id, request.round))


def _overrides(unit: Unit, request: StoredRequest) -> list[Override]:
    return [Override(o.checker, o.file, o.rule, o.rationale) for o in unit.airlock.overrides(request.id, request.round)]


def _verified_bytes(objects: ObjectStore, item: StoredFile) -> bytes:
    try:
        data = objects.get_bytes(item.object_key)
    except NotFoundError:
        raise IntegrityError(f"file {item.name} is missing from quarantine: release is blocked") from None
    if hashlib.sha256(data).hexdigest() != item.sha256:
        raise IntegrityError(f"file {item.name} changed in quarantine after it was added: release is blocked")
    return data


def vote(
    unit: Unit,
    actor: Actor,
    request_id: str,
    *,
    file: str,
    choice: Vote,
    comment: str | None = None,
    shared: bool = False,
    now: dt.datetime,
) -> StoredRequest:
    """Record one checker's vote on one file; once every output file is decided, the request moves on."""
    request = _request(unit, request_id)
    user = _user(actor)
    spec = _spec(unit, request)
    check_user_can_view_request(user, spec, request.id)
    check_user_can_review(user, spec, request.author)
    if State(request.state) is not State.IN_REVIEW:
        raise ConflictError(f"request {request.id} is {request.state}: votes are taken only while in review")
    files = unit.airlock.files(request.id)
    if file not in {f.name for f in files}:
        raise NotFoundError(f"request {request.id} has no file {file}")
    ballot = Ballot(user.name, file, choice, comment, shared)
    check_ballot(ballot)
    flagged, overrides = _flags(unit, request), _overrides(unit, request)
    if choice is Vote.APPROVE and file in {f.name for f in files if f.kind == FileKind.OUTPUT.value}:
        check_user_can_approve(user.name, file, flagged, overrides)
    unit.airlock.add_ballot(
        request.id, StoredBallot(request.round, user.name, file, choice.value, comment, shared, timestamp(now))
    )
    _audit(unit, actor, "voted", request, now, file=file, vote=choice.value, round=request.round)
    outcome = request_outcome(_as_request_files(files), _ballots(unit, request), flagged, overrides)
    return _move(unit, actor, request, outcome, Owner.SYSTEM, now) if outcome else request


def override(
    unit: Unit, actor: Actor, request_id: str, *, file: str, rule: str, rationale: str, now: dt.datetime
) -> StoredOverride:
    """Record an independent checker's override, with a rationale, of one automated fail or review on one file."""
    request = _request(unit, request_id)
    user = _user(actor)
    spec = _spec(unit, request)
    check_user_can_view_request(user, spec, request.id)
    check_user_can_review(user, spec, request.author)
    if State(request.state) is not State.IN_REVIEW:
        raise ConflictError(f"request {request.id} is {request.state}: overrides are taken only while in review")
    if file not in {f.name for f in unit.airlock.files(request.id)}:
        raise NotFoundError(f"request {request.id} has no file {file}")
    flag = check_override(Override(user.name, file, rule, rationale), _flags(unit, request))
    stored = StoredOverride(request.round, file, rule, flag.status.value, user.name, rationale.strip(), timestamp(now))
    unit.airlock.add_override(request.id, stored)
    details = {"file": file, "rule": rule, "status": flag.status.value, "rationale": stored.rationale}
    _audit(unit, actor, "overridden", request, now, round=request.round, **details)
    return stored


def _ballots(unit: Unit, request: StoredRequest) -> list[Ballot]:
    return [
        Ballot(b.checker, b.file, Vote(b.vote), b.comment, b.shared)
        for b in unit.airlock.ballots(request.id, request.round)
    ]


def withdraw(unit: Unit, actor: Actor, request_id: str, *, now: dt.datetime) -> StoredRequest:
    request = _request(unit, request_id)
    if _user(actor).name != request.author:
        raise PermissionDeniedError(f"only the author ({request.author}) may withdraw request {request.id}")
    return _move(unit, actor, request, State.WITHDRAWN, Owner.AUTHOR, now)


def view(unit: Unit, actor: Actor, request_id: str, *, now: dt.datetime) -> dict[str, Any]:
    """The request as the caller may see it (blind review applies); the view is audited."""
    request = _request(unit, request_id)
    user = _user(actor)
    spec = _spec(unit, request)
    check_user_can_view_request(user, spec, request.id)
    is_checker = user_can_review_project(user, spec)
    _audit(unit, actor, "viewed", request, now)
    checks = unit.airlock.checks(request.id, request.round)
    ballots = _ballots(unit, request)
    overrides = unit.airlock.overrides(request.id, request.round)
    shown = visible_overrides(
        [Override(o.checker, o.file, o.rule, o.rationale) for o in overrides], ballots, user.name, is_checker=is_checker
    )
    return {
        "id": request.id,
        "project": request.project,
        "author": request.author,
        "title": request.title,
        "context": request.context,
        "controls": request.controls,
        "state": request.state,
        "round": request.round,
        "createdAt": request.created_at,
        "updatedAt": request.updated_at,
        "rules": json.loads(request.rules) if request.rules else None,
        "files": [_file_view(f, checks) for f in unit.airlock.files(request.id)],
        "votes": [
            {"checker": b.checker, "file": b.file, "vote": b.vote.value, "comment": b.comment}
            for b in visible_ballots(ballots, user.name, is_checker=is_checker)
        ],
        "overrides": [_override_record(o) for o in overrides if _as_override(o) in shown],
    }


def _file_view(item: StoredFile, checks: list[StoredCheck]) -> dict[str, Any]:
    mine = [c for c in check_results(checks) if c.pop("file") == item.name]
    statuses = {c["status"] for c in mine}
    status = next((s.value for s in (Status.FAIL, Status.REVIEW, Status.PASS) if s.value in statuses), None)
    return {
        "name": item.name,
        "kind": item.kind,
        "table": item.table_kind,
        "sha256": item.sha256,
        "size": item.size,
        "status": status,  # the worst automated result of the current round (None before the first submission)
        "evidence": mine[0]["evidence"] if mine and "evidence" in mine[0] else None,
        "checks": mine,
    }


def _as_override(stored: StoredOverride) -> Override:
    return Override(stored.checker, stored.file, stored.rule, stored.rationale)


def _override_record(stored: StoredOverride) -> dict[str, Any]:
    return {
        "file": stored.file,
        "rule": stored.rule,
        "status": stored.status,
        "checker": stored.checker,
        "rationale": stored.rationale,
        "at": stored.at,
    }


def get_request(unit: Unit, request_id: str) -> StoredRequest:
    return _request(unit, request_id)


def download(unit: Unit, actor: Actor, objects: ObjectStore, request_id: str, name: str, *, now: dt.datetime) -> bytes:
    """A file's bytes, re-checked against its hash, for the author or an independent checker; audited."""
    request = _request(unit, request_id)
    check_user_can_view_request(_user(actor), _spec(unit, request), request.id)
    item = next((f for f in unit.airlock.files(request.id) if f.name == name), None)
    if item is None:
        raise NotFoundError(f"request {request.id} has no file {name}")
    data = _verified_bytes(objects, item)
    _audit(unit, actor, "downloaded", request, now, file=name, sha256=item.sha256)
    return data


MAX_PAGE = 500
MAX_OFFSET = 10**9


def list_requests(unit: Unit, actor: Actor, *, limit: int = 100, offset: int = 0) -> list[StoredRequest]:
    """A page of the requests the caller may see: their projects' requests and, for independent checkers, others."""
    if not 1 <= limit <= MAX_PAGE or not 0 <= offset <= MAX_OFFSET:
        raise InputError(f"limit must be 1 to {MAX_PAGE} and offset 0 to {MAX_OFFSET}")
    user = _user(actor)
    projects = unit.projects.all()
    visible = [p.name for p in projects if user_can_view_request(user, p.project.spec)]
    everything = len(visible) == len(projects)  # then no filter, and the page is read straight from the index
    return unit.airlock.find(None if everything else visible, limit=limit, offset=offset)


def project_rules(unit: Unit, project: str) -> RuleSet:
    """The disclosure rules a project's outputs are checked under: the admin's choice, or the default rules."""
    from tre.sdc import DEFAULT_RULES, RuleSet

    stored = unit.airlock.project_rules(project)
    return RuleSet(**json.loads(stored.rules)) if stored else DEFAULT_RULES


def show_project_rules(unit: Unit, actor: Actor, project: str) -> dict[str, Any]:
    """A project's rule set, its parameters and who chose it (rules are not secret: anyone may look)."""
    del actor
    get_project(unit, project)
    stored = unit.airlock.project_rules(project)
    return {
        "project": project,
        "rules": project_rules(unit, project).as_dict(),
        "setBy": stored.set_by if stored else None,
        "setAt": stored.set_at if stored else None,
    }


def set_project_rules(unit: Unit, actor: Actor, project: str, rules: RuleSet | None, *, now: dt.datetime) -> None:
    """Choose the rules a project's outputs are checked under from the next submission on (None: the default).
    Admins, and the local operator (who could change the store anyway), may."""
    if actor.user is not None:
        check_user_can_set_rules(actor.user)
    get_project(unit, project)
    parameters = rules.as_dict() if rules is not None else None
    stored = StoredRules(project, json.dumps(parameters, sort_keys=True), actor.name, timestamp(now))
    unit.airlock.set_project_rules(project, stored if parameters is not None else None)
    unit.audit.append(
        at=timestamp(now),
        actor=actor.name,
        action="airlock.rules-set",
        project=project,
        target=project,
        details={"rules": parameters if parameters is not None else "default"},
    )


def revoke(
    unit: Unit, actor: Actor, objects: ObjectStore, request_id: str, *, reason: str, now: dt.datetime
) -> StoredRequest:
    request = _request(unit, request_id)
    check_user_can_revoke(_user(actor), _spec(unit, request))
    if not reason.strip():
        raise InputError("revoking needs a reason, for the record")
    moved = _move(unit, actor, request, State.REVOKED, Owner.CHECKER, now)
    for info in list(objects.list(release_prefix(request))):
        objects.delete(info.key)
    _audit(unit, actor, "revoked", request, now, reason=reason)
    return moved


# ---- release -----------------------------------------------------------------------------------------------------


def release_prefix(request: StoredRequest) -> str:
    return f"projects/{request.project}/releases/{request.id}/"


def release(store: Store, objects: ObjectStore, request_id: str, *, now: dt.datetime) -> bool:
    """Release an approved request; True if this call released it. Safe to repeat, including after a crash."""
    system = Actor(name="system:airlock")
    with store.transaction(write=False) as unit:
        request = _request(unit, request_id)
        if State(request.state) is not State.APPROVED:
            return False
        _check_decision_holds(unit, request)
        files = [f for f in unit.airlock.files(request.id) if f.kind == FileKind.OUTPUT.value]
        record = _decision_record(unit, request, files, now)
    prefix = release_prefix(request)
    for item in files:
        objects.put_bytes(prefix + item.name, _verified_bytes(objects, item))
    objects.put_bytes(prefix + "CITATION.txt", (PATIENT_DATA_CITATION + "\n").encode())
    objects.put_bytes(prefix + "decision.json", json.dumps(record, indent=2, sort_keys=True).encode())
    with store.transaction() as unit:
        current = _request(unit, request_id)
        if State(current.state) is not State.APPROVED:
            return False
        _move(unit, system, current, State.RELEASED, Owner.SYSTEM, now)
        _audit(unit, system, "released", current, now, files=[f.name for f in files], location=prefix)
    return True


def _check_decision_holds(unit: Unit, request: StoredRequest) -> None:
    """Re-derive the decision from the stored votes, results and overrides; a request marked approved that they do
    not support (a database edited by hand, a bug) is not released."""
    outcome = request_outcome(
        _files(unit, request.id), _ballots(unit, request), _flags(unit, request), _overrides(unit, request)
    )
    if outcome is not State.APPROVED:
        raise IntegrityError(
            f"request {request.id} is marked approved, but its votes, checks and overrides do not approve every"
            " output file: release is blocked"
        )


def _decision_record(unit: Unit, request: StoredRequest, files: list[StoredFile], now: dt.datetime) -> dict[str, Any]:
    checks = unit.airlock.checks(request.id, request.round)
    return {
        "request": request.id,
        "project": request.project,
        "title": request.title,
        "author": request.author,
        "round": request.round,
        "releasedAt": timestamp(now),
        "citation": PATIENT_DATA_CITATION,
        "files": [{"name": f.name, "sha256": f.sha256, "size": f.size, "table": f.table_kind} for f in files],
        "rules": json.loads(request.rules) if request.rules else None,
        "checks": check_results(checks),
        "votes": [
            {"checker": b.checker, "file": b.file, "vote": b.vote, "comment": b.comment, "at": b.at}
            for b in unit.airlock.ballots(request.id, request.round)
        ],
        "overrides": [_override_record(o) for o in unit.airlock.overrides(request.id, request.round)],
    }


def release_approved(store: Store, objects: ObjectStore, *, now: dt.datetime) -> list[str]:
    """Release every approved request (run after votes, and at start-up to finish any interrupted release)."""
    with store.transaction(write=False) as unit:
        approved = [r.id for r in unit.airlock.find(state=State.APPROVED.value)]
    return [request_id for request_id in approved if release(store, objects, request_id, now=now)]
