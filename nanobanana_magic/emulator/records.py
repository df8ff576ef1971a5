"""What the emulator saw: one record per HTTP request, for tests to inspect."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from .faults import Fault


class Headers(dict):
    """Request headers with case-insensitive lookup (keys are stored lower-case)."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__((key.lower(), value) for key, value in items)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        """The header's value, whatever the case of ``key``."""
        return super().get(key.lower(), default)


@dataclass
class RequestRecord:
    """One request as received. ``phase`` is submit, poll, credits, download, samples or other."""

    method: str
    path: str
    query: dict[str, str]
    headers: Headers
    phase: str
    time: float
    body: bytes = b""
    fault: Fault | None = field(default=None)

    def json(self) -> Any:
        """The body decoded as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class RequestLog:
    """Append-only list of records; ``_lock`` guards it against the handler threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []

    def add(self, record: RequestRecord) -> None:
        """Append one record."""
        with self._lock:
            self._records.append(record)

    def snapshot(self) -> list[RequestRecord]:
        """A copy of the records, oldest first."""
        with self._lock:
            return list(self._records)

    def count(self, predicate: Callable[[RequestRecord], bool]) -> int:
        """How many records satisfy ``predicate``."""
        with self._lock:
            return sum(1 for record in self._records if predicate(record))

    def clear(self) -> None:
        """Forget every record."""
        with self._lock:
            self._records.clear()
