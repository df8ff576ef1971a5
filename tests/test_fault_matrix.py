"""Fault matrix: each phase of a generation (submit, poll, download, save) against each fault.

Every row injects one fault into the emulator (or produces it for real: a closed port, an
unusable output directory), runs a generation through the path a cell uses, and asserts
the documented outcome: retried and succeeded, or a one-line error of the right class.
Every row also checks that the task id is in the run log whenever the client received
one, and that the emulator never created two tasks for one cell.

When every row has passed, the matrix is printed (and written to docs/fault-matrix.md with NANOBANANA_UPDATE_DOCS=1).
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import re
import struct
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from conftest import API_KEY
from PIL import Image
from reliability_helpers import SessionSettings, closed_port_url, run_log_task_ids, task_rules

from nanobanana_magic.core.errors import (
    DownloadError,
    InvalidRequestError,
    NanoBananaError,
    NetworkError,
    RateLimitError,
    ServiceUnavailableError,
    TaskFailedError,
    TaskTimeoutError,
)
from nanobanana_magic.core.params import GenerationRequest
from nanobanana_magic.emulator import Emulator
from nanobanana_magic.runtime.generation import Generation
from nanobanana_magic.runtime.store import Store
from nanobanana_magic.session.session import Session

ROOT = Path(__file__).resolve().parents[1]
EVERY_TIME = 1000  # a fault count no retry loop can exhaust
WAIT_LIMIT = 30.0  # a row that hangs fails here instead of at the global timeout
PROMPT = "a lighthouse at dusk, fault matrix"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _load_doc_script() -> Any:
    spec = importlib.util.spec_from_file_location("fault_matrix_doc", ROOT / "scripts" / "fault_matrix_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


doc = _load_doc_script()


# -- the table ------------------------------------------------------------------------------


@dataclass
class Run:
    """What a row's hooks may touch: the emulator, the settings, the session once built."""

    emu: Emulator
    settings: Any
    output_dir: Path
    session: Session | None = None
    log_dir: Path | None = None  # where the run log is, if a row moves the directory away

    @property
    def client(self) -> Any:
        return self.session.connection if self.session is not None else self.settings.session.connection


@dataclass(frozen=True)
class Case:
    """One row: a fault in a phase and the outcome the documentation promises."""

    phase: str
    fault: str
    expect: str  # the documented outcome, in words
    error: type[NanoBananaError] | None = None  # None: the generation must succeed
    inject: tuple[str, int, dict] | None = None  # (kind, count, options) for emu.inject(phase, ...)
    how: str = ""  # for faults not made by emu.inject
    arrange: Callable[[Run], None] | None = None
    after_submit: Callable[[Run, Generation], None] | None = None
    says: str = ""  # text the error message must contain
    submits: int | None = None  # exact number of POST generate-2 the emulator sees
    tasks: int = 1  # tasks the emulator creates (never more than one)
    accepted: bool = True  # the client received a task id
    client: dict = field(default_factory=dict)  # client option overrides
    timeout: float = 30.0  # the task timeout setting
    retry_after: float | None = None  # a wait the client must honour before retrying
    driven_by: str = "Session"
    inject_phase: str | None = None  # the phase the fault is injected in, when not the row's phase
    request: dict = field(default_factory=dict)  # GenerationRequest fields (output_format="jpg", ...)
    rules: dict = field(default_factory=dict)  # TaskRules overrides (short graces for odd answers)
    within: float | None = None  # seconds from submit to the end that the row may take at most
    check: Callable[[Run, Observed], None] | None = None  # what else the row promises

    @property
    def outcome(self) -> str:
        return "error" if self.error else "succeeded"

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.fault.lower()).strip("-")
        return f"{self.driven_by.lower()}-{self.phase}-{slug}"

    @property
    def how_made(self) -> str:
        if self.inject is None:
            return self.how
        kind, count, options = self.inject
        parts = [repr(self.inject_phase or self.phase), repr(kind)] + ([str(count)] if count != 1 else [])
        parts += [f"{name}={value!r}" for name, value in options.items()]
        text = f"emu.inject({', '.join(parts)})".replace(str(EVERY_TIME), "EVERY_TIME")
        return f"{text}; {self.how}" if self.how else text

    @property
    def cell_flags(self) -> str:
        """The `%%nanobanana` flags for the row's request overrides."""
        return " -f jpg" if self.request.get("output_format") == "jpg" else ""


def _refuse_api(run: Run) -> None:
    run.settings = replace(run.settings, base_url=closed_port_url())


def _refuse_files(run: Run) -> None:
    run.emu.files_base_url = closed_port_url()


def _manual_latency(run: Run) -> None:
    run.emu.latency = None  # tasks end only when the row says so


def _fail_next(flag: int, message: str) -> Callable[[Run], None]:
    return lambda run: run.emu.fail_next(flag=flag, message=message)


def _never_finish(run: Run) -> None:
    run.emu.never_finish_next()


def _file_in_the_way(run: Run) -> None:
    run.output_dir.parent.mkdir(parents=True, exist_ok=True)
    run.output_dir.write_text("a file where the output directory should be\n")


def _unwritable_output_dir(run: Run) -> None:
    # /proc refuses new directories even to root, unlike a chmod-ed directory.
    run.output_dir = Path("/proc/nanobanana-fault-matrix/out")
    run.settings = replace(run.settings, output_dir=str(run.output_dir))


