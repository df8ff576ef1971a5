"""`Registry`: this kernel's generations by task id, in submit order, safe to use from any thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from ..runtime.generation import Generation


class Registry:
    """Written by cells, the panel's and sweeps' threads; read by commands on the main thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _by_id
        self._by_id: dict[str, Generation] = {}

    def add(self, generation: Generation) -> Generation:
        with self._lock:
            self._by_id[generation.task_id] = generation
        return generation

    def get(self, task_id: str) -> Generation | None:
        with self._lock:
            return self._by_id.get(task_id)

    def values(self) -> list[Generation]:
        """A snapshot, oldest first: safe to iterate while other threads add."""
        with self._lock:
            return list(self._by_id.values())

    def pending(self) -> list[Generation]:
        return [g for g in self.values() if not g.done]

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_id)

    def __contains__(self, task_id: object) -> bool:
        with self._lock:
            return task_id in self._by_id

    def __getitem__(self, task_id: str) -> Generation:
        with self._lock:
            return self._by_id[task_id]

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._by_id))
