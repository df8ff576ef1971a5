"""What the run log already answers for a request, and how: a cached result whose file matches its
hash, one fetched again by its task id when the file is damaged (never a submit), and the
API and sink of a task that another kernel may be following too."""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import DownloadError, NanoBananaError
from ..http.budget import POLL
from ..runtime.generation import Generation, TaskRules
from ..runtime.store import RunEntry, Store
from .checks import file_state

if TYPE_CHECKING:
    from ..core.status import TaskStatus
    from ..http.connection import Connection
    from ..runtime.generation import Outcome


def from_entry(entry: RunEntry, store: Store, *, cached: bool) -> Generation:
    """The finished generation a run-log entry records, read from its saved file."""
    generation = Generation.from_file(
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
    generation.parents = tuple(entry.parents)
    return generation


def forgotten(connection: Connection, entry: RunEntry) -> bool:
    """True when the API answers "not found" for a pending task past the grace every new task
    gets (an emulator restarted on the same port): attaching to it would fail every re-run."""
    if time.time() - (entry.submitted_at or 0) < TaskRules.not_found_grace:
        return False
    try:
        connection.record_info(entry.task_id)
    except NanoBananaError as exc:
        return exc.code == 404
    return False


def restore(connection: Connection, entry: RunEntry, store: Store, state: str) -> tuple[Generation | None, str]:
    """Fetch a cached result again by its task id (record-info, then download; never a submit).

    Returns the restored generation, or None and why the API can no longer give it (then a new
    task is paid for). Any other trouble (an outage, a refused key) raises: nothing is paid for
    on a guess, and the cell can simply be run again.
    """
    task_id = entry.task_id
    try:
        status = connection.record_info(task_id)
    except NanoBananaError as exc:
        if exc.code == 404:
            return None, "the API no longer has the task"
        raise _unrestored(exc, task_id, state) from None
    if status.state.value != "succeeded" or not status.result_url:
        return None, f"the API no longer has its result ({status.flag_name})"
    try:
        data = connection.download(status.result_url, task_id=task_id)
    except DownloadError as exc:
        if exc.code in (404, 410):
            return None, f"its result URL has expired ({exc.code})"
        raise _unrestored(exc, task_id, state) from None
    generation = Generation(
        task_id,
        entry.request,
        api=connection,
        sink=store,
        submitted_at=entry.submitted_at,
        duration=entry.elapsed,  # the run log's times stand; this only adds a "restored" event
        rules=TaskRules(timeout=None),
    )
    generation.cached, generation.first_generated = True, entry.submitted_at
    generation.parents = tuple(entry.parents)
    generation.notice = f"the saved file was {state}; fetched it again from the API (no new task)"
    generation.complete(status.result_url, data)
    return generation, ""


def _unrestored(exc: NanoBananaError, task_id: str, state: str) -> NanoBananaError:
    return exc.again(
        f"the saved image of task {task_id} is {state} and fetching it again failed ({exc}); nothing was "
        "submitted: run the cell again later, or use --force to pay for a new task",
        task_id=task_id,
    )


class SharedResult:
    """API and sink of an attached task, which another kernel may be following too.

    The image is saved and its outcome logged under the directory's decision lock, after a look at
    the run log: whichever kernel gets there first saves it; the others take that file (no second
    copy, no second outcome line, and no download when they look after it was logged).
    """

    def __init__(self, connection: Connection, store: Store) -> None:
        self.connection, self.store = connection, store
        self._held: ExitStack | None = None  # the decision lock, from save_image to record_outcome

    def _saved(self, task_id: str) -> RunEntry | None:
        """The run log's succeeded entry of this task when its file is there and matches its hash."""
        try:
            entry = self.store.entry(task_id)
            if entry is None or entry.status != "succeeded" or not entry.sha256:
                return None
            return entry if file_state(self.store, entry) == "ok" else None
        except OSError:  # the directory is gone or unreadable: saving will say so
            return None

    def record_info(self, task_id: str, *, priority: int = POLL) -> TaskStatus:
        return self.connection.record_info(task_id, priority=priority)

    def download(self, url: str, *, task_id: str | None = None) -> bytes:
        entry = self._saved(task_id or "")
        if entry is not None:
            try:
                return self.store.file_path(entry).read_bytes()
            except OSError:
                pass  # removed since: download it after all
        return self.connection.download(url, task_id=task_id)

    def save_image(
        self, task_id: str, request: dict, url: str | None, submitted_at: float, data: bytes
    ) -> tuple[Path, str]:
        held = ExitStack()
        held.enter_context(self.store.deciding())
        self._held = held
        try:
            entry = self._saved(task_id)
            if entry is not None:
                return self.store.file_path(entry), str(entry.sha256)
            return self.store.save_image(task_id, request, url, submitted_at, data)
        except BaseException:
            self._release()
            raise

    def record_outcome(self, outcome: Outcome) -> None:
        try:
            entry = self.store.entry(outcome.task_id)
            logged = entry is not None and not entry.pending and entry.status == outcome.status.value
            if not (logged and outcome.path in (None, self.store.file_path(entry))):  # type: ignore[arg-type]
                self.store.record_outcome(outcome)
        finally:
            self._release()

    def _release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.close()
