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
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from conftest import API_KEY
from PIL import Image
from reliability_helpers import SessionSettings, closed_port_url, run_log_task_ids

from nanobanana_magic.core.errors import (
    DownloadError,
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
        parts = [repr(self.phase), repr(kind)] + ([str(count)] if count != 1 else [])
        parts += [f"{name}={value!r}" for name, value in options.items()]
        text = f"emu.inject({', '.join(parts)})".replace(str(EVERY_TIME), "EVERY_TIME")
        return f"{text}; {self.how}" if self.how else text


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


def _arrange(case: Case, run: Run) -> None:
    if case.inject is not None:
        kind, count, options = case.inject
        run.emu.inject(case.phase, kind, count, **options)
    if case.arrange is not None:
        case.arrange(run)


def _observe(run: Run, error: BaseException | None, generation: Generation | None, output: str = "") -> Observed:
    return Observed(
        error=error,
        generation=generation,
        submit_requests=sum(1 for r in run.emu.requests if r.phase == "submit"),
        tasks=run.emu.submit_count,
        logged_ids=run_log_task_ids(run.log_dir or run.output_dir),
        output=output,
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
    try:
        generation = run.session.submit(GenerationRequest(prompt=PROMPT))
        if case.after_submit is not None:
            case.after_submit(run, generation)
        assert generation.join(WAIT_LIMIT), f"{case.id}: the generation did not end within {WAIT_LIMIT:g} s"
        error = generation.exception
    except NanoBananaError as exc:
        error = exc
    finally:
        run.session.close()
    return _observe(run, error, generation)


def run_in_cell(case: Case, emu: Emulator, shell: Any, capsys: pytest.CaptureFixture) -> Observed:
    """Run a `%%nanobanana` cell in an IPython shell (it blocks in a terminal shell)."""
    magics = shell.magics_manager.registry["NanoBananaMagics"]
    run = Run(emu, magics, Path(magics.output_dir))
    _arrange(case, run)
    capsys.readouterr()
    result = shell.run_cell(f"%%nanobanana\n{PROMPT}\n")
    captured = capsys.readouterr()
    generation = next(iter(magics.session.generations.values()), None)
    return _observe(run, result.error_in_exec, generation, output=captured.out + captured.err)


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
        assert any(r.fault is not None and r.fault.phase == case.phase for r in emu.requests), (
            "the injected fault never fired: the row proved nothing"
        )

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