def _refuse_polls(recover_after: int | None) -> Callable[[Run, Generation], None]:
    """Point the client at a closed port after the submit; restore it after N failed polls."""

    def after_submit(run: Run, generation: Generation) -> None:
        client = run.client
        good_url = client.base_url
        client.base_url = closed_port_url()
        if recover_after is None:
            run.emu.finish(generation.task_id)  # finished at the API; the client just cannot ask
            return
        failed_polls = itertools.count(1)

        def listener(g: Generation) -> None:
            if not g.done and next(failed_polls) == recover_after:
                client.base_url = good_url
                run.emu.finish(g.task_id)

        generation.add_listener(listener)

    return after_submit


def _replace_output_dir(run: Run, generation: Generation) -> None:
    """The user moves the output directory away and a file takes its place, mid-task."""
    moved = run.output_dir.with_name(run.output_dir.name + ".moved")
    run.output_dir.rename(moved)
    run.output_dir.write_text("a file where the output directory was\n")
    run.log_dir = moved
    run.emu.finish(generation.task_id)


# -- the live service's quirks (API.md, "What the live service may also do") ---------------

QUICK_GRACES = {"not_found_grace": 1.0, "anomaly_limit": 1.0}  # the real ones are 30 s and 60 s
GRACES_HOW = "not_found_grace and anomaly_limit 1 s"
TRAILER = b"trailing data after the end-of-image marker"  # what the emulator appends


def _emulator_options(**options: Any) -> Callable[[Run], None]:
    """Set emulator options (the `--relative-urls`, `--file-content-type`, ... switches)."""

    def arrange(run: Run) -> None:
        for name, value in options.items():
            setattr(run.emu, name, value)

    return arrange


def _http_errors(**options: Any) -> Callable[[Run], None]:
    """API errors as HTTP statuses (`--error-style http`), plus emulator options."""

    def arrange(run: Run) -> None:
        run.emu.error_style = "http"
        _emulator_options(**options)(run)

    return arrange


def _downloads(run: Run) -> list[Any]:
    return [r for r in run.emu.requests if r.phase == "download"]


def _polls_with_code(run: Run, code: int) -> int:
    return sum(1 for r in run.emu.requests if r.phase == "poll" and r.code == code)


def _saved_as(suffix: str, downloads: int = 1) -> Callable[[Run, Observed], None]:
    """The file is named by its bytes, downloaded `downloads` times (a good answer is not retried)."""

    def check(run: Run, seen: Observed) -> None:
        assert seen.generation is not None and seen.generation.path is not None
        assert seen.generation.path.suffix == suffix, seen.generation.path
        assert len(_downloads(run)) == downloads, f"{len(_downloads(run))} downloads"

    return check


def _wrong_extension_saved_as_png(run: Run, seen: Observed) -> None:
    assert seen.generation is not None and str(seen.generation.url).endswith(".jpeg")
    _saved_as(".png")(run, seen)


def _absolute_url_recorded(run: Run, seen: Observed) -> None:
    """The relative URL was resolved against the API's base URL, and that is what is kept."""
    assert seen.generation is not None
    assert str(seen.generation.url).startswith(run.emu.base_url + "/files/"), seen.generation.url
    _saved_as(".png")(run, seen)


def without_our_metadata(data: bytes) -> bytes:
    """A saved file minus the PNG iTXt chunk or JPEG comment the store splices in."""
    if data.startswith(b"\x89PNG"):
        at = data.find(b"iTXtnanobanana\x00") - 4
        length = struct.unpack(">I", data[at : at + 4])[0]
        return data[:at] + data[at + 12 + length :]
    at = data.find(b"\xff\xfe")
    length = struct.unpack(">H", data[at + 2 : at + 4])[0]
    assert data[at + 4 : at + 15] == b"nanobanana:"
    return data[:at] + data[at + 2 + length :]


def _kept_byte_for_byte(run: Run, seen: Observed) -> None:
    """The file is the served bytes, trailing data included, plus only our metadata."""
    assert seen.generation is not None and seen.generation.path is not None and seen.generation.url
    with urllib.request.urlopen(seen.generation.url, timeout=5) as answer:  # the emulator keeps adding it
        served = answer.read()
    assert TRAILER in served[-4096:]
    saved = seen.generation.path.read_bytes()
    assert without_our_metadata(saved) == served
    assert len(_downloads(run)) == 2  # the client's, and this check's own


def _trailer_kept(run: Run, seen: Observed) -> None:
    assert seen.generation is not None and seen.generation.path is not None
    saved = seen.generation.path.read_bytes()
    assert TRAILER in saved[-4096:]
    assert len(_downloads(run)) == 1


def _fetchable_afterwards(run: Run, seen: Observed) -> None:
    """The file host refused twice (retried once only); later, fetch gets the image, no submit."""
    assert len(_downloads(run)) == 2, f"{len(_downloads(run))} downloads: a 403 is retried once"
    assert seen.generation is not None
    session = run.session if run.session is not None else run.settings.session
    fetched = session.fetch(seen.generation.task_id)
    assert fetched.join(WAIT_LIMIT) and fetched.status == "succeeded", fetched
    assert fetched.path is not None and fetched.path.is_file()
    assert run.emu.submit_count == 1


