"""`Emulator`: the fake NanoBanana API as a real HTTP server on loopback, plus the knobs
and counters that tests use to steer and observe it."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from .faults import Fault
from .handler import EmulatorHTTPServer
from .options import DEFAULT_REFERENCE_MAX_BYTES, DEFAULT_REFERENCE_TIMEOUT, Options
from .realism import DEFAULT_SIGMA, DURATION_MODES, LognormalDurations
from .records import RequestRecord, Stats, stats_of
from .service import ERROR_STYLES, Service
from .tasks import Failure, Task


class _Option:
    """An Emulator attribute backed by one field of the service's Options (validated on set)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, emulator: Emulator | None, owner: type) -> Any:
        if emulator is None:
            return self
        return getattr(emulator._service.options, self.name)

    def __set__(self, emulator: Emulator, value: Any) -> None:
        service = emulator._service
        service.options = replace(service.options, **{self.name: value})


class Emulator:
    """A faithful fake of the NanoBanana REST API (see API.md), served on ``host:port``.

    ``latency`` is the number of seconds between submit and the end of a task; ``None``
    means manual mode, where tasks end only on :meth:`finish` / :meth:`finish_all`.
    ``api_key`` None accepts any non-empty bearer key. ``files_base_url`` is where result
    URLs point (default: this server); a ``{port}`` in it is replaced by the bound port,
    e.g. ``"http://localhost:{port}"`` for a file host with another host name.

    The keyword-only options switch on behaviour the live service may show but API.md
    does not document (see options.Options; each is also an attribute, restored by
    :meth:`reset`). ``durations="lognormal"`` draws each task's duration from a seeded
    lognormal distribution around ``medians`` (per resolution, default
    realism.DEFAULT_MEDIANS) with ``sigma``, and then ignores ``latency``.
    """

    message_key = _Option()
    unknown_task_id = _Option()
    relative_urls = _Option()
    wrong_extension = _Option()
    file_content_type = _Option()
    trailing_bytes = _Option()
    unregistered_polls = _Option()
    failed_code = _Option()
    rate_limit = _Option()
    max_concurrent = _Option()
    reference_timeout = _Option()
    reference_max_bytes = _Option()

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float | None = 2.0,
        api_key: str | None = None,
        credits: int = 1000,
        error_style: str = "json",
        fail_words: tuple[str, ...] | list[str] = ("forbidden",),
        files_base_url: str | None = None,
        verbose: bool = False,
        *,
        message_key: str = "msg",
        unknown_task_id: str = "not_found",
        relative_urls: bool = False,
        wrong_extension: bool = False,
        file_content_type: str | None = None,
        trailing_bytes: int = 0,
        unregistered_polls: int = 0,
        failed_code: int | None = None,
        rate_limit: int | None = None,
        max_concurrent: int | None = None,
        reference_timeout: float = DEFAULT_REFERENCE_TIMEOUT,
        reference_max_bytes: int = DEFAULT_REFERENCE_MAX_BYTES,
        durations: str = "fixed",
        medians: Mapping[str, float] | None = None,
        sigma: float = DEFAULT_SIGMA,
        duration_seed: int = 1234,
    ) -> None:
        self.host = host
        self._requested_port = port
        options = Options(
            message_key=message_key,
            unknown_task_id=unknown_task_id,
            relative_urls=relative_urls,
            wrong_extension=wrong_extension,
            file_content_type=file_content_type,
            trailing_bytes=trailing_bytes,
            unregistered_polls=unregistered_polls,
            failed_code=failed_code,
            rate_limit=rate_limit,
            max_concurrent=max_concurrent,
            reference_timeout=reference_timeout,
            reference_max_bytes=reference_max_bytes,
        )
        self._initial = {
            "latency": latency,
            "credits": credits,
            "error_style": error_style,
            "files_base_url": files_base_url,
            "options": options,
        }
        self._files_base_url = files_base_url
        self.verbose = verbose
        self._service = Service(
            api_key=api_key,
            latency=latency,
            credits=credits,
            error_style=error_style,
            fail_words=tuple(fail_words),
            files_base_url=lambda: self.files_base_url,
            options=options,
            durations=_durations(durations, medians, sigma, duration_seed),
        )
        self._server: EmulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        where = self.base_url if self._server else "not started"
        return f"<Emulator {where} latency={self.latency!r}>"

    # --- life cycle -----------------------------------------------------------------

    def start(self) -> Emulator:
        """Bind and serve from a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError("emulator already started")
        self._server = EmulatorHTTPServer((self.host, self._requested_port), self._service, self.verbose)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"nanobanana-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections, drop pending callbacks, close the socket."""
        server, self._server = self._server, None
        if server is None:
            return
        server.stopping.set()
        self._service.callbacks.cancel_pending()
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    # --- where ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (only once started)."""
        return self._running().server_address[1]

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` of the API."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def files_base_url(self) -> str:
        """Base of result URLs (``<files_base_url>/files/<taskId>.<ext>``)."""
        if self._files_base_url is None:
            return self.base_url
        return self._files_base_url.replace("{port}", str(self.port)).rstrip("/")

    @files_base_url.setter
    def files_base_url(self, url: str | None) -> None:
        self._files_base_url = url

    @property
    def api_key(self) -> str | None:
        """The required key, or None when any non-empty key is accepted."""
        return self._service.api_key

    def sample_url(self, name: str = "banana") -> str:
        """URL of a built-in sample reference image (banana, cat, landscape)."""
        return f"{self.base_url}/samples/{name}.png"

    def result_url(self, task_id: str) -> str:
        """Where the result of ``task_id`` is (or will be) served, always absolute."""
        return self._service.result_url(self._task(task_id), absolute=True)

    # --- knobs ------------------------------------------------------------------------

    @property
    def latency(self) -> float | None:
        """Seconds from submit to done for tasks submitted from now on; None = manual."""
        return self._service.store.latency

    @latency.setter
    def latency(self, seconds: float | None) -> None:
        if seconds is not None and seconds < 0:
            raise ValueError("latency must be >= 0 seconds or None")
        self._service.store.latency = seconds

    @property
    def durations(self) -> LognormalDurations | None:
        """The duration model when durations="lognormal", else None (``latency`` rules)."""
        return self._service.store.durations

    @property
    def credits(self) -> int:
        """Current credit balance."""
        return self._service.store.credits

    @credits.setter
    def credits(self, balance: int) -> None:
        self._service.store.credits = balance

    @property
    def error_style(self) -> str:
        """ "json" (HTTP 200 + JSON code) or "http" (the code as HTTP status)."""
        return self._service.error_style

    @error_style.setter
    def error_style(self, style: str) -> None:
        if style not in ERROR_STYLES:
            raise ValueError(f"error_style must be one of {', '.join(ERROR_STYLES)}; got {style!r}")
        self._service.error_style = style

    def finish(self, task_id: str) -> bool:
        """End a waiting task now (sending its callback); False if it already ended or never will."""
        ended = self._service.store.finish(task_id)
        self._service.finished([ended] if ended else [])
        return ended is not None

    def finish_all(self) -> int:
        """End every waiting task (not never-finishing ones); returns how many ended."""
        ended = self._service.store.finish_all()
        self._service.finished(ended)
        return len(ended)

    def fail_next(
        self, count: int = 1, flag: int = 3, code: int = 400, message: str = "flagged by content policy"
    ) -> None:
        """Make the next ``count`` created tasks fail with successFlag ``flag`` (2 or 3)."""
        self._service.store.order_failures(count, Failure(flag, code, message))

    def never_finish_next(self, count: int = 1) -> None:
        """Make the next ``count`` created tasks stay at successFlag 0 forever."""
        self._service.store.order_never_finish(count)

    def inject(self, phase: str, kind: str, count: int = 1, **options: Any) -> Fault:
        """Queue a fault for the next ``count`` requests of ``phase`` (see faults.KINDS)."""
        fault = Fault(phase, kind, options)
        if kind == "task_fails":
            Failure(**fault.options)  # refuse a bad order now, not when a request hits it
        self._service.faults.add(fault, count)
        return fault

    def pending_faults(self) -> list[tuple[Fault, int]]:
        """Queued faults with their remaining counts, in the order they will fire."""
        return self._service.faults.pending()

    def random_faults(self, rate: float = 0.1, seed: int = 1234) -> None:
        """Give each later API request a random realistic fault with probability ``rate``."""
        self._service.faults.set_random(rate, seed)

    def reset(self) -> None:
        """Return to the freshly constructed state, keeping only the listening socket.

        Restores the constructor's latency, credits, error style, files base URL and
        options, restarts the duration draws from their seed, and forgets tasks (with their
        rendered images and unsent callbacks), faults (queued and random), fail/never-finish
        orders, recorded requests, callback attempts, the rate limit's window and counts.
        """
        service = self._service
        service.faults.clear()
        service.callbacks.clear()
        service.log.clear()
        service.renders.clear()
        service.reference_reports.clear()
        service.limiter.clear()
        service.options = self._initial["options"]
        service.store.reset(self._initial["credits"], self._initial["latency"])
        service.error_style = self._initial["error_style"]
        self._files_base_url = self._initial["files_base_url"]

    # --- observations -----------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request received since start or the last reset, oldest first."""
        return self._service.log.snapshot()

    @property
    def submit_count(self) -> int:
        """Accepted submits, i.e. tasks created (and charged) since the last reset."""
        return self._service.store.submit_count

    @property
    def tasks(self) -> dict[str, Task]:
        """Tasks created since start or the last reset, by id."""
        return self._service.store.snapshot()

    @property
    def callbacks(self) -> list[dict[str, Any]]:
        """Callback attempts: url, task_id, status (HTTP) or error, payload, time."""
        return self._service.callbacks.attempts

    def poll_count(self, task_id: str | None = None) -> int:
        """record-info requests received, for one task or all."""
        return self._service.log.count(
            lambda r: r.phase == "poll" and (task_id is None or r.query.get("taskId") == task_id)
        )

    def download_count(self, task_id: str | None = None) -> int:
        """/files requests received, for one task or all."""
        return self._service.log.count(
            lambda r: r.phase == "download" and (task_id is None or r.path.startswith(f"/files/{task_id}."))
        )

    @property
    def stats(self) -> Stats:
        """Counters for benchmarks: 429s sent, limit refusals, peak requests per second, ..."""
        service = self._service
        return stats_of(service.log.snapshot(), service.store.peak_generating, service.store.submit_count)

    def reference_report(self, task_id: str) -> list[tuple[str, str]] | None:
        """(url, status) per reference of the task's result as last drawn, None before it was drawn.

        status is "ok", "unreachable", "too large" or "not an image"; the picture says the same.
        """
        self._task(task_id)
        report = self._service.reference_reports.get(task_id)
        return list(report) if report is not None else None

    def done_time(self, task_id: str) -> float | None:
        """Wall-clock time (time.time()) the task ended, or None while it has not."""
        task = self._task(task_id)
        return task.done_at if task.done else None

    def record(self, task_id: str) -> dict[str, Any]:
        """What record-info would answer in ``data`` for this task right now."""
        return self._service.record(self._task(task_id))

    # --- helpers ------------------------------------------------------------------------

    def _running(self) -> EmulatorHTTPServer:
        if self._server is None:
            raise RuntimeError("emulator not started: call start() or use it as a context manager")
        return self._server

    def _task(self, task_id: str) -> Task:
        task = self._service.store.get(task_id)
        if task is None:
            raise KeyError(f"no task {task_id!r}")
        return task


def _durations(mode: str, medians: Mapping[str, float] | None, sigma: float, seed: int) -> LognormalDurations | None:
    if mode not in DURATION_MODES:
        raise ValueError(f"durations must be one of {', '.join(DURATION_MODES)}; got {mode!r}")
    return LognormalDurations(medians, sigma, seed) if mode == "lognormal" else None
