"""The live service's quirks (API.md, "What the live service may also do"), one behaviour per test.

The fault matrix (test_fault_matrix.py) runs each quirk once through a Session and a cell; here
are the parts it does not show: the pure checks, the measured bounds (requests and seconds), and
what a person sees in a real Jupyter kernel. Each quirk is an emulator switch, so
`make lab EMULATOR_ARGS="..."` shows it by hand as well.
"""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from conftest import API_KEY
from kernel_helpers import SETUP, LiveKernel, kernel_environment, live_kernel, plain_text, single_error, task_outputs
from PIL import Image
from reliability_helpers import SessionSettings, run_log_records, task_rules

from nanobanana_magic.core.errors import (
    DownloadError,
    NanoBananaError,
    ServiceUnavailableError,
    TaskFailedError,
)
from nanobanana_magic.core.images import CorruptImage, check_image, jpeg_end
from nanobanana_magic.core.params import GenerationRequest
from nanobanana_magic.core.states import TaskState
from nanobanana_magic.core.status import TaskStatus
from nanobanana_magic.emulator import Emulator
from nanobanana_magic.http.connection import Connection
from nanobanana_magic.http.retry import RetryPolicy
from nanobanana_magic.runtime.generation import TaskRules
from nanobanana_magic.runtime.store import Store
from nanobanana_magic.session.session import Session

QUICK = {"not_found_grace": 1.0, "anomaly_limit": 1.0}
TRAILER = b"trailing data after the end-of-image marker"
RAISES = "raises-exception"


def jpeg(size: tuple[int, int] = (64, 48), **save: Any) -> bytes:
    out = BytesIO()
    Image.new("RGB", size, (200, 120, 40)).save(out, "JPEG", **save)
    return out.getvalue()


def png(size: tuple[int, int] = (64, 48)) -> bytes:
    out = BytesIO()
    Image.new("RGB", size, (40, 120, 200)).save(out, "PNG")
    return out.getvalue()


def jpeg_with_thumbnail() -> bytes:
    """A JPEG whose APP1 segment holds a whole thumbnail JPEG (its own scan and end marker)."""
    main = jpeg((320, 240))
    thumb = jpeg((16, 12))
    payload = b"Exif\x00\x00" + thumb
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return main[:2] + app1 + main[2:]


# -- the bytes decide ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "trailer",
    [TRAILER, b"\xff\xd9\xff\xd8 another end marker, and a start one", b"\x00" * 10_000],
    ids=["text", "markers", "zeros"],
)
def test_jpeg_with_bytes_after_its_end_marker_is_whole(trailer: bytes) -> None:
    data = jpeg()
    assert check_image(data + trailer) == "jpg"
    assert jpeg_end(data + trailer) == len(data)


def test_progressive_jpeg_with_restart_markers_is_whole() -> None:
    data = jpeg((200, 150), progressive=True, restart_marker_rows=1)
    assert jpeg_end(data) == len(data)
    assert check_image(data + TRAILER) == "jpg"