def _one_poll_failed(code: int) -> Callable[[Run, Observed], None]:
    """Exactly one status request got `code`: it was not retried as a server error."""

    def check(run: Run, seen: Observed) -> None:
        assert _polls_with_code(run, code) == 1, f"{_polls_with_code(run, code)} polls answered {code}"

    return check


def _polled_through(code: int, at_least: int) -> Callable[[Run, Observed], None]:
    def check(run: Run, seen: Observed) -> None:
        assert _polls_with_code(run, code) >= at_least

    return check


def _still_pending(run: Run, seen: Observed) -> None:
    """Not the service's word on the task: it stays pending in the run log (resume and fetch find it)."""
    assert seen.generation is not None
    entry = Store(run.log_dir or run.output_dir).entry(seen.generation.task_id)
    assert entry is not None and entry.pending, entry


def _polls_bounded(limit: int) -> Callable[[Run, Observed], None]:
    def check(run: Run, seen: Observed) -> None:
        assert seen.polls <= limit, f"{seen.polls} status requests"
        _still_pending(run, seen)

    return check


RETRIED = "retried, succeeded"
MAY_EXIST = "not retried (it may have arrived): NetworkError saying the task may exist"
FAST_TIMEOUT = {"read_timeout": 0.5}

CASES: list[Case] = [
    # ---- submit: retry only what certainly did not arrive, or 429/455/5xx answers
    Case(
        "submit",
        "connection refused",
        "retried (nothing arrived), then NetworkError",
        NetworkError,
        how="base_url -> a closed port",
        arrange=_refuse_api,
        says="could not connect",
        submits=0,
        tasks=0,
        accepted=False,
    ),
    Case(
        "submit",
        "read timeout",
        MAY_EXIST,
        NetworkError,
        inject=("delay", 1, {"seconds": 1.5}),
        how="client read_timeout 0.5 s",
        client=FAST_TIMEOUT,
        says="may exist",
        submits=1,
        accepted=False,
    ),
    Case(
        "submit",
        "connection reset mid-body",
        MAY_EXIST,
        NetworkError,
        inject=("reset", 1, {}),
        says="may exist",
        submits=1,
        accepted=False,
    ),
    Case(
        "submit",
        "429 with Retry-After",
        "waits Retry-After, " + RETRIED,
        inject=("status", 1, {"status": 429, "retry_after": 1, "style": "http"}),
        submits=2,
        retry_after=1.0,
    ),
    Case(
        "submit",
        "429 with Retry-After (JSON code, HTTP 200)",
        "waits Retry-After, " + RETRIED,
        inject=("status", 1, {"status": 429, "retry_after": 1, "style": "json"}),
        submits=2,
        retry_after=1.0,
    ),
    Case(
        "submit", "429 without Retry-After", RETRIED, inject=("status", 1, {"status": 429, "style": "http"}), submits=2
    ),
    Case(
        "submit",
        "429 without Retry-After (JSON code)",
        RETRIED,
        inject=("status", 1, {"status": 429, "style": "json"}),
        submits=2,
    ),
    Case(
        "submit",
        "429 every time",
        "retried, then RateLimitError",
        RateLimitError,
        inject=("status", EVERY_TIME, {"status": 429, "style": "http"}),
        says="429",
        submits=3,
        tasks=0,
        accepted=False,
    ),
    Case("submit", "455 maintenance", RETRIED, inject=("status", 1, {"status": 455}), submits=2),
    Case(
        "submit",
        "455 every time",
        "retried, then ServiceUnavailableError",
        ServiceUnavailableError,
        inject=("status", EVERY_TIME, {"status": 455}),
        says="maintenance",
        submits=3,
        tasks=0,
        accepted=False,
    ),
    Case("submit", "500 (JSON code)", RETRIED, inject=("status", 1, {"status": 500}), submits=2),
    Case("submit", "502 (HTTP)", RETRIED, inject=("status", 1, {"status": 502, "style": "http"}), submits=2),
    Case("submit", "503 (HTTP)", RETRIED, inject=("status", 1, {"status": 503, "style": "http"}), submits=2),
    Case(
        "submit",
        "503 every time",
        "retried, then ServiceUnavailableError",
        ServiceUnavailableError,
        inject=("status", EVERY_TIME, {"status": 503, "style": "http"}),
        says="503",
        submits=3,
        tasks=0,
        accepted=False,
    ),
    Case(
        "submit",
        "malformed JSON",
        "not retried: ServiceUnavailableError quoting the body",
        ServiceUnavailableError,
        inject=("malformed", 1, {}),
        says="not JSON",
        submits=1,
        tasks=0,
        accepted=False,
    ),
    Case(
        "submit",
        "HTML page with status 200",
        "not retried: ServiceUnavailableError quoting the page",
        ServiceUnavailableError,
        inject=("html", 1, {"status": 200}),
        says="not JSON",
        submits=1,
        tasks=0,
        accepted=False,
    ),
    Case("submit", "HTML proxy page with status 502", RETRIED, inject=("html", 1, {"status": 502}), submits=2),
    # ---- poll: GETs are safe to retry; a task only fails on the API's word or after 20 failed polls
    Case(
        "poll",
        "connection refused for two polls",
        "polled again, succeeded",
        how="client base_url -> a closed port after the submit, restored after 2 failed polls",
        arrange=_manual_latency,
        after_submit=_refuse_polls(2),
    ),
    Case(
        "poll",
        "connection refused for good",
        "gives up after 20 failed polls: NetworkError (may still finish)",
        NetworkError,
        how="client base_url -> a closed port after the submit",
        arrange=_manual_latency,
        after_submit=_refuse_polls(None),
        says="lost contact",
    ),
    Case(
        "poll",
        "read timeout",
        RETRIED,
        inject=("delay", 1, {"seconds": 1.5}),
        how="client read_timeout 0.5 s",
        client=FAST_TIMEOUT,
    ),
    Case("poll", "connection reset mid-body", RETRIED, inject=("reset", 1, {})),
    Case(
        "poll",
        "429 with Retry-After",
        "waits Retry-After, " + RETRIED,
        inject=("status", 1, {"status": 429, "retry_after": 1, "style": "http"}),
        retry_after=1.0,
    ),
    Case("poll", "429 without Retry-After (JSON code)", RETRIED, inject=("status", 1, {"status": 429})),
    Case("poll", "455 maintenance", RETRIED, inject=("status", 1, {"status": 455})),
    Case("poll", "500 (JSON code)", RETRIED, inject=("status", 1, {"status": 500})),
    Case("poll", "502 (HTTP)", RETRIED, inject=("status", 1, {"status": 502, "style": "http"})),
    Case("poll", "503 (HTTP)", RETRIED, inject=("status", 1, {"status": 503, "style": "http"})),
    Case(
        "poll",
        "503 every time",
        "gives up after 20 failed polls: ServiceUnavailableError",
        ServiceUnavailableError,
        inject=("status", EVERY_TIME, {"status": 503, "style": "http"}),
        says="lost contact",
    ),
    Case("poll", "malformed JSON", RETRIED, inject=("malformed", 1, {})),
    Case("poll", "HTML page with status 200", RETRIED, inject=("html", 1, {"status": 200})),
    Case(
        "poll",
        "64 MB JSON answer",
        "not read (4 MB cap), polled again, succeeded",
        inject=("huge_json", 1, {"megabytes": 64}),
    ),
    Case(
        "poll",
        "successFlag 2 (CREATE_TASK_FAILED)",
        "TaskFailedError naming errorMessage",
        TaskFailedError,
        how="emu.fail_next(flag=2)",
        arrange=_fail_next(2, "could not create the task"),
        says="could not create the task",
    ),
    Case(
        "poll",
        "successFlag 3 (GENERATE_FAILED)",
        "TaskFailedError naming errorMessage",
        TaskFailedError,
        how="emu.fail_next(flag=3)",
        arrange=_fail_next(3, "flagged by content policy"),
        says="flagged by content policy",
    ),
    Case(
        "poll",
        "task never finishes",
        "TaskTimeoutError after the timeout (may still finish)",
        TaskTimeoutError,
        how="emu.never_finish_next(); timeout 0.5 s",
        arrange=_never_finish,
        timeout=0.5,
        says="did not finish",
    ),
    # ---- download: the file host, without the key; broken bytes are retried, gone URLs are not
    Case(
        "download",
        "connection refused",
        "retried, then DownloadError",
        DownloadError,
        how="emu.files_base_url -> a closed port",
        arrange=_refuse_files,
        says="broke off",
    ),
    Case(
        "download",
        "read timeout",
        RETRIED,
        inject=("delay", 1, {"seconds": 1.5}),
        how="client download_timeout 0.5 s",
        client={"download_timeout": 0.5},
    ),
    Case("download", "connection reset mid-body", RETRIED, inject=("reset", 1, {})),
    Case(
        "download",
        "429 with Retry-After",
        "waits Retry-After, " + RETRIED,
        inject=("status", 1, {"status": 429, "retry_after": 1}),
        retry_after=1.0,
    ),
    Case("download", "429 without Retry-After", RETRIED, inject=("status", 1, {"status": 429})),
    Case("download", "500", RETRIED, inject=("status", 1, {"status": 500})),
    Case("download", "502", RETRIED, inject=("status", 1, {"status": 502})),
    Case("download", "503", RETRIED, inject=("status", 1, {"status": 503})),
    Case(
        "download",
        "503 every time",
        "retried, then DownloadError",
        DownloadError,
        inject=("status", EVERY_TIME, {"status": 503}),
        says="503",
    ),
    Case(
        "download",
        "result URL 404 (expired)",
        "not retried: DownloadError saying it expired",
        DownloadError,
        inject=("not_found", 1, {}),
        says="expired",
    ),
    Case(
        "download",
        "result URL 410 Gone",
        "not retried: DownloadError saying it expired",
        DownloadError,
        inject=("status", 1, {"status": 410}),
        says="expired",
    ),
    Case("download", "truncated image", RETRIED, inject=("truncate", 1, {})),
    Case(
        "download",
        "truncated every time",
        "retried, then DownloadError",
        DownloadError,
        inject=("truncate", EVERY_TIME, {}),
        says="broke off",
    ),
    Case("download", "corrupt image bytes", RETRIED, inject=("corrupt", 1, {})),
    Case(
        "download",
        "corrupt every time",
        "retried, then DownloadError",
        DownloadError,
        inject=("corrupt", EVERY_TIME, {}),
        says="truncated or corrupt",
    ),
    Case(
        "download",
        "HTML page with status 200",
        "not retried: DownloadError (not an image)",
        DownloadError,
        inject=("html", 1, {"status": 200}),
        says="not an image",
    ),
    Case(
        "download",
        "image over the pixel limit",
        "not decoded: DownloadError (too many pixels)",
        DownloadError,
        inject=("bomb", 1, {}),
        says="too many pixels",
    ),
    # ---- save: the disk; refused before paying when possible, else the task stays in the run log
    Case(
        "save",
        "output_dir is a file",
        "nothing submitted: one-line error naming output_dir",
        NanoBananaError,
        how="a file at output_dir",
        arrange=_file_in_the_way,
        says="output_dir",
        submits=0,
        tasks=0,
        accepted=False,
    ),
    Case(
        "save",
        "output_dir cannot be created",
        "nothing submitted: one-line error naming output_dir",
        NanoBananaError,
        how="output_dir under /proc",
        arrange=_unwritable_output_dir,
        says="output_dir",
        submits=0,
        tasks=0,
        accepted=False,
    ),
    Case(
        "save",
        "output_dir replaced by a file mid-task",
        "error naming the problem; task id stays in the run log",
        NanoBananaError,
        how="directory moved away and a file put in its place after the submit",
        arrange=_manual_latency,
        after_submit=_replace_output_dir,
        says="could not save",
    ),
    # ---- the live service's quirks: each ends with the image, or a one-line error with the task fetchable
    Case(
        "download",
        "Content-Type binary/octet-stream",
        "decided by the bytes: saved as .png, not retried",
        inject=("content_type", 1, {"type": "binary/octet-stream"}),
        check=_saved_as(".png"),
    ),
    Case(
        "download",
        "Content-Type application/binary",
        "decided by the bytes: saved as .png, not retried",
        how="emu.file_content_type = 'application/binary' (--file-content-type)",
        arrange=_emulator_options(file_content_type="application/binary"),
        check=_saved_as(".png"),
    ),
    Case(
        "download",
        "Content-Type application/octet-stream (jpg asked)",
        "decided by the bytes: saved as .jpg, not retried",
        inject=("content_type", 1, {"type": "application/octet-stream"}),
        request={"output_format": "jpg"},
        check=_saved_as(".jpg"),
    ),
    Case(
        "download",
        ".jpeg URL for PNG bytes",
        "decided by the bytes: saved as .png",
        how="emu.wrong_extension = True (--wrong-extension)",
        arrange=_emulator_options(wrong_extension=True),
        check=_wrong_extension_saved_as_png,
    ),
    Case(
        "poll",
        "task not found for the first 3 polls (JSON code 404)",
        "polled again within not_found_grace, succeeded",
        inject=("not_registered", 1, {"polls": 3}),
        inject_phase="submit",
        check=_polled_through(404, 3),
        within=5.0,
    ),
    Case(
        "poll",
        "task not found for the first 3 polls (HTTP 404)",
        "polled again within not_found_grace, succeeded",
        how="emu.error_style = 'http'; emu.unregistered_polls = 3 (--unregistered-polls 3)",
        arrange=_http_errors(unregistered_polls=3),
        check=_polled_through(404, 3),
        within=5.0,
    ),
    Case(
        "poll",
        "task never registered (404 every time)",
        "error naming the task after not_found_grace; task stays pending in the run log",
        NanoBananaError,
        inject=("not_registered", 1, {"polls": EVERY_TIME}),
        inject_phase="submit",
        how=GRACES_HOW,
        rules=QUICK_GRACES,
        says="does not know task",
        within=4.0,
        check=_still_pending,
    ),
    Case(
        "download",
        "root-relative result URL (/files/...)",
        "resolved against base_url (absolute URL kept), no Authorization header, succeeded",
        how="emu.relative_urls = True (--relative-urls)",
        arrange=_emulator_options(relative_urls=True),
        check=_absolute_url_recorded,
    ),
    Case(
        "submit",
        "422 with `message` instead of `msg`",
        "not retried: InvalidRequestError quoting the service's text",
        InvalidRequestError,
        inject=("status", 1, {"status": 422}),
        how="emu.message_key = 'message' (--message-key message)",
        arrange=_emulator_options(message_key="message"),
        says="(422): parameter validation failed",
        submits=1,
        tasks=0,
        accepted=False,
    ),
    Case(
        "poll",
        "JSON code 500 'Server exception' every time",
        "polled for not_found_grace, then an error naming the task; task stays pending in the run log",
        ServiceUnavailableError,
        inject=("server_exception", EVERY_TIME, {}),
        how=GRACES_HOW,
        rules=QUICK_GRACES,
        says="could not look up task",
        within=4.0,
        check=_polls_bounded(60),
    ),
    Case(
        "download",
        "403 from the file host once",
        "retried once, succeeded",
        inject=("forbidden", 1, {}),
        check=_saved_as(".png", downloads=2),
    ),
    Case(
        "download",
        "403 from the file host twice",
        "retried once, then DownloadError saying so (not 'expired'); fetch gets the image later",
        DownloadError,
        inject=("forbidden", 2, {}),
        says="refused the download (HTTP 403 AccessDenied), twice",
        check=_fetchable_afterwards,
    ),
    Case(
        "download",
        "JPEG with data after the end-of-image marker",
        "kept byte for byte (plus our metadata), not retried",
        how="emu.trailing_bytes = 4096 (--trailing-bytes 4096)",
        arrange=_emulator_options(trailing_bytes=4096),
        request={"output_format": "jpg"},
        check=_kept_byte_for_byte,
    ),
    Case(
        "download",
        "PNG with data after IEND",
        "kept, not retried",
        inject=("trailing_data", 1, {"bytes": 4096}),
        check=_trailer_kept,
    ),
    Case(
        "poll",
        "unknown successFlag 7",
        "ServiceUnavailableError after anomaly_limit, not the whole timeout",
        ServiceUnavailableError,
        inject=("odd_flag", 1, {"flag": 7}),
        inject_phase="submit",
        how=GRACES_HOW,
        rules=QUICK_GRACES,
        says="reporting an unknown successFlag '7'",
        within=4.0,
        check=_still_pending,
    ),
    *(
        Case(
            "poll",
            f"successFlag 1 without a URL ({shape})",
            "ServiceUnavailableError after anomaly_limit, not the whole timeout",
            ServiceUnavailableError,
            inject=("no_url", 1, {"shape": shape}),
            inject_phase="submit",
            how=GRACES_HOW,
            rules=QUICK_GRACES,
            says="a success without a result URL",
            within=4.0,
            check=_still_pending,
        )
        for shape in ("null", "empty", "missing")
    ),
    Case(
        "poll",
        "code 501 generation failed",
        "TaskFailedError, the 501 not retried",
        TaskFailedError,
        inject=("generation_failed", 1, {}),
        inject_phase="submit",
        says="generation failed (501)",
        check=_one_poll_failed(501),
    ),
    Case(
        "poll",
        "code 501 with `message` instead of `msg`",
        "TaskFailedError quoting the service's text, not retried",
        TaskFailedError,
        inject=("generation_failed", 1, {"message": "the model could not draw this"}),
        inject_phase="submit",
        how="emu.message_key = 'message'",
        arrange=_emulator_options(message_key="message"),
        says="the model could not draw this",
        check=_one_poll_failed(501),
    ),
]

