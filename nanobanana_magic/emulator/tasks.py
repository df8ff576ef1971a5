"""Tasks, their successFlag life cycle, and the credit balance that pays for them."""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .validation import SubmitParams

#: Credits charged per submitted task, by resolution (higher resolutions cost more).
COSTS = {"1K": 4, "2K": 6, "4K": 12}

GENERATING, SUCCESS, CREATE_TASK_FAILED, GENERATE_FAILED = 0, 1, 2, 3


class InsufficientCredits(Exception):
    """The balance does not cover the task's cost."""


@dataclass(frozen=True)
class Failure:
    """How a task that is meant to fail ends."""

    flag: int = GENERATE_FAILED
    code: int = 400
    message: str = "flagged by content policy"

    def __post_init__(self) -> None:
        if self.flag not in (CREATE_TASK_FAILED, GENERATE_FAILED):
            raise ValueError(f"a failed task ends with successFlag 2 or 3, not {self.flag}")


@dataclass
class Task:
    """One accepted submit. ``done_at`` is None while it waits for ``finish()`` or forever."""

    task_id: str
    body: dict[str, Any]
    params: SubmitParams
    created: float
    done_at: float | None
    failure: Failure | None = None
    never_finishes: bool = False
    cost: int = 0
    callback_sent: bool = field(default=False, repr=False)

    @property
    def done(self) -> bool:
        """True once the task has ended (successfully or not)."""
        return self.done_at is not None and time.time() >= self.done_at

    @property
    def flag(self) -> int:
        """The successFlag a poll would see now."""
        if not self.done:
            return GENERATING
        return self.failure.flag if self.failure else SUCCESS

    @property
    def ext(self) -> str:
        """File extension of the result: png or jpg."""
        return self.params.output_format

    @property
    def operation_type(self) -> str:
        """The record's operationType, e.g. "nano-banana-2_1k"."""
        return f"nano-banana-2_{self.params.resolution.lower()}"


def format_time(timestamp: float) -> str:
    """The service's time format: local "YYYY-MM-DD HH:MM:SS"."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def task_record(task: Task, result_url: str, param_json: str) -> dict[str, Any]:
    """The ``data`` object of a record-info answer for ``task`` as it is now."""
    flag = task.flag
    failed = flag in (CREATE_TASK_FAILED, GENERATE_FAILED)
    return {
        "taskId": task.task_id,
        "paramJson": param_json,
        "completeTime": format_time(task.done_at) if flag != GENERATING else "",
        "response": {"originImageUrl": None, "resultImageUrl": result_url} if flag == SUCCESS else None,
        "successFlag": flag,
        "errorCode": task.failure.code if failed else None,
        "errorMessage": task.failure.message if failed else None,
        "operationType": task.operation_type,
        "createTime": format_time(task.created),
    }


class TaskStore:
    """Tasks, pending outcome orders and the balance. ``_lock`` guards all of them."""

    def __init__(self, credits: int, latency: float | None, fail_words: tuple[str, ...]) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[str, Task] = {}
        self._failures: deque[Failure] = deque()
        self._never_finish = 0
        self.fail_words = tuple(word.lower() for word in fail_words)
        self.credits = credits
        self.latency = latency
        self.submit_count = 0

    def create(self, body: dict[str, Any], params: SubmitParams, failure: Failure | None = None) -> Task:
        """Charge for and store a new task; raise InsufficientCredits when broke."""
        cost = COSTS[params.resolution]
        now = time.time()
        with self._lock:
            if self.credits < cost:
                raise InsufficientCredits(f"insufficient credits: {cost} needed, {self.credits} left")
            self.credits -= cost
            task = Task(uuid.uuid4().hex, body, params, now, None, cost=cost)
            self._decide_outcome(task, failure)
            if not task.never_finishes and self.latency is not None:
                task.done_at = now + self.latency
            self._tasks[task.task_id] = task
            self.submit_count += 1
            return task

    def _decide_outcome(self, task: Task, injected: Failure | None) -> None:
        if self._never_finish:
            self._never_finish -= 1
            task.never_finishes = True
        elif injected:
            task.failure = injected
        elif self._failures:
            task.failure = self._failures.popleft()
        elif any(word in task.params.prompt.lower() for word in self.fail_words):
            task.failure = Failure()

    def get(self, task_id: str) -> Task | None:
        """The task, or None when there is no such id."""
        with self._lock:
            return self._tasks.get(task_id)

    def snapshot(self) -> dict[str, Task]:
        """A copy of the task table."""
        with self._lock:
            return dict(self._tasks)

    def finish(self, task_id: str) -> Task | None:
        """End a waiting task now; returns it, or None when it cannot (unknown, done, never)."""
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None:
                raise KeyError(f"no task {task_id!r}")
            return self._finish_locked(task)

    def finish_all(self) -> list[Task]:
        """End every waiting task (except never-finishing ones); returns those ended."""
        with self._lock:
            ended = [self._finish_locked(task) for task in self._tasks.values()]
            return [task for task in ended if task is not None]

    def _finish_locked(self, task: Task) -> Task | None:
        now = time.time()
        if task.never_finishes or (task.done_at is not None and task.done_at <= now):
            return None
        task.done_at = now
        return task

    def order_failures(self, count: int, failure: Failure) -> None:
        """Make the next ``count`` created tasks end with ``failure``."""
        with self._lock:
            self._failures.extend([failure] * count)

    def order_never_finish(self, count: int) -> None:
        """Make the next ``count`` created tasks generate forever."""
        with self._lock:
            self._never_finish += count

    def reset(self, credits: int, latency: float | None) -> None:
        """Forget tasks, orders and counters; restore balance and latency."""
        with self._lock:
            self._tasks.clear()
            self._failures.clear()
            self._never_finish = 0
            self.credits = credits
            self.latency = latency
            self.submit_count = 0
