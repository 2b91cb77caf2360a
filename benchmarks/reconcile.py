"""Reconcile 1,000 projects against the in-memory API: planning time and API writes per project, per pass.

    .venv/bin/python benchmarks/reconcile.py [--projects 1000] [--drift 0.05] [--seed 1]

Declares N Project resources (two members, one dataset each; 80% approved, 10% without an approval, 10%
approved but suspended) in the in-memory API of tests/support/fake_kube.py (server-side apply semantics,
managedFields, resourceVersions), with governance from the real rules over in-memory users and approvals.
Then: a first pass (everything is created), a second pass with nothing changed, a pass after drift on a share of
the approved projects (a NetworkPolicy opened up, or a ResourceQuota deleted), and one more with nothing changed.

Baseline, measured in the same run over the same cluster: a controller that applies every desired object on
every pass (what a level-triggered loop without a diff does; each is a no-op server-side apply, but still a
write request the API server must process and admission must check).

"planning" is the CPU time of the pure part of a pass: building the project's objects and diffing them against
what was read (for blocked projects, the teardown plan); CPU time, because six people share this machine's two
cores and wall time measures them as much as the code. "pass" is the whole pass including the in-memory API.
Targets: the second pass makes zero writes; planning under 5 ms per project.

The in-memory API holds every object of every project in this process, which a real controller does not: its
full garbage collections take hundreds of milliseconds and land on random passes. So the heap is frozen out of
the collector (gc.freeze) after setup and between passes; --no-freeze shows the figures without that.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.fake_governance import START, FakeVault, InMemoryGovernance, example_project  # noqa: E402
from tests.support.fake_kube import FakeKube  # noqa: E402
from tre.controller import ClusterConfig, project_objects  # noqa: E402
from tre.workspaces.kubernetes import ControllerSettings, Reconciler  # noqa: E402

CONFIG = ClusterConfig()
PROJECT = ("tre.dev/v1alpha1", "Project", "")
PLANNING_TARGET_MS = 5.0


@dataclass
class PassStats:
    name: str
    planning_ms: list[float]
    pass_ms: list[float]
    writes: int
    requests: int
    projects: int

    def row(self) -> str:
        planning = sorted(self.planning_ms)
        p99 = planning[max(0, int(len(planning) * 0.99) - 1)]
        return (
            f"{self.name:<34} {statistics.fmean(planning):>8.3f} {statistics.median(planning):>8.3f} {p99:>8.3f} "
            f"{statistics.fmean(self.pass_ms):>8.2f} {self.writes / self.projects:>9.2f} "
            f"{self.requests / self.projects:>9.1f}"
        )


FREEZE = True


def settle_heap() -> None:
    """Collect, then move every surviving object out of the collector's way (see the module docstring)."""
    if FREEZE:
        gc.collect()
        gc.freeze()


def declare(kube: FakeKube, governance: InMemoryGovernance, count: int, rng: random.Random) -> list[str]:
    names = [f"p{index:04d}" for index in range(count)]
    governance.add_researchers(["alice", "bob"])
    for name in names:
        roll = rng.random()
        project = example_project(name, suspended=roll >= 0.9)
        if roll < 0.8 or roll >= 0.9:
            governance.approve(project)
        spec = project.spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        kube.put({"apiVersion": PROJECT[0], "kind": "Project", "metadata": {"name": name}, "spec": spec})
    return names


def reconcile_all(label: str, controller: Reconciler, kube: FakeKube, names: list[str]) -> PassStats:
    settle_heap()
    kube.reset_counters()
    planning, passes = [], []
    for name in names:
        body = kube.stored((*PROJECT, name))
        assert body is not None
        started = time.perf_counter()
        outcome = controller.reconcile(body)
        passes.append((time.perf_counter() - started) * 1000)
        planning.append(outcome.planning_seconds * 1000)
    return PassStats(label, planning, passes, kube.writes, sum(kube.requests.values()), len(names))