CELL_CASES: list[Case] = [
    Case(
        "submit",
        "429 without Retry-After",
        RETRIED,
        inject=("status", 1, {"status": 429, "style": "http"}),
        submits=2,
        driven_by="cell",
    ),
    Case(
        "submit",
        "connection reset mid-body",
        MAY_EXIST,
        NetworkError,
        inject=("reset", 1, {}),
        says="may exist",
        submits=1,
        accepted=False,
        driven_by="cell",
    ),
    Case("poll", "503 (JSON code)", RETRIED, inject=("status", 1, {"status": 503}), driven_by="cell"),
    Case(
        "poll",
        "successFlag 3 (GENERATE_FAILED)",
        "TaskFailedError naming errorMessage",
        TaskFailedError,
        how="emu.fail_next(flag=3)",
        arrange=_fail_next(3, "flagged by content policy"),
        says="flagged by content policy",
        driven_by="cell",
    ),
    Case(
        "download",
        "result URL 404 (expired)",
        "not retried: DownloadError saying it expired",
        DownloadError,
        inject=("not_found", 1, {}),
        says="expired",
        driven_by="cell",
    ),
    Case(
        "save",
        "output_dir is a file",
        "nothing submitted: one-line error naming output_dir",
        NanoBananaError,
        how="a file at output_dir",
        arrange=_file_in_the_way,
        says="output_dir",
        submits=0,
        tasks=0,
        accepted=False,
        driven_by="cell",
    ),
    Case(
        "download",
        "Content-Type binary/octet-stream",
        "decided by the bytes: saved as .png, not retried",
        inject=("content_type", 1, {"type": "binary/octet-stream"}),
        check=_saved_as(".png"),
        driven_by="cell",
    ),
    Case(
        "download",
        "root-relative result URL (/files/...)",
        "resolved against base_url (absolute URL kept), no Authorization header, succeeded",
        how="emu.relative_urls = True (--relative-urls)",
        arrange=_emulator_options(relative_urls=True),
        check=_absolute_url_recorded,
        driven_by="cell",
    ),
    Case(
        "poll",
        "task not found for the first 3 polls (HTTP 404)",
        "polled again within not_found_grace, succeeded",
        how="emu.error_style = 'http'; emu.unregistered_polls = 3 (--unregistered-polls 3)",
        arrange=_http_errors(unregistered_polls=3),
        check=_polled_through(404, 3),
        within=5.0,
        driven_by="cell",
    ),
    Case(
        "submit",
        "422 with `message` instead of `msg`",
        "not retried: InvalidRequestError quoting the service's text",
        InvalidRequestError,
        inject=("status", 1, {"status": 422}),
        how="emu.message_key = 'message' (--message-key message)",
        arrange=_emulator_options(message_key="message"),
        says="(422): parameter validation failed",
        submits=1,
        tasks=0,
        accepted=False,
        driven_by="cell",
    ),
    Case(
        "download",
        "403 from the file host twice",
        "retried once, then DownloadError saying so (not 'expired'); fetch gets the image later",
        DownloadError,
        inject=("forbidden", 2, {}),
        says="refused the download (HTTP 403 AccessDenied), twice",
        check=_fetchable_afterwards,
        driven_by="cell",
    ),
    Case(
        "download",
        "JPEG with data after the end-of-image marker",
        "kept byte for byte (plus our metadata), not retried",
        how="emu.trailing_bytes = 4096 (--trailing-bytes 4096)",
        arrange=_emulator_options(trailing_bytes=4096),
        request={"output_format": "jpg"},
        check=_kept_byte_for_byte,
        driven_by="cell",
    ),
    Case(
        "poll",
        "unknown successFlag 7",
        "ServiceUnavailableError after anomaly_limit, not the whole timeout",
        ServiceUnavailableError,
        inject=("odd_flag", 1, {"flag": 7}),
        inject_phase="submit",
        how=GRACES_HOW,
        rules=QUICK_GRACES,
        says="reporting an unknown successFlag '7'",
        within=4.0,
        check=_still_pending,
        driven_by="cell",
    ),
    Case(
        "poll",
        "code 501 generation failed",
        "TaskFailedError, the 501 not retried",
        TaskFailedError,
        inject=("generation_failed", 1, {}),
        inject_phase="submit",
        says="generation failed (501)",
        check=_one_poll_failed(501),
        driven_by="cell",
    ),
]

