"""`TaskStatus`: one record-info answer, parsed and tolerant of what the live service sends."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .states import FLAGS, TaskState


@dataclass(frozen=True)
class TaskStatus:
    """`state` is pending, succeeded or failed. `anomaly` says why a task that looks ended is
    still treated as pending, as a noun phrase ("an unknown successFlag '7'", "a success
    without a result URL"); the generation gives such answers a bounded time to settle."""

    task_id: str
    state: TaskState
    flag: int | None = None
    result_url: str | None = None
    error_code: Any = None
    error_message: str | None = None
    created: str | None = None
    completed: str | None = None
    anomaly: str | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def done(self) -> bool:
        return self.state.ended

    @property
    def flag_name(self) -> str:
        return FLAGS[self.flag][1] if self.flag in FLAGS else "UNKNOWN"

    @property
    def duration(self) -> float | None:
        """Seconds from the service's createTime to its completeTime, when it gave both."""
        start, end = parse_service_time(self.created), parse_service_time(self.completed)
        return end - start if start is not None and end is not None and end >= start else None

    def request(self) -> dict:
        """The body the service recorded (`paramJson`), or {}."""
        try:
            body = json.loads(self.raw.get("paramJson") or "{}")
        except (TypeError, ValueError):
            return {}
        return body if isinstance(body, dict) else {}

    @classmethod
    def from_data(cls, task_id: str, data: Any) -> TaskStatus:
        """Parse `data` of record-info; nulls, empty strings, string flags and extra fields are fine."""
        data = data if isinstance(data, dict) else {}
        flag = as_int(data.get("successFlag"))
        response = data.get("response") if isinstance(data.get("response"), dict) else {}
        url = text(response.get("resultImageUrl")) or text(response.get("originImageUrl"))
        state, anomaly = TaskState.PENDING, None
        if flag in FLAGS:
            state = FLAGS[flag][0]
        elif data.get("successFlag") not in (None, ""):
            anomaly = f"an unknown successFlag {str(data.get('successFlag'))[:20]!r}"
        if state is TaskState.SUCCEEDED and not url:
            state, anomaly = TaskState.PENDING, "a success without a result URL"
        return cls(
            task_id=text(data.get("taskId")) or task_id,
            state=state,
            flag=flag,
            result_url=url,
            error_code=data.get("errorCode") or None,
            error_message=text(data.get("errorMessage")),
            created=text(data.get("createTime")),
            completed=text(data.get("completeTime")),
            anomaly=anomaly,
            raw=data,
        )


def parse_service_time(value: str | None) -> float | None:
    """Epoch seconds of the service's "YYYY-MM-DD HH:MM:SS" (local time of the service), or None."""
    if not value:
        return None
    from datetime import datetime  # ~1 ms: on first use, not at %load_ext

    for pattern in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S.%f"):
        try:
            return datetime.strptime(value.strip()[:26], pattern).timestamp()
        except ValueError:
            continue
    return None


def text(value: Any) -> str | None:
    """A stripped string, or None for null and empty."""
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def as_int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None
