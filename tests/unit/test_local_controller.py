"""The embedded controller's pass: what it provisions, and which running workspaces it stops through the hub."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from tests.unit.test_workspace_access import NOW, PROJECT, _provision
from tests.unit.test_workspace_access import objects as objects
from tests.unit.test_workspace_access import store as store
from tre.data.provision import DataServices
from tre.embedded._local_controller import HubServers, LocalController
from tre.errors import TemporaryError
from tre.storage import LocalObjectStore
from tre.store import Store


class FakeHub(HubServers):
    """The hub as the controller sees it: a list of running (user, project) servers, and stops."""

    def __init__(self, running: list[tuple[str, str]]) -> None:
        super().__init__("http://hub.invalid/hub/api", "unused")
        self.servers = list(running)
        self.stopped: list[str] = []

    def running(self) -> list[tuple[str, str]]:
        return list(self.servers)

    def stop(self, user: str) -> None:
        self.stopped.append(user)


def _no_vault() -> DataServices:
    raise TemporaryError("no Vault in this test")


@pytest.fixture
def controller_for(store: Store, objects: LocalObjectStore) -> Iterator[object]:
    def build(hub: FakeHub, today: dt.datetime = NOW) -> LocalController:
        return LocalController(store, objects, _no_vault, hub, clock=lambda: today)

    return build


def test_members_of_an_open_project_keep_their_workspaces_others_are_stopped(
    store: Store,
    objects: LocalObjectStore,
    controller_for,
) -> None:
    _provision(store, objects)
    hub = FakeHub([("alice", PROJECT), ("mallory", PROJECT), ("bob", "no-such-project")])
    controller_for(hub).run_once()
    assert sorted(hub.stopped) == ["bob", "mallory"]


def test_an_expired_approval_stops_every_workspace_of_the_project(
    store: Store,
    objects: LocalObjectStore,
    controller_for,
) -> None:
    _provision(store, objects)
    hub = FakeHub([("alice", PROJECT), ("bob", PROJECT)])
    controller_for(hub, NOW.replace(year=2027, month=2)).run_once()
    assert sorted(hub.stopped) == ["alice", "bob"]


def test_a_failing_provision_is_logged_and_the_pass_goes_on(
    store: Store,
    objects: LocalObjectStore,
    controller_for,
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = FakeHub([("mallory", PROJECT)])
    controller_for(hub).run_once()  # the project has no extract: provisioning is tried, fails, and is logged
    assert "provision diabetes-outcomes failed: no Vault in this test" in caplog.text
    assert hub.stopped == ["mallory"]