ALL_CASES = CASES + CELL_CASES


# -- running a row ----------------------------------------------------------------------------


@dataclass
class Observed:
    """What one row did."""

    error: BaseException | None
    generation: Generation | None
    submit_requests: int
    tasks: int
    logged_ids: set[str]
    output: str = ""
    seconds: float = 0.0  # from the submit (or the cell's start) to the end
    polls: int = 0  # status requests the emulator received


def _arrange(case: Case, run: Run) -> None:
    if case.inject is not None:
        kind, count, options = case.inject
        run.emu.inject(case.inject_phase or case.phase, kind, count, **options)
    if case.arrange is not None:
        case.arrange(run)


def _observe(
    run: Run, error: BaseException | None, generation: Generation | None, seconds: float, output: str = ""
) -> Observed:
    return Observed(
        error=error,
        generation=generation,
        submit_requests=sum(1 for r in run.emu.requests if r.phase == "submit"),
        tasks=run.emu.submit_count,
        logged_ids=run_log_task_ids(run.log_dir or run.output_dir),
        output=output,
        seconds=seconds,
        polls=sum(1 for r in run.emu.requests if r.phase == "poll"),
    )


def run_in_session(case: Case, emu: Emulator, tmp_path: Path) -> Observed:
    """Submit through `Session` and let its poller drive the task, as a cell does."""
    output_dir = tmp_path / "out"
    settings = SessionSettings.for_emulator(
        emu.base_url, API_KEY, output_dir, timeout=case.timeout, client_options=case.client
    )
    run = Run(emu, settings, output_dir)
    _arrange(case, run)
    run.session = Session(run.settings)
    generation, error = None, None
    started = time.monotonic()
    try:
        with task_rules(**case.rules):
            try:
                generation = run.session.submit(GenerationRequest(prompt=PROMPT, **case.request))
                if case.after_submit is not None:
                    case.after_submit(run, generation)
                assert generation.join(WAIT_LIMIT), f"{case.id}: the generation did not end within {WAIT_LIMIT:g} s"
                error = generation.exception
            except NanoBananaError as exc:
                error = exc
            seen = _observe(run, error, generation, time.monotonic() - started)
            if case.check is not None:
                case.check(run, seen)
    finally:
        run.session.close()
    return seen


