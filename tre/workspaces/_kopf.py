"""kopf wiring for the Kubernetes controller: every handler calls ``Reconciler.reconcile`` with the body.

kopf provides the watch (list, watch, reconnect, relist on 410), one worker per object, retries of failed
handlers, timers, the liveness endpoint and the finalizer protocol. The finalizer kopf keeps is ours
(``tre.dev/teardown``, which ``reconcile`` also keeps): kopf adds it when it first sees a Project, calls the
delete handler when the Project is deleted, and the handler's teardown removes it. kopf's own progress and
diff-base annotations are kept under ``tre.dev/``; kopf's own Events are off (ours say what happened); resources
are discovered once at start-up, not by watching CRDs.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import defaultdict
from typing import Any

import kopf
from prometheus_client import Counter, Histogram

from tre.errors import ConflictError, TemporaryError, TreError
from tre.metrics import REGISTRY
from tre.spec import API_GROUP, API_VERSION
from tre.workspaces.kubernetes import FINALIZER, Outcome, Reconciler, plain

PLURAL = "projects"
RESOURCE = (API_GROUP, API_VERSION, PLURAL)
MIN_RETRY_DELAY = 1.0

PASSES = Counter("tre_controller_reconciles", "Reconcile passes that completed.", registry=REGISTRY)
ERRORS = Counter(
    "tre_controller_reconcile_errors", "Reconcile passes that ended in an error (kopf retries them).", registry=REGISTRY
)
WRITES = Counter("tre_controller_writes", "Objects the controller applied or deleted.", ["verb"], registry=REGISTRY)
PLANNING = Histogram(
    "tre_controller_planning_seconds",
    "Time spent planning one pass (building the objects and diffing them against the cluster).",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.05),
    registry=REGISTRY,
)


def _count(outcome: Outcome) -> None:
    PASSES.inc()
    PLANNING.observe(outcome.planning_seconds)
    for verb, actions in (("apply", outcome.applied), ("delete", outcome.deleted)):
        if actions:
            WRITES.labels(verb).inc(len(actions))


class _Serialised:
    """Lets one pass at a time run for a project: kopf runs timers beside change handlers."""

    def __init__(self) -> None:
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()

    def lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks[name]


def handle(reconciler: Reconciler, serialised: _Serialised, body: Any, *, wait: bool = True, **_: Any) -> None:
    """One pass for the Project in ``body``; TRE errors become kopf's retry-later or never-retry."""
    lock = serialised.lock(str(body["metadata"]["name"]))
    if not lock.acquire(blocking=wait):
        return  # a pass is already running for this project; the timer will come back
    try:
        _count(reconciler.reconcile(plain(body)))
    except TemporaryError as exc:
        ERRORS.inc()
        raise kopf.TemporaryError(str(exc), delay=max(exc.retry_after, MIN_RETRY_DELAY)) from exc
    except ConflictError as exc:
        ERRORS.inc()
        raise kopf.TemporaryError(str(exc), delay=MIN_RETRY_DELAY) from exc
    except TreError as exc:
        ERRORS.inc()
        raise kopf.PermanentError(str(exc)) from exc
    finally:
        lock.release()


def build_registry(reconciler: Reconciler, *, interval: float) -> kopf.OperatorRegistry:
    """Handlers for create, update, resume and delete, a timer every ``interval`` seconds, and the login."""
    registry = kopf.OperatorRegistry()
    serialised = _Serialised()
    on_change = functools.partial(handle, reconciler, serialised)
    on_timer = functools.partial(handle, reconciler, serialised, wait=False)
    kopf.on.create(*RESOURCE, id="reconcile-create", registry=registry)(on_change)
    kopf.on.update(*RESOURCE, id="reconcile-update", registry=registry)(on_change)
    kopf.on.resume(*RESOURCE, id="reconcile-resume", registry=registry)(on_change)
    kopf.on.delete(*RESOURCE, id="teardown", registry=registry)(on_change)  # not optional: kopf keeps the finalizer
    kopf.timer(*RESOURCE, id="resync", interval=interval, initial_delay=interval, registry=registry)(on_timer)
    kopf.on.login(id="login", registry=registry)(kopf.login_via_client)  # in-cluster, else $KUBECONFIG
    return registry


def operator_settings(*, workers: int) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="tre.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="tre.dev")
    settings.posting.enabled = False
    settings.scanning.disabled = True  # the chart installs the CRD first: no need to watch CRDs (nor the RBAC)
    settings.execution.max_workers = workers
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    return settings


def run_operator(
    reconciler: Reconciler, *, interval: float, workers: int, liveness: str | None, metrics_port: int | None = None
) -> None:
    """Run until stopped (SIGTERM, SIGINT). One replica: kopf runs standalone, without peering."""
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, registry=REGISTRY)
    kopf.configure(verbose=False, log_format=kopf.LogFormat.PLAIN)
    logging.getLogger("tre").setLevel(logging.INFO)
    kopf.run(
        registry=build_registry(reconciler, interval=interval),
        settings=operator_settings(workers=workers),
        standalone=True,
        clusterwide=True,
        liveness_endpoint=liveness,
    )
