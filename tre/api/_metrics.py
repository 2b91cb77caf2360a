"""Airlock metrics, read from the store when scraped (so every API replica reports the same numbers)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from tre.airlock import State
from tre.metrics import ProjectPhaseCollector
from tre.store import Store


class AirlockCollector(Collector):
    def __init__(self, store: Store) -> None:
        self._store = store

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        with self._store.transaction(write=False) as unit:
            states = unit.airlock.count_by_state()
            failed = unit.airlock.failed_checks_by_rule()
            overridden = unit.airlock.overrides_by_rule()
        requests = GaugeMetricFamily("tre_airlock_requests", "Airlock requests by state.", labels=["state"])
        for state in State:
            requests.add_metric([state.value], states.get(state.value, 0))
        yield requests
        checks = CounterMetricFamily("tre_airlock_checks_failed", "Automated checks failed, by rule.", labels=["rule"])
        for rule, count in sorted(failed.items()):
            checks.add_metric([rule], count)
        yield checks
        overrides = CounterMetricFamily(
            "tre_airlock_overrides",
            "Automated fail or review results overridden by a checker, by rule.",
            labels=["rule"],
        )
        for rule, count in sorted(overridden.items()):
            overrides.add_metric([rule], count)
        yield overrides


def build_registry(store: Store) -> tuple[CollectorRegistry, Histogram]:
    """The process's registry: projects by phase, airlock requests by state, failed and overridden checks, time to
    decision."""
    registry = CollectorRegistry(auto_describe=True)

    def phases() -> dict[str, int]:
        with store.transaction(write=False) as unit:
            return unit.projects.count_by_phase()

    registry.register(ProjectPhaseCollector(phases))
    registry.register(AirlockCollector(store))
    decision = Histogram(
        "tre_airlock_decision_seconds",
        "Time from a request entering review to its decision.",
        buckets=(60, 600, 3600, 4 * 3600, 86400, 3 * 86400, 7 * 86400, 30 * 86400),
        registry=registry,
    )
    return registry, decision