def test_jpeg_cut_before_its_end_marker_is_corrupt_even_with_a_thumbnail_inside() -> None:
    """The thumbnail's own end marker is inside a segment: it does not make a cut file whole."""
    whole = jpeg_with_thumbnail()
    assert jpeg_end(whole) == len(whole)
    for cut in (len(whole) - 2, len(whole) // 2, len(whole) - 600):
        with pytest.raises(CorruptImage):
            check_image(whole[:cut])


def test_png_with_bytes_after_iend_is_whole() -> None:
    assert check_image(png() + TRAILER) == "png"


def test_result_url_without_a_scheme_is_on_the_api_host() -> None:
    connection = Connection(api_key="sk-x", base_url="http://127.0.0.1:9/api-root/")
    try:
        assert connection.resolve_url("/files/a.png") == "http://127.0.0.1:9/files/a.png"
        assert connection.resolve_url("files/a.png") == "http://127.0.0.1:9/api-root/files/a.png"
        assert connection.resolve_url("https://cdn.example/a.png") == "https://cdn.example/a.png"
    finally:
        connection.close()


# -- odd statuses are anomalies, not ends -----------------------------------------------------------


@pytest.mark.parametrize("flag", [7, "7", -1, "GENERATING"])
def test_unknown_success_flag_is_an_anomaly_not_an_end(flag: object) -> None:
    status = TaskStatus.from_data("t", {"successFlag": flag, "response": {"resultImageUrl": "https://x/a.png"}})
    assert status.state is TaskState.PENDING and not status.done
    assert status.anomaly == f"an unknown successFlag {str(flag)!r}"


@pytest.mark.parametrize(
    "response", [{"resultImageUrl": None}, {"resultImageUrl": ""}, None, "n/a"], ids=["null", "empty", "none", "text"]
)
def test_success_without_a_url_is_an_anomaly_not_an_end(response: object) -> None:
    status = TaskStatus.from_data("t", {"successFlag": 1, "response": response})
    assert status.state is TaskState.PENDING
    assert status.anomaly == "a success without a result URL"


def test_documented_flags_as_strings_are_not_anomalies() -> None:
    status = TaskStatus.from_data("t", {"successFlag": "1", "response": {"resultImageUrl": "https://x/a.png"}})
    assert status.state is TaskState.SUCCEEDED and status.anomaly is None
    assert TaskStatus.from_data("t", {"successFlag": None}).anomaly is None  # still generating


def test_the_graces_for_odd_answers_are_far_below_the_task_timeout() -> None:
    rules = TaskRules()
    assert rules.timeout is not None
    assert rules.not_found_grace <= rules.timeout / 10
    assert rules.anomaly_limit <= rules.timeout / 10


# -- measured bounds through a Session -----------------------------------------------------------


def _session(emulator: Emulator, tmp_path: Path, **overrides: Any) -> Session:
    return Session(SessionSettings.for_emulator(emulator.base_url, API_KEY, tmp_path / "out", **overrides))


def pending_in_run_log(output_dir: Path, task_id: str) -> bool:
    entry = Store(output_dir).entry(task_id)
    return entry is not None and entry.pending


def _status_requests(emulator: Emulator) -> int:
    return sum(1 for r in emulator.requests if r.phase == "poll")


@pytest.fixture
def measured(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A dict a test fills with what it measured; printed with the test's name (pytest -s shows it)."""
    figures: dict[str, Any] = {}
    yield figures
    if figures:
        shown = ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
        print(f"\n[measured] {request.node.name}: {shown}")


def test_fetch_of_an_id_the_service_cannot_parse_ends_in_a_few_requests(
    emulator: Emulator, tmp_path: Path, measured: dict[str, Any]
) -> None:
    """JSON code 500 "Server exception" for a hand-typed id: the connection's retries, then one clear error."""
    emulator.unknown_task_id = "server_exception"
    defaults = RetryPolicy()  # the real retry settings (4 retries, backoff 0.5 s), not the fast ones of tests
    session = _session(emulator, tmp_path, retries=defaults.retries, retry_backoff=defaults.backoff)
    try:
        started = time.monotonic()
        generation = session.fetch("../../etc/passwd")
        seconds = time.monotonic() - started
    finally:
        session.close()
    error = generation.exception
    assert type(error) is ServiceUnavailableError, error
    message = str(error)
    assert "../../etc/passwd" in message and "Server exception" in message and "\n" not in message
    requests = _status_requests(emulator)
    measured.update(requests=requests, seconds=seconds)
    assert requests == defaults.retries + 1
    assert seconds < 10
    assert emulator.submit_count == 0
    assert run_log_records(tmp_path / "out") == []  # an id the API does not know is not logged as a task


@pytest.mark.parametrize("style", ["json", "http"])
def test_task_unknown_for_its_first_polls_is_polled_until_it_is_known(
    emulator: Emulator, tmp_path: Path, style: str, measured: dict[str, Any]
) -> None:
    emulator.error_style, emulator.unregistered_polls = style, 4
    session = _session(emulator, tmp_path)
    try:
        generation = session.submit(GenerationRequest(prompt="a lighthouse, registered late"))
        assert generation.join(10)
        assert generation.status == "succeeded", generation.error
    finally:
        session.close()
    not_found = [r for r in emulator.requests if r.phase == "poll" and (r.code == 404 or r.status == 404)]
    measured.update(not_found_answers=len(not_found), polls=_status_requests(emulator))
    assert len(not_found) == 4
    assert emulator.submit_count == 1


def test_task_never_known_ends_after_the_grace_naming_it_and_stays_pending_in_the_run_log(
    emulator: Emulator, tmp_path: Path, measured: dict[str, Any]
) -> None:
    emulator.inject("submit", "not_registered", polls=10**6)
    session = _session(emulator, tmp_path)
    try:
        with task_rules(**QUICK):
            started = time.monotonic()
            generation = session.submit(GenerationRequest(prompt="a lighthouse that never registers"))
            assert generation.join(10)
            seconds = time.monotonic() - started
    finally:
        session.close()
    assert isinstance(generation.exception, NanoBananaError) and generation.exception.code == 404
    assert f"does not know task {generation.task_id}" in generation.error
    measured.update(seconds=seconds, polls=_status_requests(emulator))
    assert QUICK["not_found_grace"] <= seconds < QUICK["not_found_grace"] + 2
    assert pending_in_run_log(tmp_path / "out", generation.task_id)  # resume or fetch can still find it
    assert emulator.submit_count == 1


@pytest.mark.parametrize(
    "kind, options, says",
    [
        ("odd_flag", {"flag": 7}, "an unknown successFlag '7'"),
        ("no_url", {"shape": "null"}, "a success without a result URL"),
        ("no_url", {"shape": "missing"}, "a success without a result URL"),
    ],
    ids=["flag-7", "url-null", "response-missing"],
)
def test_odd_answer_ends_after_the_anomaly_limit_not_the_timeout(
    emulator: Emulator, tmp_path: Path, kind: str, options: dict, says: str, measured: dict[str, Any]
) -> None:
    emulator.inject("submit", kind, **options)
    session = _session(emulator, tmp_path, timeout=600.0)
    try:
        with task_rules(**QUICK):
            started = time.monotonic()
            generation = session.submit(GenerationRequest(prompt="a lighthouse, oddly"))
            assert generation.join(10)
            seconds = time.monotonic() - started
    finally:
        session.close()
    error = generation.exception
    assert type(error) is ServiceUnavailableError and says in str(error) and generation.task_id in str(error)
    assert error.task_id == generation.task_id and error.hint == "fetch"
    measured.update(seconds=seconds, polls=_status_requests(emulator))
    assert seconds < QUICK["anomaly_limit"] + 2
    assert pending_in_run_log(tmp_path / "out", generation.task_id)
    assert emulator.submit_count == 1


def test_code_501_fails_the_task_at_once_without_retrying(
    emulator: Emulator, tmp_path: Path, measured: dict[str, Any]
) -> None:
    emulator.failed_code = 501
    emulator.fail_next(flag=3, message="not used: the 501 answer says 'generation failed'")
    session = _session(emulator, tmp_path)
    try:
        generation = session.submit(GenerationRequest(prompt="a lighthouse that fails"))
        assert generation.join(10)
    finally:
        session.close()
    assert type(generation.exception) is TaskFailedError
    assert "generation failed (501)" in str(generation.error)
    answered_501 = [r for r in emulator.requests if r.phase == "poll" and r.code == 501]
    measured.update(polls_answered_501=len(answered_501))
    assert len(answered_501) == 1
    entry = Store(tmp_path / "out").entry(generation.task_id)
    assert entry is not None and entry.status == "failed"  # the service's word: recorded


@pytest.mark.parametrize("retries", [0, 1, 4])
def test_forbidden_download_is_retried_exactly_once_whatever_the_retry_setting(
    emulator: Emulator, retries: int
) -> None:
    emulator.inject("download", "forbidden", 10)
    connection = Connection(api_key=API_KEY, base_url=emulator.base_url, retry=RetryPolicy(retries, 0.01))
    try:
        with pytest.raises(DownloadError, match=r"refused the download \(HTTP 403 AccessDenied\), twice") as raised:
            connection.download(f"{emulator.base_url}/files/{'0' * 32}.png", task_id="0" * 32)
    finally:
        connection.close()
    assert "expired" not in str(raised.value)
    assert raised.value.task_id == "0" * 32 and raised.value.hint == "fetch"
    assert emulator.download_count() == 2


def test_everything_odd_at_once_still_saves_the_image(emulator: Emulator, tmp_path: Path) -> None:
    """Relative .jpeg URLs, untyped files with trailing bytes, a late registration: one image, one submit."""
    emulator.relative_urls = emulator.wrong_extension = True
    emulator.file_content_type, emulator.trailing_bytes, emulator.unregistered_polls = "binary/octet-stream", 100, 2
    session = _session(emulator, tmp_path)
    try:
        generation = session.submit(GenerationRequest(prompt="a lighthouse, every quirk"))
        assert generation.join(10) and generation.status == "succeeded", generation.error
    finally:
        session.close()
    assert generation.path is not None and generation.path.suffix == ".png"
    assert TRAILER[:40] in generation.path.read_bytes()[-100:]
    assert str(generation.url).startswith(emulator.base_url + "/files/") and str(generation.url).endswith(".jpeg")
    assert emulator.submit_count == 1 and emulator.download_count() == 1
    assert not any("Authorization" in r.headers for r in emulator.requests if r.phase == "download")


# -- what a person sees in a real kernel ------------------------------------------------------------

# Kernels take about a second to start: one kernel serves this module's notebook tests. The graces
# are shortened inside it the same way `task_rules` does in this process.
QUICK_GRACES_CELL = (
    "import functools, nanobanana_magic.session.session as _session_module\n"
    f"_session_module.TaskRules = functools.partial(_session_module.TaskRules, **{QUICK!r})"
)


@pytest.fixture(scope="module")
def kernel(emulator_server: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveKernel]:
    cwd = tmp_path_factory.mktemp("quirks")
    env = kernel_environment(emulator_server.base_url, cwd / "out", API_KEY)
    with live_kernel(cwd, env, timeout=60) as live:
        live.run(SETUP)
        live.run(QUICK_GRACES_CELL)
        live.output_dir = cwd / "out"  # type: ignore[attr-defined]
        yield live


def timed(kernel: LiveKernel, source: str, *tags: str) -> tuple[Any, float]:
    started = time.monotonic()
    cell = kernel.run(source, *tags)
    return cell, time.monotonic() - started


def shown_task(cell: Any) -> dict:
    """The one generation output of the cell, finished with an embedded preview; its task metadata."""
    shown = task_outputs(cell)
    assert len(shown) == 1, cell.outputs
    task = shown[0].metadata["application/vnd.nanobanana.task+json"]
    assert task["status"] == "succeeded", plain_text(cell)
    assert re.search(r"data:image/(?:jpeg|png);base64,", shown[0].data["text/html"])
    return task


def one_line_error(cell: Any, ename: str) -> str:
    error = single_error(cell)
    assert error.ename == ename, error
    assert len(error.traceback) == 1 and "Traceback" not in error.traceback[0], error.traceback
    line = re.sub(r"\x1b\[[0-9;]*m", "", error.traceback[0])
    assert "\n" not in line.strip() and API_KEY not in line
    return line


@pytest.mark.kernel
def test_kernel_shows_the_image_whatever_the_file_host_calls_it(emulator: Emulator, kernel: LiveKernel) -> None:
    emulator.file_content_type, emulator.wrong_extension = "binary/octet-stream", True
    task = shown_task(kernel.run("%%nanobanana\na lighthouse, untyped behind a .jpeg URL"))
    assert Path(task["path"]).suffix == ".png"
    emulator.file_content_type, emulator.wrong_extension = "application/binary", False
    task = shown_task(kernel.run("%%nanobanana -f jpg\na lighthouse, application/binary"))
    assert Path(task["path"]).suffix == ".jpg"
    assert emulator.submit_count == 2 and emulator.download_count() == 2


@pytest.mark.kernel
def test_kernel_waits_out_a_task_that_is_not_known_yet(emulator: Emulator, kernel: LiveKernel) -> None:
    emulator.error_style, emulator.unregistered_polls = "http", 3
    cell, seconds = timed(kernel, "%%nanobanana\na lighthouse, registered late")
    shown_task(cell)
    assert emulator.submit_count == 1 and seconds < 10


@pytest.mark.kernel
def test_kernel_follows_relative_urls_and_keeps_trailing_bytes(emulator: Emulator, kernel: LiveKernel) -> None:
    emulator.relative_urls, emulator.trailing_bytes = True, 4096
    task = shown_task(kernel.run("%%nanobanana -f jpg\na lighthouse, relative and trailing"))
    assert task.get("url", emulator.base_url).startswith(emulator.base_url)
    assert TRAILER in Path(task["path"]).read_bytes()[-4096:]
    assert not any("Authorization" in r.headers for r in emulator.requests if r.phase == "download")


@pytest.mark.kernel
def test_kernel_shows_the_services_text_sent_as_message(emulator: Emulator, kernel: LiveKernel) -> None:
    emulator.message_key = "message"
    emulator.inject("submit", "status", status=422)
    line = one_line_error(kernel.run("%%nanobanana\na lighthouse, refused", RAISES), "InvalidRequestError")
    assert "parameter validation failed" in line and "no message" not in line
    emulator.inject("submit", "generation_failed", message="the model could not draw this")
    line = one_line_error(kernel.run("%%nanobanana\na lighthouse, failed", RAISES), "TaskFailedError")
    assert "the model could not draw this" in line and "501" in line
    assert emulator.submit_count == 1  # the 422 created nothing; the failed task was not submitted again


@pytest.mark.kernel
def test_kernel_fetch_of_an_id_the_service_cannot_parse_is_one_line_in_seconds(
    emulator: Emulator, kernel: LiveKernel, measured: dict[str, Any]
) -> None:
    emulator.unknown_task_id = "server_exception"
    cell, seconds = timed(kernel, "%nanobanana fetch not-a-task-id", RAISES)
    line = one_line_error(cell, "ServiceUnavailableError")
    assert "not-a-task-id" in line and "Server exception" in line
    measured.update(requests=_status_requests(emulator), seconds=seconds)
    assert _status_requests(emulator) <= 5 and seconds < 10  # the kernel's default retries: 4, backoff 0.5 s


@pytest.mark.kernel
def test_kernel_says_the_file_host_refused_and_fetch_gets_the_image_later(
    emulator: Emulator, kernel: LiveKernel
) -> None:
    emulator.inject("download", "forbidden", 2)
    line = one_line_error(kernel.run("%%nanobanana\na lighthouse behind a picky CDN", RAISES), "DownloadError")
    assert "403" in line and "refused" in line and "expired" not in line
    task_id = re.search(r"%nanobanana fetch ([0-9a-f]{32})", line)
    assert task_id, line
    assert emulator.download_count() == 2
    shown_task(kernel.run(f"%nanobanana fetch {task_id.group(1)}"))
    assert emulator.submit_count == 1 and emulator.download_count() == 3


@pytest.mark.kernel
@pytest.mark.parametrize("kind, options", [("odd_flag", {"flag": 9}), ("no_url", {"shape": "empty"})])
def test_kernel_ends_an_odd_answer_with_one_line_in_bounded_time(
    emulator: Emulator, kernel: LiveKernel, kind: str, options: dict, measured: dict[str, Any]
) -> None:
    emulator.inject("submit", kind, **options)
    # A prompt of its own: the other row's task is still pending in the run log, and would be attached to.
    cell, seconds = timed(kernel, f"%%nanobanana\na lighthouse, answered oddly ({kind})", RAISES)
    line = one_line_error(cell, "ServiceUnavailableError")
    assert "%nanobanana fetch" in line
    measured.update(seconds=seconds)
    assert seconds < QUICK["anomaly_limit"] + 4
    task_id = re.search(r"task ([0-9a-f]{32})", line)
    assert task_id and pending_in_run_log(kernel.output_dir, task_id.group(1))  # type: ignore[attr-defined]
    assert emulator.submit_count == 1


# -- showing each quirk to a person -------------------------------------------------------------


def _lab_script() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("lab", Path(__file__).resolve().parents[1] / "scripts" / "lab.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_lab_passes_emulator_switches_and_stops_on_a_typo(capsys: pytest.CaptureFixture) -> None:
    lab = _lab_script()
    switches = lab.emulator_switches("--file-content-type 'binary/octet-stream' --fault download:forbidden:2")
    assert switches == ["--file-content-type", "binary/octet-stream", "--fault", "download:forbidden:2"]
    for typo in ("--relative-links", "--fault download:forbiden", "--port 9"):
        with pytest.raises(SystemExit):
            lab.emulator_switches(typo)
    assert "forbiden" in capsys.readouterr().err


def test_an_emulator_started_with_quirk_switches_shows_them(tmp_path: Path) -> None:
    """What `make lab EMULATOR_ARGS=...` starts: a child emulator whose answers carry the quirks."""
    import urllib.request

    from nanobanana_magic.notebook.emulator_process import EmulatorProcess

    lab = _lab_script()
    emulator = EmulatorProcess.start(
        latency=0.1, extra_args=lab.emulator_switches("--relative-urls --file-content-type application/binary")
    )
    session = Session(SessionSettings.for_emulator(emulator.url, "any-key", tmp_path / "out"))
    try:
        generation = session.submit(GenerationRequest(prompt="a lighthouse in the lab"))
        assert generation.join(10) and generation.status == "succeeded", generation.error
        with urllib.request.urlopen(str(generation.url), timeout=5) as answer:
            assert answer.headers["Content-Type"] == "application/binary"
    finally:
        session.close()
        emulator.stop()
    assert str(generation.url).startswith(emulator.url + "/files/")
