"""Which sandbox owns which slot: a small JSON file under the state directory, changed under an exclusive lock.

A sandbox keeps its slot (and so its addresses, names and uid) until it is released, so a restarted hub finds
the leftovers of a killed sandbox under the same names, and its files keep their owner.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tre.errors import ConflictError, InputError

_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")


def check_sandbox_id(sandbox_id: str) -> str:
    if not _ID.match(sandbox_id):
        raise InputError(f"sandbox id {sandbox_id!r}: use 1 to 128 lower-case letters, digits and ._-")
    return sandbox_id


class SlotRegistry:
    """Slots by sandbox id, shared by every process that uses the same state directory."""

    def __init__(self, state_dir: Path, capacity: int) -> None:
        self.path = state_dir / "slots.json"
        self.lock_path = state_dir / "slots.lock"
        self.capacity = capacity

    @contextmanager
    def _locked(self) -> Iterator[dict[str, int]]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self.lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            slots = self._read()
            before = dict(slots)
            yield slots
            if slots != before:
                self._write(slots)

    def _read(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        return {str(k): int(v) for k, v in data.items()}

    def _write(self, slots: dict[str, int]) -> None:
        temp = self.path.with_suffix(".tmp")
        temp.write_text(json.dumps(slots, sort_keys=True), encoding="utf-8")
        os.replace(temp, self.path)

    def slot_for(self, sandbox_id: str) -> int:
        """The sandbox's slot, allocating the lowest free one on first use."""
        check_sandbox_id(sandbox_id)
        with self._locked() as slots:
            if sandbox_id in slots:
                return slots[sandbox_id]
            used = set(slots.values())
            free = next((n for n in range(self.capacity) if n not in used), None)
            if free is None:
                raise ConflictError(f"all {self.capacity} sandbox slots are in use; stop a workspace or widen the pool")
            slots[sandbox_id] = free
            return free

    def find(self, sandbox_id: str) -> int | None:
        with self._locked() as slots:
            return slots.get(sandbox_id)

    def all(self) -> dict[str, int]:
        with self._locked() as slots:
            return dict(slots)

    def release(self, sandbox_id: str) -> None:
        with self._locked() as slots:
            slots.pop(sandbox_id, None)