def run_in_cell(case: Case, emu: Emulator, shell: Any, capsys: pytest.CaptureFixture) -> Observed:
    """Run a `%%nanobanana` cell in an IPython shell (it blocks in a terminal shell)."""
    magics = shell.magics_manager.registry["NanoBananaMagics"]
    run = Run(emu, magics, Path(magics.output_dir))
    _arrange(case, run)
    capsys.readouterr()
    with task_rules(**case.rules):
        started = time.monotonic()
        result = shell.run_cell(f"%%nanobanana{case.cell_flags}\n{PROMPT}\n")
        seconds = time.monotonic() - started
        captured = capsys.readouterr()
        generation = next(iter(magics.session.generations.values()), None)
        seen = _observe(run, result.error_in_exec, generation, seconds, output=captured.out + captured.err)
        if case.check is not None:
            case.check(run, seen)
    return seen


# -- assertions -------------------------------------------------------------------------------


def assert_row(case: Case, seen: Observed, emu: Emulator) -> None:
    """The documented outcome, and the invariants every row shares."""
    if case.error is None:
        assert seen.error is None, f"expected success, got {type(seen.error).__name__}: {seen.error}"
        assert seen.generation is not None and seen.generation.status == "succeeded"
        assert seen.generation.path is not None and Path(seen.generation.path).is_file()
        with Image.open(seen.generation.path) as image:
            image.load()
    else:
        assert seen.error is not None, "expected an error, the generation succeeded"
        assert type(seen.error) is case.error, f"{type(seen.error).__name__}: {seen.error}"
        message = str(seen.error)
        assert "\n" not in message and "\r" not in message, f"not one line: {message!r}"
        assert case.says in message, f"{case.says!r} not in {message!r}"
        assert API_KEY not in message and API_KEY not in repr(seen.error)
    if seen.generation is not None:
        assert API_KEY not in repr(seen.generation)

    # Never two tasks for one cell; exactly the expected number of submit requests.
    assert seen.tasks == case.tasks <= 1, f"{seen.tasks} tasks created"
    if case.submits is not None:
        assert seen.submit_requests == case.submits
    if case.inject is not None:
        phase = case.inject_phase or case.phase
        assert any(r.fault is not None and r.fault.phase == phase for r in emu.requests), (
            "the injected fault never fired: the row proved nothing"
        )
    # The key goes to the API host only: the emulator's file host refuses requests carrying it.
    assert not any("Authorization" in r.headers for r in emu.requests if r.phase == "download")
    if case.within is not None:
        assert seen.seconds <= case.within, f"ended after {seen.seconds:.1f} s, more than {case.within:g} s"

    # The task id is in the run log iff the client received one.
    if case.accepted:
        assert seen.generation is not None
        assert seen.generation.task_id in seen.logged_ids
        assert seen.generation.task_id in emu.tasks
    else:
        assert seen.generation is None
        assert seen.logged_ids == set()

    if case.retry_after is not None:
        times = [r.time for r in emu.requests if r.phase == case.phase]
        assert len(times) >= 2 and times[1] - times[0] >= case.retry_after * 0.9, (
            f"retried {times[1] - times[0]:.2f} s after a Retry-After of {case.retry_after:g} s"
        )


