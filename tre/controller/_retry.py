"""Backoff for retrying API calls: exponential, jittered, bounded. Pure: the caller sleeps."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """``attempts`` tries in all; the n-th wait is ``initial * factor**n``, capped at ``maximum``, minus up to
    ``jitter`` of itself at random (so controllers that failed together do not retry together)."""

    initial: float = 0.1
    factor: float = 2.0
    maximum: float = 5.0
    attempts: int = 6
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.initial < 0 or self.factor < 1 or not 0 <= self.jitter <= 1:
            raise ValueError("backoff needs attempts >= 1, initial >= 0, factor >= 1 and 0 <= jitter <= 1")

    def delays(self, rng: random.Random) -> Iterator[float]:
        """The waits between attempts: ``attempts - 1`` of them."""
        for attempt in range(self.attempts - 1):
            ceiling = min(self.maximum, self.initial * self.factor**attempt)
            yield ceiling * (1 - self.jitter * rng.random())

    @property
    def longest_total(self) -> float:
        """The most time all the waits can take together."""
        return sum(min(self.maximum, self.initial * self.factor**n) for n in range(self.attempts - 1))
