"""The embedded mode's controller: keeps approved projects provisioned and closed projects closed.

Each pass: record phase changes (e.g. an approval that expired), provision every open project whose
extract is missing or stale, finish any interrupted airlock release, and stop running workspaces that
may no longer run (project expired, suspended or blocked; member removed or no longer accredited).
A failure in one project is logged and retried on the next pass; it never stops the others.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tre import services
from tre.airlock import service as airlock
from tre.data.provision import DataServices, provision_project, stale_projects
from tre.errors import TreError
from tre.services import Actor
from tre.storage import ObjectStore
from tre.store import Store, Unit
from tre.workspaces._access import workspaces_to_stop

log = logging.getLogger(__name__)
CONTROLLER = Actor.operator("tre-controller")


@dataclass
class HubServers:
    """The hub's REST API as the controller sees it: running servers, and stopping one."""

    api_url: str
    token: str
    timeout: float = 10.0

    def running(self) -> list[tuple[str, str]]:
        """(user, project) for every running or starting server."""
        users = self._call("GET", "/users?state=active")
        found = []
        for user in users if isinstance(users, list) else []:
            for server in (user.get("servers") or {}).values():
                project = (server.get("user_options") or {}).get("project")
                if isinstance(project, str):
                    found.append((str(user["name"]), project))
        return found

    def stop(self, user: str) -> None:
        self._call("DELETE", f"/users/{urllib.parse.quote(user)}/server")

    def _call(self, method: str, path: str) -> Any:
        request = urllib.request.Request(  # noqa: S310 - the hub's configured loopback URL
            self.api_url.rstrip("/") + path, method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
            body = response.read()
        return json.loads(body) if body else None


@dataclass
class LocalController:
    store: Store
    objects: ObjectStore
    data: Callable[[], DataServices]
    hub: HubServers | None
    clock: Callable[[], dt.datetime] = services.utcnow

    def run_once(self) -> None:
        now = self.clock()
        with self.store.transaction() as unit:
            services.refresh_phases(unit, CONTROLLER, now=now)
            wanted = self._needs_extract(unit, now.date())
        for name in wanted:
            self._guarded(f"provision {name}", functools.partial(self._provision, name, now))
        self._guarded("finish releases", lambda: airlock.release_approved(self.store, self.objects, now=now))
        if self.hub is not None:
            self._guarded("stop closed workspaces", lambda: self._stop_closed_workspaces(now.date()))

    def _needs_extract(self, unit: Unit, today: dt.date) -> list[str]:
        stale = set(stale_projects(unit))
        wanted = []
        for stored in unit.projects.all():
            status = services.project_status(unit, stored, today=today)
            if status.blockers or stored.project.spec.suspended:
                continue
            if unit.extracts.current(stored.name) is None or stored.name in stale:
                wanted.append(stored.name)
        return wanted

    def _provision(self, name: str, now: dt.datetime) -> None:
        manifest = provision_project(self.store, CONTROLLER, name, self.data(), now=now)
        log.info("provisioned %s: extract %s", name, manifest["extract"])

    def _stop_closed_workspaces(self, today: dt.date) -> None:
        assert self.hub is not None
        running = self.hub.running()
        with self.store.transaction(write=False) as unit:
            closed = workspaces_to_stop(unit, running, today)
        for user, project, reason in closed:
            log.warning("stopping %s's workspace of %s: %s", user, project, reason)
            self.hub.stop(user)

    @staticmethod
    def _guarded(what: str, action: Callable[[], object]) -> None:
        """Run one step; log its failure and go on (the next pass retries it)."""
        try:
            action()
        except (TreError, OSError) as error:
            log.error("controller: %s failed: %s", what, error)
        except Exception:
            log.exception("controller: %s failed unexpectedly", what)


def run_forever(controller: LocalController, stop: threading.Event, interval: float) -> None:
    """Run passes every ``interval`` seconds until ``stop`` is set."""
    while not stop.is_set():
        controller.run_once()
        stop.wait(interval)