def apply_everything(label: str, kube: FakeKube, governance: InMemoryGovernance, names: list[str]) -> PassStats:
    """The baseline: build every active project's objects and apply them all, without reading anything."""
    settle_heap()
    kube.reset_counters()
    planning, passes = [], []
    for name in names:
        started = time.perf_counter()
        project = governance.declared[name]
        view = governance.evaluate(project, START)
        if view.blockers or project.spec.suspended:
            passes.append((time.perf_counter() - started) * 1000)
            planning.append(0.0)
            continue
        planned = time.thread_time()
        desired = project_objects(project, CONFIG, members=view.members, approval=view.approval)
        planning.append((time.thread_time() - planned) * 1000)
        for obj in desired:
            kube.apply(obj, force=True)
        passes.append((time.perf_counter() - started) * 1000)
    return PassStats(label, planning, passes, kube.writes, sum(kube.requests.values()), len(names))


def drift(kube: FakeKube, governance: InMemoryGovernance, names: list[str], share: float, rng: random.Random) -> int:
    active = [n for n in names if n in governance.approvals and not governance.declared[n].spec.suspended]
    chosen = rng.sample(active, max(1, int(len(active) * share)))
    for index, name in enumerate(chosen):
        namespace = CONFIG.namespace_for(name)
        if index % 2:
            kube.remove(("v1", "ResourceQuota", namespace, "tre-quota"))
        else:
            key = ("networking.k8s.io/v1", "NetworkPolicy", namespace, "tre-default-deny")
            kube.edit(key, lambda obj: obj["spec"].__setitem__("ingress", [{}]))
    return len(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=1000)
    parser.add_argument("--drift", type=float, default=0.05, help="share of approved projects to drift")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-freeze", action="store_true", help="leave the in-memory API's heap to the collector")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    global FREEZE
    FREEZE = not args.no_freeze

    namespaces = ("default", "kube-system", CONFIG.hub_namespace, CONFIG.tre_namespace)
    kube = FakeKube(namespaces=namespaces, history=False)
    governance, vault = InMemoryGovernance(), FakeVault()
    names = declare(kube, governance, args.projects, rng)
    settings = ControllerSettings(event_namespace=CONFIG.tre_namespace)
    controller = Reconciler(kube, governance, vault, CONFIG, settings, clock=lambda: START, sleep=time.sleep)

    rows = [reconcile_all("first pass (creates everything)", controller, kube, names)]
    rows.append(reconcile_all("second pass, nothing changed", controller, kube, names))
    drifted = drift(kube, governance, names, args.drift, rng)
    rows.append(reconcile_all(f"after drift on {drifted} projects", controller, kube, names))
    rows.append(reconcile_all("then nothing changed", controller, kube, names))
    rows.append(apply_everything("baseline: apply everything", kube, governance, names))

    active = sum(1 for n in names if n in governance.approvals and not governance.declared[n].spec.suspended)
    heap = "frozen between passes" if FREEZE else "left to the collector"
    print(f"\n{args.projects:,} projects ({active} approved and active), {len(kube.objects):,} objects in the API, "
          f"{os.cpu_count()} cores, heap {heap}, {dt.datetime.now(dt.UTC):%Y-%m-%d}")  # fmt: skip
    print(f"{'':<34} {'planning ms per project':^26} {'pass ms':>8} {'writes':>9} {'requests':>9}")
    print(f"{'pass':<34} {'mean':>8} {'p50':>8} {'p99':>8} {'mean':>8} {'/project':>9} {'/project':>9}")
    for row in rows:
        print(row.row())
    second, baseline = rows[1], rows[-1]
    p99 = sorted(rows[0].planning_ms + second.planning_ms)[int(2 * len(names) * 0.99) - 1]
    print(f"\nsecond pass writes: {second.writes} (target 0) -> {'met' if second.writes == 0 else 'MISSED'}")
    print(f"planning p99 over both passes: {p99:.3f} ms (target < {PLANNING_TARGET_MS:g} ms) -> "
          f"{'met' if p99 < PLANNING_TARGET_MS else 'MISSED'}")  # fmt: skip
    print(f"baseline writes per unchanged pass: {baseline.writes:,}; ours: {second.writes:,}")


if __name__ == "__main__":
    main()
