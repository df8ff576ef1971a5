"""`Generation`: one task, from submit to image (or error), observable from any thread."""

from __future__ import annotations

import logging
import re
import threading
import time
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from ..core.errors import (NanoBananaError, TaskFailedError, TaskTimeoutError,
                     is_transient)

if TYPE_CHECKING:
    from PIL.Image import Image

    from ..session.client import NanoBananaClient

log = logging.getLogger("nanobanana_magic")

# (until this many seconds after submit, poll this often): frequent at first, then backing off.
DEFAULT_SCHEDULE: tuple[tuple[float, float], ...] = ((60.0, 1.0), (180.0, 2.0), (float("inf"), 5.0))
MAX_TRANSIENT_POLL_FAILURES = 20


def poll_delay(age: float, schedule: Sequence[Sequence[float]] = DEFAULT_SCHEDULE) -> float:
    """Seconds until the next status request for a task submitted `age` seconds ago."""
    for until, every in schedule:
        if age < until:
            return float(every)
    return float(schedule[-1][1])


class ResultSink(Protocol):
    """Where finished images go (the store, in a notebook session)."""

    def save_image(self, generation: "Generation", data: bytes) -> Path: ...

    def record_outcome(self, generation: "Generation") -> None: ...


class Generation:
    """A submitted task. Attributes follow INTERFACE.md; `wait()` blocks until it ends.

    A poller may drive it (`driven=True`), otherwise `wait()` polls from the calling thread.
    """

    def __init__(self, task_id: str, request: dict, *, client: "NanoBananaClient | None" = None,
                 timeout: float | None = 600.0, submitted_at: float | None = None,
                 sink: ResultSink | None = None,
                 schedule: Sequence[Sequence[float]] = DEFAULT_SCHEDULE) -> None:
        self.task_id = task_id
        self.request = dict(request)
        self.status = "pending"
        self.url: str | None = None
        self.path: Path | None = None
        self.error: str | None = None
        self.exception: NanoBananaError | None = None
        self.cached = False
        self.first_generated: float | None = None
        self.submitted_at = submitted_at if submitted_at is not None else time.time()
        self.finished_at: float | None = None
        self.timeout = timeout
        self.polls = 0
        self.schedule = schedule
        self.driven = False
        self._client = client
        self._sink = sink
        self._bytes: bytes | None = None
        self._transient_failures = 0
        self._ended = threading.Event()
        self._step_lock = threading.Lock()
        self._listeners: list[Callable[["Generation"], None]] = []

    @classmethod
    def from_file(cls, task_id: str, request: dict, path: "str | Path", *, url: str | None = None,
                  submitted_at: float | None = None, finished_at: float | None = None,
                  cached: bool = False) -> "Generation":
        """A finished generation whose image is already on disk (a cache hit, a fetch)."""
        now = time.time()
        generation = cls(task_id, request, submitted_at=now if cached else (submitted_at or now))
        generation.path, generation.url, generation.cached = Path(path), url, cached
        generation.first_generated = submitted_at
        generation.finished_at = now if cached else (finished_at or now)
        generation.status = "succeeded"
        generation._ended.set()
        return generation

    # -- public -----------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.status != "pending"

    @property
    def elapsed(self) -> float:
        """Seconds from submit to the end (or to now while pending)."""
        return (self.finished_at or time.time()) - self.submitted_at

    @property
    def image(self) -> "Image | None":
        """The result as a `PIL.Image.Image`, read from disk on access (so memory stays small)."""
        data = self.data
        if data is None:
            return None
        from PIL import Image

        image = Image.open(BytesIO(data))
        image.load()
        return image

    @property
    def data(self) -> bytes | None:
        """The file's bytes as downloaded (with our metadata when saved), or None."""
        if self.status != "succeeded":
            return None
        if self.path is not None and Path(self.path).exists():
            return Path(self.path).read_bytes()
        return self._bytes

    def wait(self, timeout: float | None = None) -> "Generation":
        """Block until the task ends; return self, or raise the task's error.

        `timeout` bounds this wait only (TaskTimeoutError): the task itself goes on.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TaskTimeoutError(f"task {self.task_id} still pending after {timeout:g} s; "
                                       "it goes on, see %nanobanana wait")
            if self.driven or self._client is None:
                self._ended.wait(0.2 if remaining is None else min(0.2, remaining))
            else:
                self.step()
                if not self.done:
                    pause = poll_delay(self.elapsed, self.schedule)
                    self._ended.wait(pause if remaining is None else min(pause, remaining))
        if self.exception is not None:
            raise self.exception
        return self

    def preview(self, max_px: int = 1024, fmt: str = "jpeg", quality: int = 85) -> bytes | None:
        """A copy at most `max_px` on its longest side (JPEG or PNG bytes), or None without an image.

        Made once per saved file and kept beside it, so showing a result again costs no decoding.
        """
        from ..core.images import cached_preview, preview_bytes

        if self.status != "succeeded":
            return None
        if self.path is not None and Path(self.path).is_file():
            return cached_preview(self.path, max_px, fmt, quality)
        return preview_bytes(self._bytes, max_px, fmt, quality) if self._bytes else None

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` seconds without raising; True once the task has ended."""
        return self._ended.wait(timeout)

    def save(self, path: "str | Path") -> Path:
        """Write the image file (bytes as downloaded) to `path`; returns the path."""
        data = self.data
        if data is None:
            raise NanoBananaError(f"task {self.task_id} has no image ({self.status})")
        path = Path(path).expanduser()
        if path.is_dir():
            # The task id and paramJson come from the server: neither may steer the name out of `path`.
            from ..core.images import image_format

            stem = re.sub(r"[^A-Za-z0-9_-]", "", self.task_id)[:64] or "image"
            path = path / f"{stem}.{image_format(data)}"
        path.write_bytes(data)
        return path

    def cancel(self) -> None:
        """Stop waiting for this task locally. The API has no cancel: the task may still finish."""
        if self.done:
            return
        self._end("cancelled", None)

    def add_listener(self, listener: Callable[["Generation"], None]) -> None:
        """Call `listener(self)` after every change (progress and the end), from any thread."""
        self._listeners.append(listener)
        if self.done:
            self._notify_one(listener)

    @property
    def prompt(self) -> str:
        return str(self.request.get("prompt", ""))

    def __repr__(self) -> str:
        where = f" {self.path}" if self.path else ""
        why = f" ({self.error})" if self.error else ""
        return f"<Generation {self.task_id} {self.status} {self.elapsed:.1f}s{where}{why}>"

    def _repr_html_(self) -> str:
        from ..core.render import generation_html

        return generation_html(self)

    def _repr_png_(self) -> bytes | None:
        return self.preview(512, "png")

    # -- driving (poller workers or wait()) --------------------------------

    def step(self) -> None:
        """Poll once; when the task succeeded, download and keep the image. One thread at a time."""
        if self.done or self._client is None:
            return
        with self._step_lock:
            if self.done:
                return
            if self.timeout is not None and self.elapsed > self.timeout:
                self._end("failed", TaskTimeoutError(
                    f"task {self.task_id} did not finish within {self.timeout:g} s; it may still finish: "
                    f"%nanobanana fetch {self.task_id}"))
                return
            self.polls += 1
            try:
                status = self._client.record_info(self.task_id)
            except NanoBananaError as exc:
                self._poll_failed(exc)
                return
            self._transient_failures = 0
            if not self.request:  # a task recovered by id: the API still knows what was asked
                self.request = _request_from(status.raw)
            if status.state == "pending":
                self._notify()
            elif status.state == "failed":
                reason = status.error_message or "no reason given"
                code = f", code {status.error_code}" if status.error_code else ""
                self._end("failed", TaskFailedError(
                    f"task {self.task_id} failed: {reason} ({status.flag_name}{code})",
                    task_id=self.task_id, code=_maybe_int(status.error_code)), confirmed=True)
            else:
                self.complete(status.result_url)

    def complete(self, url: str | None, data: bytes | None = None) -> None:
        """The task succeeded at `url`: download (unless `data` is given), save, end."""
        self.url = url
        try:
            if data is None:
                data = self._client.download(url)  # type: ignore[union-attr]
            if self._sink is not None:
                self.path = self._sink.save_image(self, data)
            else:
                self._bytes = data
        except NanoBananaError as exc:
            if "TASK_ID" in exc.message:  # the client does not know which task a URL belongs to
                exc = type(exc)(exc.message.replace("TASK_ID", self.task_id), code=exc.code)
            self._end("failed", exc, confirmed=True)
            return
        except OSError as exc:  # disk full, permissions: the image stays at the URL
            where = f" to {exc.filename}" if exc.filename else ""
            self._end("failed", NanoBananaError(
                f"could not save the image{where}: {exc.strerror or exc}; fix output_dir, then "
                f"%nanobanana fetch {self.task_id}"), confirmed=True)
            return
        self._end("succeeded", None, confirmed=True)

    def _poll_failed(self, exc: NanoBananaError) -> None:
        self._transient_failures += 1
        if is_transient(exc) and self._transient_failures < MAX_TRANSIENT_POLL_FAILURES:
            log.debug("poll of %s failed (%s); will poll again", self.task_id, exc)
            self._notify()
            return
        message = f"lost contact with task {self.task_id}: {exc}; it may still finish: %nanobanana fetch {self.task_id}"
        self._end("failed", type(exc)(message, code=exc.code) if type(exc) is not TaskFailedError else exc)

    def _end(self, status: str, error: NanoBananaError | None, *, confirmed: bool = False) -> None:
        """Final state. `confirmed`: the API told us the outcome, so it goes into the run log."""
        self.status = status
        self.exception = error
        self.error = str(error) if error is not None else None
        self.finished_at = self.finished_at or time.time()
        if confirmed and self._sink is not None:
            try:
                self._sink.record_outcome(self)
            except OSError as exc:
                log.warning("could not write the run log: %s", exc)
        self._ended.set()
        self._notify()

    def _notify(self) -> None:
        for listener in list(self._listeners):
            self._notify_one(listener)

    def _notify_one(self, listener: Callable[["Generation"], None]) -> None:
        try:
            listener(self)
        except Exception:  # a broken display must not stop the task
            log.exception("listener of task %s failed", self.task_id)


def _maybe_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _request_from(raw: dict) -> dict:
    import json

    try:
        body = json.loads(raw.get("paramJson") or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}
