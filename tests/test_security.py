"""Security: the key stays secret, goes only to the API host, files stay in output_dir, and a
hostile server costs bounded memory and time.

The key is `conftest.API_KEY`, a random string unique to the run, so finding it anywhere is a leak.
"""

from __future__ import annotations

import json
import logging
import shutil
import ssl
import struct
import subprocess
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import API_KEY
from IPython.utils.capture import capture_output
from reliability_helpers import SessionSettings, wait_until

from nanobanana_magic import NanoBananaClient
from nanobanana_magic.core.errors import (
    AuthenticationError,
    DownloadError,
    InvalidRequestError,
    NanoBananaError,
    NetworkError,
    ServiceUnavailableError,
)
from nanobanana_magic.core.images import read_metadata
from nanobanana_magic.core.params import GenerationRequest
from nanobanana_magic.emulator import images as emulator_images
from nanobanana_magic.session.session import Session

MB = 1024 * 1024
SUBMIT = "/api/v1/nanobanana/generate-2"
RECORD_INFO = "/api/v1/nanobanana/record-info"
CREDIT = "/api/v1/common/credit"


# -- a scriptable HTTP server for what the emulator does not do ---------------------------------


@dataclass
class Seen:
    """One request a TinyServer received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class TinyServer:
    """A stdlib HTTP server: `routes` maps a path (without query) to a function writing the answer."""

    routes: dict[str, Callable[[BaseHTTPRequestHandler], None]]
    host: str = "127.0.0.1"
    tls: ssl.SSLContext | None = None  # serve HTTPS with this server context
    seen: list[Seen] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> TinyServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_stopping = self.stopping

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                server.seen.append(Seen(self.command, path, {k.lower(): v for k, v in self.headers.items()}, body))
                route = server.routes.get(path)
                try:
                    if route is None:
                        send(self, 404, b'{"code": 404, "msg": "no such path"}')
                    else:
                        route(self)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client hung up on a hostile answer: expected

        self._httpd = ThreadingHTTPServer((self.host, 0), Handler)
        self._httpd.daemon_threads = True
        if self.tls is not None:
            self._httpd.socket = self.tls.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{self.host}:{self._httpd.server_address[1]}"


def send(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def send_json(handler: BaseHTTPRequestHandler, payload: Any) -> None:
    send(handler, 200, json.dumps(payload).encode())


def redirect_to(target: str, status: int = 302, keep_path: bool = True) -> Callable[[BaseHTTPRequestHandler], None]:
    """Answer with a redirect to `target` (plus the request's path and query when `keep_path`)."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        send(handler, status, b"", headers={"Location": target + (handler.path if keep_path else "")})

    return route


def stream_forever(
    content_type: str, block: bytes, pause: float = 0.0, head: bytes = b"", length: int | None = None
) -> Callable[[BaseHTTPRequestHandler], None]:
    """An answer whose body never ends (until the client hangs up or the server stops)."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        if length is not None:
            handler.send_header("Content-Length", str(length))
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True
        handler.wfile.write(head)
        stopping = handler.server_stopping  # type: ignore[attr-defined]
        while not stopping.is_set():
            handler.wfile.write(block)
            if pause:
                stopping.wait(pause)

    return route


def fake_api(
    task_id: str, result_path: str = "/result.png", image: bytes | None = None, param_json: str = ""
) -> dict[str, Callable[[BaseHTTPRequestHandler], None]]:
    """Routes of an API that answers with the given task id and a finished task."""

    def submit(handler: BaseHTTPRequestHandler) -> None:
        send_json(handler, {"code": 200, "msg": "success", "data": {"taskId": task_id}})

    def record_info(handler: BaseHTTPRequestHandler) -> None:
        base = f"http://{handler.headers['Host']}"
        send_json(
            handler,
            {
                "code": 200,
                "msg": "success",
                "data": {
                    "taskId": task_id,
                    "paramJson": param_json,
                    "successFlag": 1,
                    "response": {"resultImageUrl": base + result_path},
                    "errorCode": None,
                    "errorMessage": None,
                },
            },
        )

    routes = {SUBMIT: submit, RECORD_INFO: record_info}
    if image is not None:
        routes[result_path] = lambda handler: send(handler, 200, image, "image/png")
    return routes


@pytest.fixture
def tiny():
    """Start TinyServers for this test; all stop at its end."""
    servers: list[TinyServer] = []

    def start(routes: dict, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> TinyServer:
        server = TinyServer(routes, host, tls).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()


def small_png() -> bytes:
    return emulator_images.sample_png("banana")


def zero_png(width: int, height: int) -> bytes:
    """A grayscale PNG of zeros, compressed to a few hundred KB, that decodes to width*height bytes."""
    deflate = zlib.compressobj(9)
    row = b"\x00" + bytes(width)
    data = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def session_for(base_url: str, output_dir: Path, **client: Any) -> Session:
    return Session(SessionSettings.for_emulator(base_url, API_KEY, output_dir, client_options=client))


# -- measuring cost -------------------------------------------------------------------------------


@dataclass
class Cost:
    seconds: float = 0.0
    python_peak: int = 0  # tracemalloc: Python allocations
    rss_growth: int | None = None  # peak resident set growth (C allocations too: Pillow); None if unknown


def _rss_kb(field_name: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise OSError(field_name)


def _reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # resets VmHWM to the current RSS (Linux)
        return True
    except OSError:
        return False


@contextmanager
def measured() -> Iterator[Cost]:
    """Wall time, Python allocation peak and (on Linux) peak RSS growth of the block."""
    cost = Cost()
    rss_known = _reset_rss_peak()
    rss_before = _rss_kb("VmRSS") if rss_known else 0
    tracemalloc.start()
    started = time.monotonic()
    try:
        yield cost
    finally:
        cost.seconds = time.monotonic() - started
        cost.python_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        if rss_known:
            cost.rss_growth = (_rss_kb("VmHWM") - rss_before) * 1024


# ================================================================================================
# The key never appears anywhere
# ================================================================================================


def _all_text(value: Any) -> str:
    """Every string inside nested outputs (dicts, lists, bytes decoded leniently)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return " ".join(_all_text(k) + " " + _all_text(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return " ".join(_all_text(v) for v in value)
    return str(value)


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every log record at DEBUG, urllib3's and requests' included."""
    caplog.set_level(logging.DEBUG)
    for name in ("urllib3", "requests", "nanobanana_magic"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def _log_text(caplog: pytest.LogCaptureFixture) -> str:
    parts = [caplog.text]
    for record in caplog.records:
        parts += [record.getMessage(), repr(record.args), str(record.exc_text or "")]
    return "\n".join(parts)


def test_key_appears_in_no_output_log_error_file_or_metadata(shell, emulator, tmp_path, debug_logs) -> None:
    """A whole session's worth of commands, successes and failures: the key is nowhere."""
    magics = shell.magics_manager.registry["NanoBananaMagics"]
    out = Path(magics.output_dir)
    emulator.files_base_url = "http://localhost:{port}"  # result files on another host name
    cells = [
        "%%nanobanana -o ok\na red apple on a wooden table",
        "%%nanobanana --dry-run\na pear",
        "%%nanobanana -f jpg -o jpeg_one\na green apple",
        "%nanobanana config",
        "%config NanoBananaMagics",
        "%nanobanana credits",
        "%nanobanana history",
        "%nanobanana history --format json",
        f"%nanobanana export {tmp_path / 'export.json'}",
        "%nanobanana verify",
        "print(repr(ok), ok.request, repr(get_ipython().magics_manager.registry['NanoBananaMagics'].api_key))",
        "ok._repr_html_()",
        "%nanobanana status {ok.task_id}",
        "%nanobanana fetch {ok.task_id} -o again",
        "%%nanobanana\nforbidden fruit",  # the emulator fails prompts with "forbidden"
        "%nanobanana status 0123456789abcdef0123456789abcdef",  # unknown task: 404
    ]
    with capture_output() as captured:
        for cell in cells:
            shell.run_cell(cell)
        emulator.inject("submit", "reset")
        shell.run_cell("%%nanobanana --force\nreset while submitting")
        emulator.inject("submit", "status", status=400)
        shell.run_cell("%%nanobanana --force\nrefused by the API")
        magics.short_errors = False  # full tracebacks, locals included, must not show it either
        shell.run_line_magic("xmode", "Verbose")
        emulator.inject("submit", "reset")
        shell.run_cell("%%nanobanana --force\nreset, verbose traceback")
        emulator.inject("submit", "status", status=422)
        shell.run_cell("%%nanobanana --force\nrefused, verbose traceback")
        shell.run_line_magic("xmode", "Context")
        magics.short_errors = True
        magics.api_key = "sk-wrong-" + API_KEY[::-1]
        shell.run_cell("%%nanobanana --force\nwith a key the API rejects")
    wrong_key = magics.api_key.reveal()
    magics.api_key = API_KEY

    shown = captured.stdout + captured.stderr + _all_text([o.data for o in captured.outputs])
    shown += _all_text([o.metadata for o in captured.outputs])
    assert shell.user_ns["ok"].task_id[:12] in shown  # the capture did capture the cells' output
    for secret in (API_KEY, wrong_key):
        assert secret not in shown
        assert secret not in _log_text(debug_logs)
    # Keys were sent (so the scan above meant something) ...
    assert any(r.headers.get("Authorization") == f"Bearer {API_KEY}" for r in emulator.requests)
    assert all(r.phase in ("submit", "poll", "credits") for r in emulator.requests if _authorized(r.headers))
    # ... files and their embedded metadata hold none.
    files = [p for p in list(out.rglob("*")) + [tmp_path / "export.json"] if p.is_file()]
    assert any(p.suffix in (".png", ".jpg") for p in files)
    for path in files:
        data = path.read_bytes()
        assert API_KEY.encode() not in data and wrong_key.encode() not in data, path
        if path.suffix in (".png", ".jpg"):
            assert API_KEY not in json.dumps(read_metadata(data))
    # ... and no object the user can inspect shows it.
    for name in ("ok", "jpeg_one", "again"):
        generation = shell.user_ns[name]
        assert API_KEY not in repr(generation) + str(generation.request) + generation._repr_html_()
    for thing in (magics, magics.session, magics.session.connection, magics.api_key, magics.session.settings):
        assert API_KEY not in repr(thing) and API_KEY not in str(thing)


@pytest.mark.parametrize(
    "fault",
    [
        ("submit", "status", {"status": 401, "style": "http"}),
        ("submit", "status", {"status": 400}),
        ("submit", "reset", {}),
        ("submit", "malformed", {}),
        ("submit", "html", {"status": 200}),
        ("credits", "status", {"status": 503, "style": "http"}),
    ],
)
def test_errors_never_carry_the_key(client, emulator, debug_logs, fault) -> None:
    """Error text and repr, and every log record of the failing call, are free of the key."""
    phase, kind, options = fault
    emulator.inject(phase, kind, 10, **options)
    with pytest.raises(NanoBananaError) as caught:
        client.credits() if phase == "credits" else client.submit(GenerationRequest(prompt="x"))
    error = caught.value
    assert API_KEY not in str(error) + repr(error) + repr(error.__cause__) + repr(error.__context__)
    assert API_KEY not in _log_text(debug_logs)


def test_key_object_never_reveals_itself_by_accident() -> None:
    """repr, str, f-strings, pickling and the client's repr all mask the key."""
    import pickle

    from nanobanana_magic.core.secret import ApiKey

    key = ApiKey(API_KEY)
    assert API_KEY not in repr(key) + str(key) + f"{key}" + repr([key]) + repr({"k": key})
    with pytest.raises(TypeError):
        pickle.dumps(key)
    client = NanoBananaClient(api_key=API_KEY, base_url="http://127.0.0.1:9")
    assert API_KEY not in repr(client) + str(vars(client).get("_key"))


# ================================================================================================
# The key goes to the API host only
# ================================================================================================


def _authorized(headers: Any) -> bool:
    return "authorization" in {name.lower() for name in headers}


def test_only_api_requests_carry_the_key_downloads_on_any_host_do_not(emulator, tmp_path) -> None:
    """Downloads from the API host or from another host name go without the Authorization header."""
    session = session_for(emulator.base_url, tmp_path / "out")
    try:
        same_host = session.submit(GenerationRequest(prompt="result on the API host"))
        assert same_host.join(10) and same_host.status == "succeeded"
        emulator.files_base_url = "http://localhost:{port}"
        other_host = session.submit(GenerationRequest(prompt="result on another host name"))
        assert other_host.join(10) and other_host.status == "succeeded", other_host.error
    finally:
        session.close()
    downloads = [r for r in emulator.requests if r.phase == "download"]
    assert len(downloads) == 2 and not any(_authorized(r.headers) for r in downloads)
    assert downloads[1].headers.get("Host", "").startswith("localhost:")
    api_calls = [r for r in emulator.requests if r.phase in ("submit", "poll")]
    assert api_calls and all(r.headers.get("Authorization") == f"Bearer {API_KEY}" for r in api_calls)


@pytest.fixture
def self_signed(tmp_path) -> tuple[Path, ssl.SSLContext]:
    """A certificate for 127.0.0.1 signed by nobody (its file, to trust it) and a server context serving it."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return cert, context


def test_api_calls_over_https_trust_only_what_the_environments_ca_bundle_allows(tiny, self_signed, monkeypatch):
    cert, context = self_signed
    api = tiny({CREDIT: lambda h: send_json(h, {"code": 200, "msg": "success", "data": 42})}, tls=context)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    untrusting = NanoBananaClient(api_key=API_KEY, base_url=api.url, retries=0)
    try:
        with pytest.raises(NetworkError, match="certificate") as refused:
            untrusting.credits()
    finally:
        untrusting.close()
    assert "\n" not in str(refused.value) and not api.seen  # the key never left before the handshake failed
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))  # e.g. a company proxy that re-signs traffic
    trusting = NanoBananaClient(api_key=API_KEY, base_url=api.url, retries=0)
    try:
        assert trusting.credits() == 42
    finally:
        trusting.close()
    assert [s.path for s in api.seen] == [CREDIT] and _authorized(api.seen[0].headers)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("target_host", ["localhost", "another port"])
def test_redirect_away_from_the_api_host_drops_the_key(emulator, tiny, status, target_host) -> None:
    """An API answer redirecting to another host (or port) is followed without the Authorization header."""
    target = f"http://localhost:{emulator.port}" if target_host == "localhost" else emulator.base_url
    redirector = tiny({path: redirect_to(target, status) for path in (SUBMIT, RECORD_INFO, CREDIT)})
    client = NanoBananaClient(api_key=API_KEY, base_url=redirector.url, retries=0)
    try:
        with pytest.raises(AuthenticationError):  # the emulator never saw a key, so it refuses
            client.credits()
        with pytest.raises(NanoBananaError):
            client.submit(GenerationRequest(prompt="redirected submit"))
        with pytest.raises(NanoBananaError):
            client.record_info("0123456789abcdef0123456789abcdef")
    finally:
        client.close()
    assert redirector.seen and all(_authorized(s.headers) for s in redirector.seen)  # the API host: fine
    followed = emulator.requests
    assert followed, "the redirect was not followed: the test proved nothing"
    assert not any(_authorized(r.headers) for r in followed)
    assert emulator.submit_count == 0


def test_result_url_redirect_to_another_host_carries_no_key(emulator, tiny, tmp_path) -> None:
    """A result URL that redirects to a third host is downloaded, and nobody gets the key but the API."""
    files = tiny({"/result.png": redirect_to(f"http://localhost:{emulator.port}/samples/banana.png", keep_path=False)})
    api = tiny(fake_api("a" * 32, result_path="/result.png"))
    api.routes[RECORD_INFO] = _record_info_pointing_at(files.url + "/result.png", "a" * 32)
    session = session_for(api.url, tmp_path / "out")
    try:
        generation = session.submit(GenerationRequest(prompt="redirected result"))
        assert generation.join(10), "the download did not end"
    finally:
        session.close()
    assert generation.status == "succeeded", generation.error
    assert files.seen and not any(_authorized(s.headers) for s in files.seen)
    samples = [r for r in emulator.requests if r.path.startswith("/samples/")]
    assert samples and not any(_authorized(r.headers) for r in samples)


def _record_info_pointing_at(url: str, task_id: str) -> Callable[[BaseHTTPRequestHandler], None]:
    def route(handler: BaseHTTPRequestHandler) -> None:
        send_json(
            handler,
            {
                "code": 200,
                "msg": "success",
                "data": {"taskId": task_id, "successFlag": 1, "response": {"resultImageUrl": url}},
            },
        )

    return route


def test_callback_is_posted_without_the_key_and_never_by_the_client(emulator, tiny, tmp_path) -> None:
    """The callback receiver gets the task (from the service), with no Authorization and no key."""
    receiver = tiny({"/hook": lambda handler: send_json(handler, {"ok": True})})
    session = session_for(emulator.base_url, tmp_path / "out")
    try:
        generation = session.submit(GenerationRequest(prompt="with a callback", callback_url=receiver.url + "/hook"))
        assert generation.join(10) and generation.status == "succeeded"
        wait_until(lambda: receiver.seen, timeout=10, what="the callback")
    finally:
        session.close()
    assert len(receiver.seen) == 1, "only the service's callback reaches the callback URL"
    callback = receiver.seen[0]
    assert callback.method == "POST" and not _authorized(callback.headers)
    assert API_KEY not in json.dumps(callback.headers) + callback.body.decode()
    assert json.loads(callback.body)["data"]["taskId"] == generation.task_id


# ================================================================================================
# Saved files stay inside output_dir
# ================================================================================================

HOSTILE_TASK_IDS = [
    "../../../../escape",
    "..\\..\\..\\escape",
    "/etc/passwd",
    "a/b/../../../c",
    "....//....//escape",
    "%2e%2e%2fescape",
    "~/escape",
    ".",
    "..",
    "\u202e../gnp.escape",
    "nul\u0000byte/../escape",
    "x" * 5000,
]


@pytest.mark.parametrize("task_id", HOSTILE_TASK_IDS, ids=range(len(HOSTILE_TASK_IDS)))
def test_hostile_task_id_cannot_place_a_file_outside_output_dir(tiny, tmp_path, task_id) -> None:
    """Whatever task id (and paramJson) the server sends, files land only where they were asked to."""
    hostile_params = json.dumps({"prompt": "../../x", "outputFormat": "../../../../escape"})
    api = tiny(fake_api(task_id, image=small_png(), param_json=hostile_params))
    deep = tmp_path / "a" / "b" / "c" / "d" / "e"  # relative escapes stay inside tmp_path, where we look
    out, recovered_out, exports = deep / "out", deep / "out2", deep / "exports"
    exports.mkdir(parents=True)
    session, fresh = session_for(api.url, out), session_for(api.url, recovered_out)
    try:
        generation = session.submit(GenerationRequest(prompt="../../../../etc/passwd"))
        assert generation.join(10), "the generation did not end"
        assert generation.status == "succeeded", generation.error
        recovered = fresh.fetch(task_id)  # by id, as `%nanobanana fetch` does: the request comes from paramJson
        assert recovered.status == "succeeded", recovered.error
        written = [generation.path, recovered.path, generation.save(exports), recovered.save(exports)]
    finally:
        session.close()
        fresh.close()
    allowed = [d.resolve() for d in (out, recovered_out, exports)]
    for path in written:
        assert Path(path).resolve().parent in allowed, path
    stray = [p for p in tmp_path.rglob("*") if p.is_file() and p.resolve().parent not in allowed]
    assert stray == []
    assert not Path("/etc/passwd.png").exists() and not Path("/escape").exists()
    assert task_id in {json.loads(line)["task_id"] for line in (out / "runs.jsonl").read_text().splitlines()}


@pytest.mark.parametrize("file_field", ["..", ".", "../outside.png", "/etc/hostname", "", "sub/../../outside.png"])
def test_tampered_run_log_cannot_point_the_cache_outside_output_dir(emulator, tmp_path, file_field) -> None:
    """A run-log line naming a file outside output_dir is never served as a cached image."""
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "outside.png").write_bytes(small_png())
    request = GenerationRequest(prompt="tampered cache entry")
    lines = [
        {"event": "submitted", "task_id": "f" * 32, "t": 1.0, "request": request.to_body()},
        {"event": "finished", "task_id": "f" * 32, "status": "succeeded", "t": 2.0, "file": file_field},
    ]
    (out / "runs.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    settings = SessionSettings.for_emulator(emulator.base_url, API_KEY, out, cache=True)
    session = Session(settings)
    try:
        generation = session.submit(request)
        assert not generation.cached
        assert generation.join(10) and generation.status == "succeeded"
    finally:
        session.close()
    assert Path(generation.path).resolve().parent == out.resolve()
    assert emulator.submit_count == 1


# ================================================================================================
# A hostile server costs bounded memory and time
# ================================================================================================


def test_huge_json_answer_is_refused_unread(client, emulator) -> None:
    """64 MB of JSON (declared by Content-Length) is refused before reading it."""
    task_id = client.submit(GenerationRequest(prompt="huge json"))
    emulator.inject("poll", "huge_json", 10, megabytes=64)
    with measured() as cost:
        with pytest.raises(ServiceUnavailableError, match="too large"):
            client.record_info(task_id)
    assert cost.seconds < 5
    assert cost.python_peak < 8 * MB


def credits_refused_as_too_large(base_url: str):
    """Ask a hostile server for credits; the answer must be refused as too large. (cost, JSON cap)."""
    client = NanoBananaClient(api_key=API_KEY, base_url=base_url, retries=0)
    try:
        with measured() as cost:
            with pytest.raises(ServiceUnavailableError, match="too large"):
                client.credits()
    finally:
        client.close()
    return cost, client.connection.max_json_bytes


def test_huge_json_without_length_is_cut_at_the_cap(tiny) -> None:
    """A JSON answer that just keeps coming (no Content-Length) is read up to the 4 MB cap, no further."""
    api = tiny({CREDIT: stream_forever("application/json", b'"' + b"x" * 65535, head=b'{"code":200,"data":')})
    cost, cap = credits_refused_as_too_large(api.url)
    assert cost.seconds < 5
    assert cost.python_peak < cap + 4 * MB


def test_gzip_bomb_in_a_json_answer_is_cut_at_the_cap(tiny) -> None:
    """1 GB of spaces gzipped to about a megabyte: decoded only up to the 4 MB cap."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip container
    member = deflate.compress(b" " * MB) + deflate.flush()
    bomb = member * 1024  # concatenated gzip members are one valid gzip stream
    api = tiny({CREDIT: lambda handler: send(handler, 200, bomb, headers={"Content-Encoding": "gzip"})})
    cost, cap = credits_refused_as_too_large(api.url)
    assert len(bomb) < 2 * MB
    assert cost.seconds < 5
    assert cost.python_peak < cap + 8 * MB


def test_endless_image_body_is_cut_at_the_download_cap(client, emulator) -> None:
    """An image that never ends costs at most the download cap in memory, and a bounded time."""
    emulator.inject("download", "endless", 10)
    with measured() as cost:
        with pytest.raises(DownloadError, match="too large"):
            client.download(f"{emulator.base_url}/files/{'0' * 32}.png")
    assert cost.seconds < 30
    assert cost.python_peak < client.connection.max_download_bytes + 16 * MB


def test_dribbling_body_is_given_up_in_bounded_time(tiny) -> None:
    """A body that trickles forever (each read within the timeout) still ends: in a few timeouts."""
    files = tiny({"/slow.png": stream_forever("image/png", b"\x00" * 512, pause=0.05, head=b"\x89PNG\r\n\x1a\n")})
    api = tiny({RECORD_INFO: stream_forever("application/json", b" " * 64, pause=0.05, head=b'{"code":200,')})
    client = NanoBananaClient(
        api_key=API_KEY, base_url=api.url, retries=1, backoff=0.01, read_timeout=0.5, download_timeout=0.5
    )
    try:
        with measured() as cost:
            with pytest.raises(DownloadError, match="broke off"):
                client.download(files.url + "/slow.png")
        assert cost.seconds < 10
        with measured() as cost:
            with pytest.raises(NetworkError):
                client.record_info("0" * 32)
        assert cost.seconds < 10
    finally:
        client.close()


def test_wrong_content_type_is_refused_without_reading_the_body(tiny) -> None:
    """An HTML page (1 GB declared) instead of the image, or an image instead of JSON: refused cheaply."""
    files = tiny({"/result.png": stream_forever("text/html", b"<p>" * 4096, length=1 << 30)})
    api = tiny({CREDIT: lambda handler: send(handler, 200, small_png(), "image/png")})
    client = NanoBananaClient(api_key=API_KEY, base_url=api.url, retries=0)
    try:
        with measured() as cost:
            with pytest.raises(DownloadError, match="not an image"):
                client.download(files.url + "/result.png")
            with pytest.raises(ServiceUnavailableError, match="not JSON"):
                client.credits()
    finally:
        client.close()
    assert cost.seconds < 5
    assert cost.python_peak < 4 * MB


@pytest.fixture(scope="module")
def big_zero_png() -> bytes:
    """100 million pixels: under Pillow's own bomb limit (only a warning), 100 MB once decoded."""
    return zero_png(10_000, 10_000)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("bomb", ["over Pillow's limit (emulator)", "under Pillow's limit, far over any result"])
def test_decompression_bomb_is_refused_without_decoding(client, emulator, tiny, big_zero_png, bomb) -> None:
    """A tiny file claiming an enormous pixel count is refused before its pixels are allocated."""
    if bomb.startswith("over"):
        emulator_images.bomb_png()  # the emulator builds its bomb once; not the client's memory
        emulator.inject("download", "bomb")
        url = f"{emulator.base_url}/files/{'0' * 32}.png"
    else:
        url = tiny({"/big.png": lambda handler: send(handler, 200, big_zero_png, "image/png")}).url + "/big.png"
    with measured() as cost:
        with pytest.raises(DownloadError, match="too many pixels"):
            client.download(url)
    assert cost.seconds < 5
    assert cost.python_peak < 16 * MB
    if cost.rss_growth is not None:
        assert cost.rss_growth < 64 * MB, f"resident memory grew by {cost.rss_growth / MB:.0f} MB"


# ================================================================================================
# --callback-url must be http(s)
# ================================================================================================


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.org/hook",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "gopher://example.org",
        "http://",
        "//example.org/hook",
        "example.org/hook",
        "data:text/plain,hi",
    ],
)
def test_callback_url_must_be_http_or_https(shell, emulator, capsys, url) -> None:
    """A non-http(s) callback URL is a one-line InvalidRequestError and nothing is sent."""
    result = shell.run_cell(f"%%nanobanana --callback-url {url}\na callback test")
    assert isinstance(result.error_in_exec, InvalidRequestError), result.error_in_exec
    assert "\n" not in str(result.error_in_exec) and "callback" in str(result.error_in_exec).lower()
    assert emulator.requests == []
    with pytest.raises(InvalidRequestError):
        GenerationRequest(prompt="x", callback_url=url)


@pytest.mark.parametrize("url", ["https://example.org/hook", "http://127.0.0.1:8000/cb?x=1"])
def test_http_callback_url_is_sent_as_given(shell, emulator, url) -> None:
    """An http(s) callback URL goes into the body as callBackUrl."""
    result = shell.run_cell(f"%%nanobanana --callback-url {url} --force\na callback test")
    assert result.error_in_exec is None, result.error_in_exec
    submits = [r for r in emulator.requests if r.phase == "submit"]
    assert len(submits) == 1 and submits[0].json()["callBackUrl"] == url
