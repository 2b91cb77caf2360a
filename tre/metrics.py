"""Prometheus metrics: one registry for the whole process, read from the store at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tre.governance import Phase

REGISTRY = CollectorRegistry(auto_describe=True)


class ProjectPhaseCollector(Collector):
    """``tre_projects{phase=…}``: how many projects are in each phase, counted when scraped."""

    def __init__(self, count_by_phase: Callable[[], Mapping[str, int]]) -> None:
        self._count_by_phase = count_by_phase

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = self._count_by_phase()
        family = GaugeMetricFamily("tre_projects", "Projects by phase.", labels=["phase"])
        for phase in sorted({p.value for p in Phase} | set(counts)):
            family.add_metric([phase], counts.get(phase, 0))
        yield family


def exposition(registry: CollectorRegistry = REGISTRY) -> str:
    """The registry in the Prometheus text format."""
    return generate_latest(registry).decode("utf-8")
