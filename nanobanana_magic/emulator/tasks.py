"""Tasks, their successFlag life cycle, and the credit balance that pays for them."""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from .validation import SubmitParams

#: Credits charged per submitted task, by resolution (higher resolutions cost more).
COSTS = {"1K": 4, "2K": 6, "4K": 12}

GENERATING, SUCCESS, CREATE_TASK_FAILED, GENERATE_FAILED = 0, 1, 2, 3


class InsufficientCredits(Exception):
    """The balance does not cover the task's cost."""


class TooManyGenerating(Exception):
    """The concurrency limit is reached: the task is refused, nothing is charged."""


class Durations(Protocol):
    """Draws how long a new task generates (called under the store's lock)."""

    def draw(self, resolution: str) -> float: ...

    def restart(self) -> None: ...


@dataclass(frozen=True)
class Failure:
    """How a task that is meant to fail ends."""

    flag: int = GENERATE_FAILED
    code: int = 400
    message: str = "flagged by content policy"

    def __post_init__(self) -> None:
        if self.flag not in (CREATE_TASK_FAILED, GENERATE_FAILED):
            raise ValueError(f"a failed task ends with successFlag 2 or 3, not {self.flag}")


@dataclass(frozen=True)
class Order:
    """How one task is to behave, as ordered by a submit fault or a server option."""

    failure: Failure | None = None
    odd_flag: int | None = None
    url_shape: str | None = None
    hidden_polls: int = 0
    failed_code: int | None = None


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
    #: successFlag shown once done instead of 1, outside the documented 0..3
    odd_flag: int | None = None
    #: a success without a URL: "null", "empty" or "missing" (see faults.URL_SHAPES)
    url_shape: str | None = None
    #: polls still to be answered "task not found"
    hidden_polls: int = 0
    #: JSON code record-info answers once the task has failed (None: code 200 and the record)
    failed_code: int | None = None

    @property
    def done(self) -> bool:
        """True once the task has ended (successfully or not)."""
        return self.done_at is not None and time.time() >= self.done_at

    @property
    def flag(self) -> int:
        """The successFlag a poll would see now."""
        if not self.done:
            return GENERATING
        if self.failure:
            return self.failure.flag
        return SUCCESS if self.odd_flag is None else self.odd_flag

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
        "response": _response(task, result_url) if flag == SUCCESS else None,
        "successFlag": flag,
        "errorCode": task.failure.code if failed else None,
        "errorMessage": task.failure.message if failed else None,
        "operationType": task.operation_type,
        "createTime": format_time(task.created),
    }


def _response(task: Task, result_url: str) -> dict[str, Any] | None:
    if task.url_shape == "missing":
        return None
    url = {"null": None, "empty": ""}.get(task.url_shape or "", result_url)
    return {"originImageUrl": None, "resultImageUrl": url}


class TaskStore:
    """Tasks, pending outcome orders and the balance. ``_lock`` guards all of them."""

    def __init__(
        self, credits: int, latency: float | None, fail_words: tuple[str, ...], durations: Durations | None = None
    ) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[str, Task] = {}
        self._failures: deque[Failure] = deque()
        self._never_finish = 0
        self.fail_words = tuple(word.lower() for word in fail_words)
        self.credits = credits
        self.latency = latency
        #: when set, each task's duration is drawn from it and ``latency`` is ignored
        self.durations = durations
        self.submit_count = 0
        self.peak_generating = 0

    def create(
        self, body: dict[str, Any], params: SubmitParams, order: Order = Order(), max_generating: int | None = None
    ) -> Task:
        """Charge for and store a new task.

        Raises InsufficientCredits when broke and TooManyGenerating when ``max_generating``
        tasks are already generating; either way nothing is charged or stored.
        """
        cost = COSTS[params.resolution]
        now = time.time()
        with self._lock:
            generating = self._generating_locked(now)
            if max_generating is not None and generating >= max_generating:
                raise TooManyGenerating(f"too many tasks generating: at most {max_generating} at once")
            if self.credits < cost:
                raise InsufficientCredits(f"insufficient credits: {cost} needed, {self.credits} left")
            self.credits -= cost
            task = Task(
                uuid.uuid4().hex,
                body,
                params,
                now,
                None,
                cost=cost,
                odd_flag=order.odd_flag,
                url_shape=order.url_shape,
                hidden_polls=order.hidden_polls,
                failed_code=order.failed_code,
            )
            self._decide_outcome(task, order.failure)
            duration = self._duration_locked(params.resolution)
            if not task.never_finishes and duration is not None:
                task.done_at = now + duration
            self._tasks[task.task_id] = task
            self.submit_count += 1
            self.peak_generating = max(self.peak_generating, generating + 1)
            return task

    def _duration_locked(self, resolution: str) -> float | None:
        if self.durations is not None:
            return self.durations.draw(resolution)
        return self.latency

    def _generating_locked(self, now: float) -> int:
        # Manual and never-finishing tasks (done_at None) are generating until ended.
        return sum(1 for task in self._tasks.values() if task.done_at is None or task.done_at > now)

    def take_hidden_poll(self, task: Task) -> bool:
        """True when this poll of ``task`` is to be answered "task not found" (one fewer left)."""
        with self._lock:
            if task.hidden_polls <= 0:
                return False
            task.hidden_polls -= 1
            return True

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
            self.peak_generating = 0
            if self.durations is not None:
                self.durations.restart()
