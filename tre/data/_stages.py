"""Where an extract spends its time: CPU seconds per stage, on whichever thread ran it."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


class StageClock:
    """CPU seconds (of the thread that did the work) per named stage.

    Each stage is timed on one thread at a time, so the threads of one extract never update the same entry."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.thread_time()
        try:
            yield
        finally:
            self.add(name, time.thread_time() - started)

    def each(self, name: str, items: Iterable[T]) -> Iterator[T]:
        """``items``, with the time taken to produce each one counted to ``name``."""
        iterator = iter(items)
        try:
            while True:
                started = time.thread_time()
                try:
                    item = next(iterator)
                except StopIteration:
                    return
                finally:
                    self.add(name, time.thread_time() - started)
                yield item
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
