"""In-memory stand-ins for the controller's other ports: the governance gate over plain dicts, and Vault roles.

``InMemoryGovernance`` runs the real, pure governance rules (``project_blockers``) over users, datasets and
approvals held in dicts, so the controller's tests and benchmark need no database. ``StoreGovernance`` (the
production one) is tested against a real store separately.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.conftest import EXAMPLES
from tre.controller._status import GovernanceView
from tre.governance import approved_datasets, project_blockers
from tre.spec import Accreditation, Approval, Dataset, DatasetSpec, Project, Role, User, load

DATASET = load(Dataset, EXAMPLES / "hospital-episodes.dataset.yaml")
EXAMPLE = load(Project, EXAMPLES / "diabetes-outcomes.project.yaml")
START = dt.datetime(2026, 6, 1, 9, 0, tzinfo=dt.UTC)


def researcher(name: str, *, until: dt.date = dt.date(2030, 1, 1)) -> User:
    return User(
        name=name,
        roles=frozenset({Role.RESEARCHER}),
        accreditations=(Accreditation(name="safe-researcher", expires=until),),
    )


def approval_for(project: Project, *, expires: dt.date, decided: dt.date = dt.date(2026, 5, 1)) -> Approval:
    return Approval(
        project=project.name,
        approver="carol",
        reference=f"REC/{project.name}",
        decided=decided,
        expires=expires,
        datasets=approved_datasets(project.spec, {}),
        agreement_reference="DSA-1",
        agreement_signed=decided,
    )


def example_project(name: str, **spec: Any) -> Project:
    """The example declaration under another name, with ``spec`` fields replaced."""
    return EXAMPLE.model_copy(
        update={
            "metadata": EXAMPLE.metadata.model_copy(update={"name": name}),
            "spec": EXAMPLE.spec.model_copy(update=spec),
        }
    )


@dataclass
class InMemoryGovernance:
    users: dict[str, User] = field(default_factory=dict)
    datasets: dict[str, DatasetSpec] = field(default_factory=lambda: {DATASET.name: DATASET.spec})
    approvals: dict[str, Approval] = field(default_factory=dict)
    declared: dict[str, Project] = field(default_factory=dict)
    calls: int = 0

    def add_researchers(self, names: Iterable[str]) -> None:
        for name in names:
            self.users[name] = researcher(name)

    def approve(self, project: Project, *, expires: dt.date = dt.date(2027, 6, 1)) -> None:
        self.approvals[project.name] = approval_for(project, expires=expires)

    def evaluate(self, project: Project, now: dt.datetime) -> GovernanceView:
        self.calls += 1
        self.declared[project.name] = project
        today = now.date()
        approval = self.approvals.get(project.name)
        blockers = project_blockers(
            project.spec, approval=approval, datasets=self.datasets, users=self.users, today=today
        )
        members = frozenset(
            name for name in project.spec.all_members if name in self.users and self.users[name].accredited_on(today)
        )
        return GovernanceView(tuple(blockers), approval, members, today)


@dataclass
class FakeVault:
    """Kubernetes auth roles as a dict: project -> (namespace, service account)."""

    roles: dict[str, tuple[str, str]] = field(default_factory=dict)
    writes: int = 0

    def ensure_kubernetes_role(self, project: str, namespace: str, service_account: str, *, mount: str) -> bool:
        if self.roles.get(project) == (namespace, service_account):
            return False
        self.roles[project] = (namespace, service_account)
        self.writes += 1
        return True

    def remove_kubernetes_role(self, project: str, *, mount: str) -> bool:
        if project not in self.roles:
            return False
        del self.roles[project]
        self.writes += 1
        return True
