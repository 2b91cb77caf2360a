"""The HTTP API (FastAPI): the airlock under /api/v1/airlock, plus /healthz and /metrics."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Body, FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from tre import __version__
from tre.airlock import FileKind, State, TableKind, Vote
from tre.airlock import service as airlock
from tre.api._identity import Identity, TokenIdentity
from tre.api._metrics import build_registry
from tre.errors import TemporaryError, TreError
from tre.services import Actor
from tre.services._clock import utcnow
from tre.storage import ObjectStore
from tre.store import Store, StoredRequest, Unit

PREFIX = "/api/v1/airlock"
Authorization = Annotated[str | None, Header(description="Bearer <token>")]
DECIDED = {State.APPROVED.value, State.RETURNED.value, State.REJECTED.value}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewRequest(_Body):
    project: str = Field(min_length=1, max_length=40, examples=["diabetes-outcomes"])
    title: str = Field(min_length=1, max_length=200, examples=["Table 1: length of stay by HbA1c band"])
    context: str = Field(default="", max_length=20_000)
    controls: str = Field(default="", max_length=20_000)


class NewVote(_Body):
    file: str = Field(min_length=1, max_length=200)
    vote: Vote
    comment: str | None = Field(default=None, max_length=20_000)
    share: bool = False


class Revocation(_Body):
    reason: str = Field(min_length=1, max_length=2_000)


class NewOverride(_Body):
    file: str = Field(min_length=1, max_length=200)
    rule: str = Field(min_length=1, max_length=64)
    rationale: str = Field(min_length=1, max_length=2_000)


class RequestSummary(BaseModel):
    id: str
    project: str
    author: str
    title: str
    state: str
    round: int
    createdAt: str  # noqa: N815 - JSON field names are camelCase
    updatedAt: str  # noqa: N815


def _summary(request: StoredRequest) -> RequestSummary:
    return RequestSummary(
        id=request.id,
        project=request.project,
        author=request.author,
        title=request.title,
        state=request.state,
        round=request.round,
        createdAt=request.created_at,
        updatedAt=request.updated_at,
    )


@dataclass(frozen=True)
class _Context:
    """What every route needs: the store, the object store, who is calling, the clock and the limits."""

    store: Store
    objects: ObjectStore
    identity: Identity
    clock: Callable[[], dt.datetime]
    limits: airlock.Limits

    @contextmanager
    def acting(self, authorization: str | None, *, write: bool = True) -> Iterator[tuple[Unit, Actor]]:
        with self.store.transaction(write=write) as unit:
            yield unit, self.identity.actor(unit, authorization)


def create_app(
    store: Store,
    objects: ObjectStore,
    *,
    identity: Identity | None = None,
    clock: Callable[[], dt.datetime] = utcnow,
    limits: airlock.Limits | None = None,
) -> FastAPI:
    app = FastAPI(title="TRE airlock API", version=__version__, docs_url="/api/docs", openapi_url="/api/openapi.json")
    context = _Context(store, objects, identity or TokenIdentity(), clock, limits or airlock.Limits())
    registry, decision_seconds = build_registry(store)

    @app.exception_handler(TreError)
    def _tre_error(_request: Request, error: TreError) -> JSONResponse:
        headers = {"Retry-After": str(int(error.retry_after))} if isinstance(error, TemporaryError) else None
        return JSONResponse({"detail": str(error)}, status_code=error.http_status, headers=headers)

    _add_operations_routes(app, context, registry)
    _add_read_routes(app, context)
    _add_write_routes(app, context, decision_seconds)
    return app


def _add_operations_routes(app: FastAPI, context: _Context, registry: CollectorRegistry) -> None:
    @app.get("/healthz", response_class=PlainTextResponse)
    def healthz() -> str:
        with context.store.transaction(write=False) as unit:
            unit.audit.head()
        return "ok"

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")


def _add_read_routes(app: FastAPI, context: _Context) -> None:
    @app.get(f"{PREFIX}/requests", response_model=list[RequestSummary])
    def list_requests(
        authorization: Authorization = None,
        limit: Annotated[int, Query(ge=1, le=airlock.MAX_PAGE)] = 100,
        offset: Annotated[int, Query(ge=0, le=airlock.MAX_OFFSET)] = 0,
    ) -> list[RequestSummary]:
        with context.acting(authorization, write=False) as (unit, actor):
            return [_summary(r) for r in airlock.list_requests(unit, actor, limit=limit, offset=offset)]

    @app.get(f"{PREFIX}/requests/{{request_id}}")
    def show(request_id: str, authorization: Authorization = None) -> dict[str, Any]:
        with context.acting(authorization) as (unit, actor):
            return airlock.view(unit, actor, request_id, now=context.clock())

    @app.get(f"{PREFIX}/requests/{{request_id}}/files/{{name}}")
    def download(request_id: str, name: str, authorization: Authorization = None) -> Response:
        with context.acting(authorization) as (unit, actor):
            data = airlock.download(unit, actor, context.objects, request_id, name, now=context.clock())
        return Response(data, media_type="application/octet-stream")


def _add_write_routes(app: FastAPI, context: _Context, decision_seconds: Histogram) -> None:
    @app.post(f"{PREFIX}/requests", status_code=201, response_model=RequestSummary)
    def create(body: NewRequest, authorization: Authorization = None) -> RequestSummary:
        with context.acting(authorization) as (unit, actor):
            request = airlock.create_request(
                unit,
                actor,
                body.project,
                title=body.title,
                context=body.context,
                controls=body.controls,
                now=context.clock(),
            )
        return _summary(request)

    @app.put(f"{PREFIX}/requests/{{request_id}}/files/{{name}}", status_code=201)
    def add_file(
        request_id: str,
        name: str,
        kind: Annotated[FileKind, Query()],
        data: Annotated[bytes, Body(media_type="application/octet-stream")],
        authorization: Authorization = None,
        table: Annotated[TableKind | None, Query(description="frequency: a table of counts")] = None,
    ) -> dict[str, Any]:
        with context.acting(authorization) as (unit, actor):
            item = airlock.add_file(
                unit,
                actor,
                context.objects,
                request_id,
                name=name,
                kind=kind,
                data=data,
                now=context.clock(),
                limits=context.limits,
                table=table,
            )
        return {
            "name": item.name,
            "kind": item.kind,
            "table": item.table_kind,
            "sha256": item.sha256,
            "size": item.size,
        }

    @app.delete(f"{PREFIX}/requests/{{request_id}}/files/{{name}}", status_code=204)
    def remove_file(request_id: str, name: str, authorization: Authorization = None) -> Response:
        with context.acting(authorization) as (unit, actor):
            airlock.remove_file(unit, actor, request_id, name, now=context.clock())
        return Response(status_code=204)

    @app.post(f"{PREFIX}/requests/{{request_id}}/submit", response_model=RequestSummary)
    def submit(request_id: str, authorization: Authorization = None) -> RequestSummary:
        with context.acting(authorization) as (unit, actor):
            return _summary(
                airlock.submit(unit, actor, context.objects, request_id, now=context.clock(), limits=context.limits)
            )

    @app.post(f"{PREFIX}/requests/{{request_id}}/votes", response_model=RequestSummary)
    def vote(request_id: str, body: NewVote, authorization: Authorization = None) -> RequestSummary:
        moment = context.clock()
        with context.acting(authorization) as (unit, actor):
            request = airlock.vote(
                unit,
                actor,
                request_id,
                file=body.file,
                choice=body.vote,
                comment=body.comment,
                shared=body.share,
                now=moment,
            )
            entered_review = dt.datetime.fromisoformat(request.updated_at.replace("Z", "+00:00"))
        if request.state in DECIDED:
            decision_seconds.observe(max(0.0, (moment - entered_review).total_seconds()))
        if request.state == State.APPROVED.value and airlock.release(
            context.store, context.objects, request_id, now=context.clock()
        ):
            with context.store.transaction(write=False) as unit:
                request = airlock.get_request(unit, request_id)
        return _summary(request)

    @app.post(f"{PREFIX}/requests/{{request_id}}/overrides", status_code=201)
    def override(request_id: str, body: NewOverride, authorization: Authorization = None) -> dict[str, Any]:
        with context.acting(authorization) as (unit, actor):
            stored = airlock.override(
                unit, actor, request_id, file=body.file, rule=body.rule, rationale=body.rationale, now=context.clock()
            )
        return {"file": stored.file, "rule": stored.rule, "status": stored.status, "at": stored.at}

    @app.post(f"{PREFIX}/requests/{{request_id}}/withdraw", response_model=RequestSummary)
    def withdraw(request_id: str, authorization: Authorization = None) -> RequestSummary:
        with context.acting(authorization) as (unit, actor):
            return _summary(airlock.withdraw(unit, actor, request_id, now=context.clock()))

    @app.post(f"{PREFIX}/requests/{{request_id}}/revoke", response_model=RequestSummary)
    def revoke(request_id: str, body: Revocation, authorization: Authorization = None) -> RequestSummary:
        with context.acting(authorization) as (unit, actor):
            return _summary(
                airlock.revoke(unit, actor, context.objects, request_id, reason=body.reason, now=context.clock())
            )
