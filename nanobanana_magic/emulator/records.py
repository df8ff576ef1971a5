"""What the emulator saw: one record per HTTP request, for tests to inspect."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .faults import Fault
from .realism import peak_in_window

#: Phases served by the API host.
API_PHASES = ("submit", "poll", "credits")


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
    #: the answer as built (before a delivery fault may spoil it): HTTP status and JSON code
    status: int | None = None
    code: int | None = None
    #: "rate" or "concurrency" when a limit refused the request, else None
    limited_by: str | None = None

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


@dataclass(frozen=True)
class Stats:
    """Counters a benchmark reads after a run (all since start or the last reset)."""

    #: API requests (submit, poll, credits) received, refused ones included
    api_requests: int
    #: answers with HTTP status 429 or JSON code 429, whoever sent them (limits or faults)
    answered_429: int
    #: requests refused by the rate limit
    rate_limited: int
    #: submits refused by the concurrency limit
    concurrency_refused: int
    #: the most API requests received within any one second
    peak_requests_per_second: int
    #: the most tasks generating at the same time
    peak_generating: int
    #: tasks created (and charged)
    submits: int


def stats_of(records: list[RequestRecord], peak_generating: int, submits: int) -> Stats:
    """Stats from the request log and the task store's counters."""
    api = [record for record in records if record.phase in API_PHASES]
    return Stats(
        api_requests=len(api),
        answered_429=sum(1 for record in records if 429 in (record.status, record.code)),
        rate_limited=sum(1 for record in records if record.limited_by == "rate"),
        concurrency_refused=sum(1 for record in records if record.limited_by == "concurrency"),
        peak_requests_per_second=peak_in_window(record.time for record in api),
        peak_generating=peak_generating,
        submits=submits,
    )
