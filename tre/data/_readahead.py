"""Run an iterator on a thread of its own, a bounded number of items ahead of its consumer."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_POLL_SECONDS = 0.05


class _Done:
    pass


class ReadAhead(Generic[T]):
    """Iterates ``items`` on a background thread, holding at most ``depth`` items ready.

    An exception there is raised here, in the consumer, when it reaches that point. ``close`` stops the thread
    (also when the consumer gave up early) and waits for it, so the source can be closed safely after it. Chained
    read-aheads are stopped by cancelling them all, then closing them: a thread waiting for an item from a cancelled
    one stops waiting."""

    def __init__(self, items: Iterator[T], depth: int) -> None:
        self._queue: queue.Queue[T | _Done | BaseException] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(items,), name="tre-extract-stage", daemon=True)
        self._thread.start()

    def _produce(self, items: Iterator[T]) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
            self._put(_Done())
        except BaseException as exc:
            self._put(exc)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def _put(self, entry: T | _Done | BaseException) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[T]:
        while True:
            try:
                entry = self._queue.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if self._stop.is_set():  # cancelled: nothing more will come
                    return
                continue
            if isinstance(entry, _Done):
                return
            if isinstance(entry, BaseException):
                raise entry
            yield entry

    def cancel(self) -> None:
        """Ask the thread to stop at its next item; a consumer waiting for one stops waiting."""
        self._stop.set()

    def close(self) -> None:
        self.cancel()
        self._thread.join()
