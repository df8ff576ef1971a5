"""`Session`: the per-kernel state the magics, the panel and the Python API share (one code path for all).

It owns the connection (rebuilt when the key, base URL or retry settings change), the store
of the output directory, the one poller, and a locked registry of this kernel's generations.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import NanoBananaError
from ..core.params import GenerationRequest
from ..core.schedule import FixedSchedule, LearnedSchedule, PollSchedule, durations_by_resolution
from ..http.budget import RequestBudget
from ..runtime.generation import Generation, TaskRules
from ..runtime.poller import Poller
from ..runtime.store import RunEntry, Store
from .registry import Registry
from .settings import Settings

if TYPE_CHECKING:
    from ..http.connection import Connection
    from ..runtime.batch import OnProgress

OnSubmit = Callable[[int, Generation], None]


class Session:
    """Submits, tracks and recovers generations for one kernel."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.generations = Registry()
        self._connection: Connection | None = None
        self._connection_key: tuple | None = None
        self._poller: Poller | None = None
        self._store: Store | None = None
        self._schedules: dict[tuple[Path, str], tuple[int, PollSchedule]] = {}  # learned, by (dir, resolution)
        self._lock = threading.Lock()  # guards creating _connection, _store, _poller and _schedules
        self.budget = RequestBudget(self.settings.max_requests_per_second)  # every API request of the kernel

    def update(self, settings: Settings) -> None:
        """Use new settings from now on; parts built from changed ones are rebuilt on next use."""
        self.settings = settings
        self.budget.rate = settings.max_requests_per_second

    # -- parts built on first use (keeps %load_ext fast) ---------------------

    @property
    def connection(self) -> Connection:
        from ..http.connection import Connection  # requests loads on first use, not at %load_ext
        from ..http.retry import RetryPolicy

        settings = self.settings
        with self._lock:
            if self._connection is None or self._connection_key != settings.connection_key:
                retry = RetryPolicy(settings.retries, settings.retry_backoff, settings.retry_backoff_max)
                self._connection = Connection(
                    api_key=settings.api_key or "",
                    base_url=settings.base_url,
                    connect_timeout=settings.connect_timeout,
                    read_timeout=settings.read_timeout,
                    download_timeout=settings.download_timeout,
                    retry=retry,
                    budget=self.budget,
                )
                self._connection_key = settings.connection_key
            return self._connection

    @property
    def store(self) -> Store:
        """The store of the configured output_dir (kept while the setting stays the same)."""
        path = Path(self.settings.output_dir).expanduser().absolute()
        with self._lock:
            if self._store is None or self._store.output_dir != path:
                self._store = Store(path)
            return self._store

    @property
    def poller(self) -> Poller:
        with self._lock:
            if self._poller is None:
                self._poller = Poller(workers=self.settings.workers)
            return self._poller

    def close(self) -> None:
        """Stop the threads (on %unload_ext). Pending tasks stay in the run log."""
        if self._poller is not None:
            self._poller.stop()
        self.budget.close()
        if self._connection is not None:
            self._connection.close()

    def rules(self, timeout: float | None = None, resolution: str = "1K") -> TaskRules:
        """How a new task of this session is waited for: its timeout and its poll schedule."""
        return TaskRules(
            timeout=self.settings.timeout if timeout is None else timeout, schedule=self.schedule(resolution)
        )

    def schedule(self, resolution: str) -> PollSchedule:
        """The fixed schedule of the settings, or one learned from `output_dir`'s finished tasks of this
        resolution (re-planned when the history has grown by a tenth, at most every 10 tasks)."""
        steps = self.settings.poll_schedule
        if steps != "auto":
            return FixedSchedule(steps)  # type: ignore[arg-type]
        store = self.store
        history = durations_by_resolution(_duration_records(store.entries())).get(resolution.upper(), [])
        key = (store.output_dir, resolution.upper())
        with self._lock:
            known = self._schedules.get(key)
            if known is not None and len(history) - known[0] < max(10, known[0] // 10):
                return known[1]
        schedule = LearnedSchedule.from_durations(history, FixedSchedule())
        with self._lock:
            self._schedules[key] = (len(history), schedule)
        return schedule

    # -- the one way in ------------------------------------------------------

    def submit(self, request: GenerationRequest, *, force: bool = False, timeout: float | None = None) -> Generation:
        """A cached generation, or a new task: submitted, logged, then polled in the background."""
        body = request.to_body()
        store = self.store
        check_output_dir(store.output_dir)  # before paying: a task whose id cannot be logged is at risk
        if self.settings.cache and not force:
            entry = store.find_cached(body)
            if entry is not None:
                return self.generations.add(self._from_entry(entry, store, cached=True))
        connection = self.connection
        task_id = connection.submit(request)
        # The task's clock starts when the service answered: polls are timed from here.
        submitted_at = time.time()
        store.record_submit(task_id, body, submitted_at)  # before any polling: a paid task is never lost
        generation = Generation(
            task_id,
            body,
            api=connection,
            submitted_at=submitted_at,
            sink=store,
            rules=self.rules(timeout, request.resolution),
        )
        self.generations.add(generation)
        self.poller.track(generation)
        return generation

    def generate_many(
        self,
        requests: Sequence[Any],
        *,
        concurrency: int | None = None,
        force: bool = False,
        timeout: float | None = None,
        on_submit: OnSubmit | None = None,
        on_progress: OnProgress | None = None,
    ) -> list[Generation]:
        """A batch through this session (cache, run log, poller); Generations in input order."""
        from ..runtime.batch import as_requests, run_batch, submit_or_record_failure

        submit = submit_or_record_failure(lambda request: self.submit(request, force=force, timeout=timeout))
        return run_batch(
            as_requests(requests),
            submit,
            concurrency=concurrency or self.settings.concurrency,
            on_submit=on_submit,
            on_progress=on_progress,
        )

    def start_many(self, requests: Sequence[Any], **options: Any) -> threading.Thread:
        """`generate_many` in a daemon thread (a sweep that must not hold the kernel)."""
        thread = threading.Thread(
            target=self.generate_many, args=(requests,), kwargs=options, name="nanobanana-batch", daemon=True
        )
        thread.start()
        return thread

    def fetch(self, task_id: str) -> Generation:
        """A task's result without submitting: from the saved file, else record-info and download."""
        task_id = task_id.strip()
        known = self.generations.get(task_id)
        if known is not None and known.status == "succeeded":
            return known
        store = self.store
        entry = store.entry(task_id)
        if entry is not None and entry.file and store.file_path(entry).is_file():
            return self.generations.add(self._from_entry(entry, store, cached=False))
        request = entry.request if entry is not None else {}
        submitted_at = entry.submitted_at if entry and entry.submitted_at else time.time()
        generation = Generation(
            task_id,
            request,
            api=self.connection,
            sink=store,
            submitted_at=submitted_at,
            rules=TaskRules(timeout=None, schedule=self.schedule(str(request.get("resolution") or "1K"))),
        )
        generation.step()
        if entry is None and generation.request:  # known to the API: keep it in this directory's log
            store.record_submit(task_id, generation.request, generation.submitted_at)
        return self.generations.add(generation)

    def track(self, generation: Generation) -> None:
        """Keep polling a pending generation in the background (after fetch, say)."""
        if not generation.done:
            self.poller.track(generation)

    def pending(self) -> list[Generation]:
        return self.generations.pending()

    def resolve(self, task_ids: Sequence[str]) -> list[Generation]:
        """This kernel's generations by id (all pending ones when none are named)."""
        if not task_ids:
            return self.pending()
        missing = [t for t in task_ids if t not in self.generations]
        if missing:
            raise NanoBananaError(f"task {missing[0]} is not running in this kernel", task_id=missing[0], hint="fetch")
        return [self.generations[t] for t in task_ids]

    @staticmethod
    def _from_entry(entry: RunEntry, store: Store, *, cached: bool) -> Generation:
        return Generation.from_file(
            entry.task_id,
            entry.request,
            store.file_path(entry),
            url=entry.url,
            submitted_at=entry.submitted_at,
            finished_at=entry.finished_at,
            elapsed=entry.elapsed,
            sha256=entry.sha256,
            cached=cached,
        )


def _duration_records(entries: Sequence[RunEntry]) -> list[dict[str, Any]]:
    """Run-log entries as the schedule learner reads them: a task's own duration is `elapsed`."""
    return [
        {
            "status": e.status,
            "request": e.request,
            "submitted_t": e.submitted_at,
            "finished_t": (e.submitted_at or 0) + e.elapsed,
        }
        for e in entries
        if e.status == "succeeded" and e.submitted_at and e.elapsed
    ]


def check_output_dir(path: Path) -> None:
    """Create `output_dir` if needed; a one-line error when it cannot hold the run log and images."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    else:
        if os.access(path, os.W_OK | os.X_OK):
            return
        reason = "not writable"
    raise NanoBananaError(
        f"output_dir {str(path)!r} cannot be used ({reason}); nothing was submitted", hint="output_dir"
    )