def _doc_row(case: Case, seen: Observed, tmp_path: Path) -> dict[str, Any]:
    message = str(seen.error).replace(str(tmp_path), "<tmp>") if seen.error else ""
    return {
        "phase": case.phase,
        "fault": case.fault,
        "how the test makes it": case.how_made,
        "documented outcome": case.expect,
        "observed": case.outcome,
        "error class": type(seen.error).__name__ if seen.error else "",
        "one-line message (redacted)": doc.redact(message),
        "submit requests / tasks created": f"{seen.submit_requests} / {seen.tasks}",
        "task id in run log": "yes" if seen.logged_ids else "no",
        "time bound": f"≤ {case.within:g} s" if case.within is not None else "",
        "driven by": "`%%nanobanana` cell" if case.driven_by == "cell" else "Session + poller",
    }


_PASSED: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module", autouse=True)
def matrix_doc(request: pytest.FixtureRequest):
    """Once every row has passed, print the matrix; NANOBANANA_UPDATE_DOCS=1 also writes docs/fault-matrix.md."""
    yield
    if len(_PASSED) != len(ALL_CASES):
        return  # a partial or failing run leaves the doc alone
    rows = [_PASSED[case.id] for case in ALL_CASES]
    if os.environ.get("NANOBANANA_UPDATE_DOCS") == "1":  # a test run must not dirty the work tree
        doc.write_doc(rows)
    plugins = request.config.pluginmanager
    reporter, capture = plugins.getplugin("terminalreporter"), plugins.getplugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # teardown output is captured otherwise
            reporter.write_line("")
            for line in doc.render_text(rows).splitlines():
                reporter.write_line(line)


