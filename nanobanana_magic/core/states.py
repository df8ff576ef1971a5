"""Task states: one vocabulary from the API's successFlag to what a person reads."""

from __future__ import annotations

from enum import Enum


class TaskState(str, Enum):
    """Where a task is; the value is the `Generation.status` string of the contract."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        return self is not TaskState.PENDING

    def __str__(self) -> str:
        return self.value


#: successFlag → (state, the API's name for it)
FLAGS: dict[int, tuple[TaskState, str]] = {
    0: (TaskState.PENDING, "GENERATING"),
    1: (TaskState.SUCCEEDED, "SUCCESS"),
    2: (TaskState.FAILED, "CREATE_TASK_FAILED"),
    3: (TaskState.FAILED, "GENERATE_FAILED"),
}

#: state → (word of the status line, icon)
LABELS: dict[TaskState, tuple[str, str]] = {
    TaskState.PENDING: ("generating", "⏳"),
    TaskState.SUCCEEDED: ("succeeded", "✓"),
    TaskState.FAILED: ("failed", "✗"),
    TaskState.CANCELLED: ("cancelled (still in the history)", "■"),
}
