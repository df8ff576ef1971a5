"""`Generation`: one task as a state machine, from submit to image (or error), observable from any thread.

One lock guards the state. A step (poll, then download and save) runs its I/O outside the
lock and applies its result under it; ending happens once: whichever of success, failure,
timeout or `cancel()` claims the end first wins, and listeners hear of the end once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..core.errors import (
    DownloadError,
    NanoBananaError,
    ServiceUnavailableError,
    TaskFailedError,
    TaskTimeoutError,
    is_transient,
)
from ..core.schedule import FixedSchedule, PollSchedule
from ..core.states import TaskState
from ..core.status import TaskStatus
from ..http.budget import poll_priority

if TYPE_CHECKING:
    from PIL.Image import Image

log = logging.getLogger("nanobanana_magic")

Listener = Callable[["Generation"], None]


class TaskApi(Protocol):
    """What a generation needs of the API (a `Connection` provides it)."""

    def record_info(self, task_id: str, *, priority: int = ...) -> TaskStatus: ...

    def download(self, url: str, *, task_id: str | None = None) -> bytes: ...


@dataclass(frozen=True)
class Outcome:
    """How a task ended, as the run log records it."""

    task_id: str
    status: TaskState
    finished_at: float
    elapsed: float | None
    url: str | None = None
    path: Path | None = None
    sha256: str | None = None
    error: str | None = None


class ResultSink(Protocol):
    """Where finished images go (the store of `output_dir`)."""

    def save_image(
        self, task_id: str, request: dict, url: str | None, submitted_at: float, data: bytes
    ) -> tuple[Path, str]: ...

    def record_outcome(self, outcome: Outcome) -> None: ...


@dataclass(frozen=True)
class TaskRules:
    """How long to wait for what. `timeout` bounds the task; the others bound odd answers, so
    that a quirk of the service ends in a clear error long before `timeout`."""

    timeout: float | None = 600.0
    schedule: PollSchedule = FixedSchedule()  # noqa: RUF009 - immutable, shared on purpose
    #: seconds after its submit during which a task record-info does not know yet (404, or code
    #: 500 for an id it cannot parse) is polled again; after that a 404 ends it as unknown. 0 means
    #: the id was not just issued by the service (typed by hand): a 404 or a 500 for it ends at once
    not_found_grace: float = 30.0
    #: seconds an unknown successFlag, or a success without a result URL, is polled before giving up
    anomaly_limit: float = 60.0
    #: failed polls in a row (each already retried by the connection) before losing contact
    max_poll_failures: int = 20


class Generation:
    """A submitted task. Attributes follow INTERFACE.md; `wait()` blocks until it ends.

    `parents` holds the task ids of the generations used as its reference images (its lineage).

    A poller may drive it (`driven=True`); otherwise `wait()` polls from the calling thread.
    """

    def __init__(
        self,
        task_id: str,
        request: dict,
        *,
        api: TaskApi | None = None,
        rules: TaskRules = TaskRules(),
        submitted_at: float | None = None,
        sink: ResultSink | None = None,
        duration: float | None = None,
    ) -> None:
        self.task_id = task_id
        self.request = dict(request)
        self.rules = rules
        self.submitted_at = submitted_at if submitted_at is not None else time.time()
        self.cached = False
        self.resumed = False
        self.first_generated: float | None = None
        self.sha256: str | None = None
        self.parents: tuple[str, ...] = ()
        self.polls = 0
        self.driven = False
        self.notice: str | None = None  # one line the caller should see (why a cache entry was not used, ...)
        self._api = api
        self._sink = sink
        self._lock = threading.Lock()  # guards every field below and the end
        self._state = TaskState.PENDING
        self._url: str | None = None
        self._path: Path | None = None
        self._exception: NanoBananaError | None = None
        self._finished_at: float | None = None
        self._duration = duration  # the task's own duration, when the run log already knows it
        self._bytes: bytes | None = None
        self._fresh: bytes | None = None  # the bytes just saved, held only while the end's listeners run
        self._stepping = False
        self._failures = 0
        self._seen = False  # record-info has answered for this task at least once
        self._odd_since: float | None = None
        self._ended = threading.Event()
        self._listeners: list[Listener] = []

    @classmethod
    def from_file(
        cls,
        task_id: str,
        request: dict,
        path: str | Path,
        *,
        url: str | None = None,
        submitted_at: float | None = None,
        finished_at: float | None = None,
        elapsed: float | None = None,
        sha256: str | None = None,
        cached: bool = False,
    ) -> Generation:
        """A finished generation whose image is already on disk (a cache hit, a fetch)."""
        generation = cls(task_id, request, submitted_at=submitted_at)
        generation.cached, generation.first_generated, generation.sha256 = cached, submitted_at, sha256
        generation._state = TaskState.SUCCEEDED
        generation._path, generation._url = Path(path).absolute(), url
        generation._finished_at = finished_at or time.time()
        generation._duration = elapsed
        generation._ended.set()
        return generation

    @classmethod
    def failed_before_submit(cls, request: dict, error: NanoBananaError) -> Generation:
        """Stands for a request that was never accepted (so a batch keeps its order)."""
        generation = cls(f"not-submitted-{id(error):x}", request)
        generation._state, generation._exception = TaskState.FAILED, error
        generation._finished_at = time.time()
        generation._ended.set()
        return generation

    # -- public -----------------------------------------------------------

    @property
    def status(self) -> str:
        return self._state.value

    @property
    def state(self) -> TaskState:
        return self._state

    @property
    def done(self) -> bool:
        return self._state.ended

    @property
    def url(self) -> str | None:
        return self._url

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def exception(self) -> NanoBananaError | None:
        return self._exception

    @property
    def error(self) -> str | None:
        return str(self._exception) if self._exception is not None else None

    @property
    def finished_at(self) -> float | None:
        return self._finished_at

    @property
    def elapsed(self) -> float:
        """The task's own duration: the service's when it said, else submit to first seen ended (or now)."""
        if self._duration is not None:
            return self._duration
        return (self._finished_at or time.time()) - self.submitted_at

    @property
    def prompt(self) -> str:
        return str(self.request.get("prompt", ""))

    @property
    def data(self) -> bytes | None:
        """The file's bytes (with our metadata when saved), checked against the recorded sha256; or None."""
        if self._state is not TaskState.SUCCEEDED:
            return None
        if self._path is None:
            return self._bytes
        try:
            data = self._path.read_bytes()
        except FileNotFoundError:
            raise DownloadError(
                f"the saved image of task {self.task_id} is gone: {self._path}", task_id=self.task_id
            ) from None
        if self.sha256 and _sha256(data) != self.sha256:
            raise DownloadError(
                f"the saved image of task {self.task_id} was altered since it was saved: {self._path}",
                task_id=self.task_id,
            )
        return data

    @property
    def image(self) -> Image | None:
        """The result as a `PIL.Image.Image`, read from disk on access (so memory stays small)."""
        data = self.data
        if data is None:
            return None
        from PIL import Image

        image = Image.open(BytesIO(data))
        image.load()
        return image

    def wait(self, timeout: float | None = None) -> Generation:
        """Block until the task ends; return self, or raise the task's error.

        `timeout` bounds this wait only (TaskTimeoutError): the task itself goes on.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ended.is_set():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TaskTimeoutError(
                    f"task {self.task_id} still pending after {timeout:g} s; it goes on",
                    task_id=self.task_id,
                    hint="wait",
                )
            pause = 0.2
            if not self.driven and self._api is not None:
                self.step()
                pause = self.next_poll_in()
            self._ended.wait(pause if remaining is None else min(pause, remaining))
        if self._exception is not None:  # set before the end event, so never read half-ended
            raise self._exception
        return self

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` seconds without raising; True once the task has ended."""
        return self._ended.wait(timeout)

    def preview(self, max_px: int = 1024, fmt: str = "jpeg", quality: int = 85) -> bytes | None:
        """A copy at most `max_px` on its longest side (JPEG or PNG bytes), or None without an image.

        Made once per saved file and kept beside it, so showing a result again costs no decoding.
        Raises `DownloadError` when the saved file is gone or altered.
        """
        from ..core.images import preview_bytes
        from .previews import cached_preview

        if self._state is not TaskState.SUCCEEDED:
            return None
        if self._path is None:
            return preview_bytes(self._bytes, max_px, fmt, quality) if self._bytes else None
        fresh = self._fresh
        if fresh is not None:  # just downloaded, checked, hashed and saved: no need to read and hash it again
            return cached_preview(self._path, max_px, fmt, quality, data=fresh)
        self.data  # noqa: B018 - the hash check: an altered file is never shown
        return cached_preview(self._path, max_px, fmt, quality)

    def save(self, path: str | Path) -> Path:
        """Write the image to `path` in the format its suffix names (.png, .jpg/.jpeg, .webp); returns the path.

        A directory gets `<task id>.<format of the bytes>`; the bytes are then written as downloaded.
        """
        from ..core.images import convert, image_format, suffix_format

        data = self.data
        if data is None:
            raise NanoBananaError(f"task {self.task_id} has no image ({self.status})")
        path = Path(path).expanduser()
        if path.is_dir():
            # The task id comes from the server: it may not steer the name out of `path`.
            stem = "".join(c for c in self.task_id if c.isalnum() or c in "_-")[:64] or "image"
            path = path / f"{stem}.{image_format(data)}"
        wanted = suffix_format(path.suffix)
        if wanted != image_format(data):
            data = convert(data, wanted)
        path.write_bytes(data)
        return path

    def cancel(self) -> None:
        """Stop waiting for this task locally. The API has no cancel: the task may still finish."""
        self._end(TaskState.CANCELLED, None, record=False)

    def add_listener(self, listener: Listener) -> None:
        """Call `listener(self)` after progress and once at the end, from any thread."""
        with self._lock:
            self._listeners.append(listener)
            ended = self._state.ended
        if ended:
            _call(listener, self)

    def __repr__(self) -> str:
        where = f" {self._path}" if self._path else ""
        why = f" ({self.error})" if self._exception else ""
        return f"<Generation {self.task_id} {self.status} {self.elapsed:.1f}s{where}{why}>"

    def _repr_html_(self) -> str:
        from ..core.render import generation_html

        try:
            preview = self.preview(512, "jpeg")
        except NanoBananaError:
            preview = None
        return generation_html(self, preview)

    def _repr_png_(self) -> bytes | None:
        try:
            return self.preview(512, "png")
        except NanoBananaError:
            return None

    # -- driving (poller workers or wait()) --------------------------------

    def next_poll_in(self, age: float | None = None) -> float:
        """Seconds from `age` (default: now) to the next status request its schedule plans."""
        age = self.elapsed if age is None else age
        return max(0.0, self.rules.schedule.next_poll(age, self.polls) - age)

    def step(self, *, defer: bool = False) -> Callable[[], None] | None:
        """Poll once; when the task succeeded, download and save the image. Concurrent calls skip.

        With `defer`, a success is not finished here: the download, save and listeners come
        back as a callable for another thread to run, so that the next poll never waits
        behind a preview. Until that callable has run, further steps skip.
        """
        with self._lock:
            if self._state.ended or self._api is None or self._stepping:
                return None
            self._stepping = True
        try:
            finish = self._step()
        except BaseException:
            self._unlock()
            raise
        if finish is None:
            self._unlock()
            return None
        finish = self._then_unlock(finish)
        if defer:
            return finish
        finish()
        return None

    def _unlock(self) -> None:
        with self._lock:
            self._stepping = False

    def _then_unlock(self, finish: Callable[[], None]) -> Callable[[], None]:
        def finish_then_unlock() -> None:
            try:
                finish()
            finally:
                self._unlock()

        return finish_then_unlock

    def _step(self) -> Callable[[], None] | None:
        """One status request; returns the work still to do when it found the task succeeded."""
        if self.rules.timeout is not None and self.elapsed > self.rules.timeout:
            self._end(
                TaskState.FAILED,
                TaskTimeoutError(
                    f"task {self.task_id} did not finish within {self.rules.timeout:g} s; it may still finish",
                    task_id=self.task_id,
                ),
                record=False,
            )
            return None
        self.polls += 1
        try:
            priority = poll_priority(self.rules.schedule.likely_done(self.elapsed))
            status = self._api.record_info(self.task_id, priority=priority)  # type: ignore[union-attr]
        except NanoBananaError as exc:
            self._poll_failed(exc)
            return None
        self._failures, self._seen = 0, True
        if not self.request:  # a task recovered by id: the API still knows what was asked
            self.request = status.request()
        if status.state is TaskState.FAILED:
            reason = status.error_message or "no reason given"
            code = f", code {status.error_code}" if status.error_code else ""
            self._end(
                TaskState.FAILED,
                TaskFailedError(
                    f"task {self.task_id} failed: {reason} ({status.flag_name}{code})",
                    task_id=self.task_id,
                    code=_maybe_int(status.error_code),
                ),
                duration=status.duration,
            )
        elif status.state is TaskState.SUCCEEDED:
            url, duration = status.result_url, status.duration
            return lambda: self.complete(url, duration=duration)
        elif status.anomaly:
            self._odd_answer(status.anomaly)
        else:
            self._odd_since = None
            self._progress()
        return None

    def complete(self, url: str | None, data: bytes | None = None, *, duration: float | None = None) -> None:
        """The task succeeded at `url`: download (unless `data` is given), save, end."""
        with self._lock:
            self._url = url
        try:
            if data is None:
                data = self._api.download(url or "", task_id=self.task_id)  # type: ignore[union-attr]
        except NanoBananaError as exc:
            self._end(
                TaskState.FAILED, exc if exc.task_id else exc.again(str(exc), task_id=self.task_id), duration=duration
            )
            return
        self._finish(data, duration)

    def _finish(self, data: bytes, duration: float | None) -> None:
        with self._lock:
            if self._state.ended:  # cancelled while downloading: the task stays fetchable
                return
            try:
                if self._sink is not None:
                    path, self.sha256 = self._sink.save_image(
                        self.task_id, self.request, self._url, self.submitted_at, data
                    )
                    self._path = path.absolute()
                else:
                    self._bytes = data
            except OSError as exc:  # disk full, permissions: the image stays at the URL
                where = f" to {exc.filename}" if exc.filename else ""
                error = NanoBananaError(
                    f"could not save the image{where}: {exc.strerror or exc}", task_id=self.task_id, hint="fetch"
                )
                self._claim_end(TaskState.FAILED, error, duration)
            else:
                if self._claim_end(TaskState.SUCCEEDED, None, duration):
                    self._fresh = data
        try:
            self._after_end(record=True)  # the cell's listener makes its preview from `_fresh`
        finally:
            self._fresh = None  # never kept: a thousand results must not hold a thousand images

    def _odd_answer(self, anomaly: str) -> None:
        """The service says the task ended, but not in a way we can use (an unknown successFlag, a
        success without a URL): poll on for `anomaly_limit` seconds in case it settles, then end."""
        now = time.monotonic()
        self._odd_since = self._odd_since or now
        if now - self._odd_since < self.rules.anomaly_limit:
            log.debug("task %s: %s; polling again", self.task_id, anomaly)
            self._progress()
            return
        self._end(
            TaskState.FAILED,
            ServiceUnavailableError(
                f"task {self.task_id}: record-info kept reporting {anomaly} for "
                f"{now - self._odd_since:.0f} s; stopped polling",
                task_id=self.task_id,
                hint="fetch",
            ),
            record=False,
        )

    def _poll_failed(self, exc: NanoBananaError) -> None:
        """A status request failed (after the connection's own retries): poll again, or end."""
        self._failures += 1
        age = time.time() - self.submitted_at
        # The service may not know a task it just created (404), or may fail to parse an id it
        # never issued (code 500): until record-info has answered once, both are "unknown".
        unknown = exc.code in (404, 500) and not self._seen
        if unknown and age < self.rules.not_found_grace:
            log.debug(
                "task %s not known yet (%.1f s after submit, code %s); polling again", self.task_id, age, exc.code
            )
            self._progress()
            return
        if unknown or exc.code == 404:
            self._end(TaskState.FAILED, self._unknown_task(exc, age), record=False)
            return
        if isinstance(exc, TaskFailedError):  # code 501: the generation failed; not a server error to retry
            self._end(TaskState.FAILED, exc.again(f"task {self.task_id} failed: {exc}", task_id=self.task_id))
            return
        if is_transient(exc) and self._failures < self.rules.max_poll_failures:
            log.debug("poll of %s failed (%s); will poll again", self.task_id, exc)
            self._progress()
            return
        self._end(
            TaskState.FAILED,
            exc.again(
                f"lost contact with task {self.task_id}: {exc}; it may still finish", task_id=self.task_id, hint="fetch"
            ),
            record=False,
        )

    def _unknown_task(self, exc: NanoBananaError, age: float) -> NanoBananaError:
        """The error for a task record-info would not answer for: named, and never blamed on the task."""
        grace = self.rules.not_found_grace
        when = f" {age:.0f} s after its submit" if not self._seen and grace > 0 and age < 2 * grace + 60 else ""
        if exc.code == 404:
            return exc.again(
                f"the service does not know task {self.task_id}{when} ({exc})", task_id=self.task_id, hint="history"
            )
        # Code 500 for an id: the service cannot parse it. One typed by hand (no grace) is likely mistyped;
        # one it issued itself is paid for and may be fetched later.
        typed = grace <= 0
        return exc.again(
            f"the service could not look up task {self.task_id}{when} ({exc}){'; check the task id' if typed else ''}",
            task_id=self.task_id,
            hint="history" if typed else "fetch",
        )

    # -- ending --------------------------------------------------------------

    def _end(
        self, state: TaskState, error: NanoBananaError | None, *, record: bool = True, duration: float | None = None
    ) -> None:
        """End once. `record`: the API told us the outcome, so it goes into the run log."""
        with self._lock:
            if not self._claim_end(state, error, duration):
                return
        self._after_end(record=record)

    def _claim_end(self, state: TaskState, error: NanoBananaError | None, duration: float | None) -> bool:
        """Under the lock: set the final state unless another end came first."""
        if self._state.ended:
            return False
        self._exception, self._state = error, state  # the error first: `done` never shows without it
        self._finished_at = time.time()
        if duration is not None:
            self._duration = duration
        return True

    def _after_end(self, *, record: bool) -> None:
        if record and self._sink is not None and self._state is not TaskState.CANCELLED:
            try:
                self._sink.record_outcome(self.outcome())
            except OSError as exc:
                log.warning("could not write the run log: %s", exc)
        self._ended.set()
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            _call(listener, self)

    def outcome(self) -> Outcome:
        """The ended state as the run log records it: a task the API finished whose image could
        not be fetched or saved succeeded there all the same (it can be fetched again)."""
        state = TaskState.SUCCEEDED if self._url and self._state is TaskState.FAILED else self._state
        return Outcome(
            self.task_id,
            state,
            self._finished_at or time.time(),
            round(self.elapsed, 2),
            url=self._url,
            path=self._path,
            sha256=self.sha256,
            error=self.error,
        )

    def _progress(self) -> None:
        with self._lock:
            if self._state.ended:
                return
            listeners = list(self._listeners)
        for listener in listeners:
            _call(listener, self)


def _call(listener: Listener, generation: Generation) -> None:
    try:
        listener(generation)
    except Exception:  # a broken display must not stop the task
        log.exception("listener of task %s failed", generation.task_id)


def _sha256(data: bytes) -> str:
    import hashlib  # loads OpenSSL (~3 ms): not at %load_ext

    return hashlib.sha256(data).hexdigest()


def _maybe_int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