# -- the tests --------------------------------------------------------------------------------


def test_matrix_rows_are_unique_and_cover_every_phase() -> None:
    """The table itself: one row per (driver, phase, fault); every phase and fault family present."""
    ids = [case.id for case in ALL_CASES]
    assert len(ids) == len(set(ids))
    assert {case.phase for case in CASES} == {"submit", "poll", "download", "save"}
    labels = " ".join(case.fault.lower() for case in CASES)
    for family in (
        "connection refused",
        "read timeout",
        "reset",
        "429 with retry-after",
        "429 without",
        "455",
        "500",
        "502",
        "503",
        "malformed",
        "html page with status 200",
        "successflag 2",
        "successflag 3",
        "never finishes",
        "404",
        "truncated",
        "corrupt",
        "pixel limit",
        # the live service's quirks (API.md)
        "binary/octet-stream",
        "application/binary",
        "application/octet-stream",
        ".jpeg url for png",
        "not found for the first",
        "root-relative",
        "`message` instead of `msg`",
        "server exception",
        "403 from the file host",
        "after the end-of-image marker",
        "unknown successflag",
        "without a url",
        "501",
    ):
        assert family in labels, family


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_fault_in_session_has_documented_outcome(case: Case, emulator: Emulator, tmp_path: Path) -> None:
    """A generation through Session + poller meets each fault with the documented outcome."""
    seen = run_in_session(case, emulator, tmp_path)
    assert_row(case, seen, emulator)
    _PASSED[case.id] = _doc_row(case, seen, tmp_path)


@pytest.mark.parametrize("case", CELL_CASES, ids=[case.id for case in CELL_CASES])
def test_fault_in_cell_has_documented_outcome(
    case: Case, emulator: Emulator, shell: Any, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A `%%nanobanana` cell meets the fault the same way, and shows an error as one line."""
    seen = run_in_cell(case, emulator, shell, capsys)
    assert_row(case, seen, emulator)
    assert API_KEY not in seen.output
    if case.error is not None:
        plain = ANSI.sub("", seen.output)
        shown = [line for line in plain.splitlines() if f"{case.error.__name__}:" in line]
        assert len(shown) == 1, seen.output
        assert "Traceback" not in plain
    _PASSED[case.id] = _doc_row(case, seen, tmp_path)
