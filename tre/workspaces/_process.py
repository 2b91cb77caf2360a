"""Processes, identified by pid *and* start time, so a recycled pid is never mistaken for a sandbox."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

_STARTTIME_FIELD = 19  # field 22 of /proc/PID/stat, counted after the ")" that ends the command name


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


@dataclass(frozen=True)
class ProcessRef:
    """A process that was started at a known moment (clock ticks since boot)."""

    pid: int
    start_ticks: int

    @classmethod
    def of(cls, pid: int) -> ProcessRef | None:
        fields = _stat_fields(pid)
        return None if fields is None else cls(pid, int(fields[_STARTTIME_FIELD]))

    def alive(self) -> bool:
        """True while this very process exists and is not a zombie."""
        fields = _stat_fields(self.pid)
        return fields is not None and fields[0] not in {"Z", "X"} and int(fields[_STARTTIME_FIELD]) == self.start_ticks

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


def command_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def send(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def wait_until(done: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``done`` until it is true or ``timeout`` seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline:
            return done()
        time.sleep(interval)
    return True
