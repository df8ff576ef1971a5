"""NanoBananaClient against the live emulator: happy path, errors, retries, no double billing."""

from __future__ import annotations

import socket

import pytest
import requests
from conftest import API_KEY

from nanobanana_magic import (
    AuthenticationError,
    GenerationRequest,
    InsufficientCreditsError,
    InvalidRequestError,
    NanoBananaClient,
    NanoBananaError,
    NetworkError,
    RateLimitError,
    ServiceUnavailableError,
    TaskFailedError,
)
from nanobanana_magic.core.errors import DownloadError
from nanobanana_magic.core.status import TaskStatus

FAST = [[1e9, 0.02]]


def request(prompt: str = "a red apple", **params) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, **params)


def test_generate_waits_for_the_image_at_the_requested_ratio(client, emulator):
    generation = client.generate(request(aspect_ratio="16:9", output_format="jpg"))
    generation.schedule = FAST
    generation.wait(timeout=10)
    assert generation.status == "succeeded" and generation.done
    width, height = generation.image.size
    assert abs(width / height - 16 / 9) < 0.02
    assert generation.image.format == "JPEG"
    assert generation.url.endswith(".jpg")
    assert emulator.submit_count == 1


def test_submit_returns_the_task_id_and_sends_the_exact_body(client, emulator):
    task_id = client.submit(request(resolution="2k"))
    assert task_id in emulator.tasks
    assert emulator.tasks[task_id].body == request(resolution="2K").to_body()


def test_record_info_goes_from_pending_to_succeeded(emulator, client):
    emulator.latency = None
    task_id = client.submit(request())
    assert client.record_info(task_id).state == "pending"
    emulator.finish(task_id)
    status = client.record_info(task_id)
    assert status.state == "succeeded" and status.flag == 1 and status.result_url


def test_credits_go_down_by_resolution(client, emulator):
    from nanobanana_magic.emulator import COSTS

    before = client.credits()
    client.submit(request(resolution="4K"))
    assert client.credits() == before - COSTS["4K"]


@pytest.mark.parametrize("style", ["http", "json"])
@pytest.mark.parametrize(
    "code, error_class",
    [
        (400, InvalidRequestError),
        (401, AuthenticationError),
        (402, InsufficientCreditsError),
        (403, NanoBananaError),
        (404, NanoBananaError),
        (422, InvalidRequestError),
        (505, NanoBananaError),
    ],
)
def test_error_codes_map_to_classes_whether_http_status_or_json_code(client, emulator, style, code, error_class):
    emulator.inject("submit", "status", status=code, style=style)
    with pytest.raises(error_class) as info:
        client.submit(request())
    assert info.value.code == code
    assert "\n" not in str(info.value) and API_KEY not in str(info.value)
    assert emulator.submit_count == 0


@pytest.mark.parametrize("style", ["http", "json"])
@pytest.mark.parametrize("code", [429, 455, 500, 502, 503])
def test_retryable_codes_are_retried_then_succeed(client, emulator, style, code):
    emulator.inject("submit", "status", count=2, status=code, style=style)
    assert client.submit(request())
    assert emulator.submit_count == 1


@pytest.mark.parametrize("style", ["http", "json"])
def test_persistent_rate_limit_becomes_rate_limit_error(client, emulator, style):
    emulator.inject("poll", "status", count=50, status=429, style=style)
    task_id = client.submit(request())
    with pytest.raises(RateLimitError, match="429"):
        client.record_info(task_id)


def test_retry_after_is_honoured(client, emulator):
    emulator.inject("credits", "status", status=429, style="http", retry_after=0)
    assert client.credits() > 0


@pytest.mark.parametrize("code", [500, 503])
def test_server_errors_after_retries_are_service_unavailable(client, emulator, code):
    emulator.inject("credits", "status", count=50, status=code, style="http")
    with pytest.raises(ServiceUnavailableError):
        client.credits()


def test_wrong_key_is_authentication_error_that_never_echoes_the_key(emulator):
    wrong = "sk-wrong-" + "z" * 24
    client = NanoBananaClient(api_key=wrong, base_url=emulator.base_url)
    with pytest.raises(AuthenticationError) as info:
        client.credits()
    assert wrong not in str(info.value) and wrong not in repr(info.value) and wrong not in repr(client)
    assert "NANOBANANA_API_KEY" in str(info.value)


def test_missing_key_fails_before_sending(emulator, monkeypatch):
    monkeypatch.delenv("NANOBANANA_API_KEY", raising=False)
    client = NanoBananaClient(api_key=None, base_url=emulator.base_url)
    with pytest.raises(AuthenticationError, match="no API key"):
        client.submit(request())
    assert emulator.requests == []


def test_no_credits_is_insufficient_credits(client, emulator):
    emulator.credits = 0
    with pytest.raises(InsufficientCreditsError, match="402"):
        client.submit(request())


def test_submit_is_not_retried_after_read_timeout(emulator):
    client = NanoBananaClient(api_key=API_KEY, base_url=emulator.base_url, read_timeout=0.3, backoff=0.01)
    emulator.inject("submit", "delay", seconds=1.0)
    with pytest.raises(NetworkError, match="the task may exist"):
        client.submit(request())
    assert emulator.submit_count == 1


def test_submit_is_not_retried_after_connection_reset(client, emulator):
    emulator.inject("submit", "reset")
    with pytest.raises(NetworkError, match="the task may exist"):
        client.submit(request())
    assert emulator.submit_count == 1


def test_submit_with_unreadable_answer_is_not_retried(client, emulator):
    emulator.inject("submit", "malformed")
    with pytest.raises(ServiceUnavailableError, match="may exist"):
        client.submit(request())
    assert len([r for r in emulator.requests if r.phase == "submit"]) == 1


def test_polls_are_retried_after_reset_and_timeouts(emulator):
    client = NanoBananaClient(api_key=API_KEY, base_url=emulator.base_url, read_timeout=0.3, backoff=0.01)
    task_id = client.submit(request())
    emulator.inject("poll", "reset")
    emulator.inject("poll", "delay", seconds=1.0)
    assert client.record_info(task_id).task_id == task_id


def test_connection_refused_is_network_error(emulator):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = NanoBananaClient(api_key=API_KEY, base_url=f"http://127.0.0.1:{port}", retries=1, backoff=0.01)
    with pytest.raises(NetworkError, match="could not connect"):
        client.submit(request())


@pytest.mark.parametrize("kind", ["malformed", "html"])
def test_non_json_answer_to_a_poll_is_a_one_line_error(client, emulator, kind):
    task_id = client.submit(request())
    emulator.inject("poll", kind, count=50)
    with pytest.raises(ServiceUnavailableError) as info:
        client.record_info(task_id)
    assert "not JSON" in str(info.value) and "\n" not in str(info.value)


def test_failed_task_raises_task_failed_error_with_the_api_message(client, emulator):
    generation = client.generate(request("a forbidden subject"))
    generation.schedule = FAST
    with pytest.raises(TaskFailedError, match="flagged by content policy.*GENERATE_FAILED"):
        generation.wait(timeout=10)
    assert generation.status == "failed"


def test_downloads_carry_no_authorization_header(client, emulator):
    generation = client.generate(request())
    generation.schedule = FAST
    generation.wait(timeout=10)
    downloads = [r for r in emulator.requests if r.path.startswith("/files/")]
    assert downloads and all("Authorization" not in r.headers for r in downloads)
    api_calls = [r for r in emulator.requests if r.path.startswith("/api/")]
    assert all(r.headers.get("Authorization") == f"Bearer {API_KEY}" for r in api_calls)


@pytest.mark.parametrize("kind", ["truncate", "corrupt"])
def test_broken_downloads_are_retried(client, emulator, kind):
    emulator.inject("download", kind)
    generation = client.generate(request())
    generation.schedule = FAST
    assert generation.wait(timeout=10).image is not None


@pytest.mark.parametrize(
    "kind, match", [("not_found", "expired"), ("wrong_type", "not an image"), ("bomb", "too many pixels")]
)
def test_unusable_downloads_are_download_errors(client, emulator, kind, match):
    emulator.inject("download", kind, count=10)
    generation = client.generate(request())
    generation.schedule = FAST
    with pytest.raises(DownloadError, match=match):
        generation.wait(timeout=10)


def test_download_size_is_capped(emulator):
    client = NanoBananaClient(api_key=API_KEY, base_url=emulator.base_url, max_download_bytes=1 << 20)
    emulator.inject("download", "endless")
    generation = client.generate(request())
    generation.schedule = FAST
    with pytest.raises(DownloadError, match="too large"):
        generation.wait(timeout=20)


@pytest.mark.parametrize(
    "data, state, url",
    [
        ({"successFlag": "1", "response": {"resultImageUrl": "https://f/x.png"}}, "succeeded", "https://f/x.png"),
        ({"successFlag": 1, "response": None}, "pending", None),
        ({"successFlag": 1, "response": {"resultImageUrl": ""}}, "pending", None),
        ({"successFlag": None, "response": None, "completeTime": ""}, "pending", None),
        ({"successFlag": "", "extra": {"nested": True}}, "pending", None),
        ({"successFlag": "3", "errorMessage": "nope", "errorCode": 400}, "failed", None),
        ({"successFlag": 2, "errorMessage": None, "errorCode": None}, "failed", None),
        (None, "pending", None),
    ],
)
def test_record_info_parsing_tolerates_nulls_strings_and_extras(data, state, url):
    status = TaskStatus.from_data("t1", data)
    assert status.state == state and status.result_url == url and status.task_id == "t1"


def test_key_is_never_in_repr_or_session_headers(client):
    assert API_KEY not in repr(client)
    assert "Authorization" not in client.connection._session.headers


def test_session_pools_connections(client, emulator):
    for _ in range(5):
        client.credits()
    adapter = client.connection._session.get_adapter(emulator.base_url)
    assert isinstance(adapter, requests.adapters.HTTPAdapter) and adapter._pool_maxsize >= 4


def test_an_unreachable_proxy_is_named_in_one_line_without_its_credentials(monkeypatch):
    from nanobanana_magic.http.connection import Connection
    from nanobanana_magic.http.retry import RetryPolicy

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for name in ("NO_PROXY", "no_proxy", "https_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://user:proxy-secret@127.0.0.1:{port}")
    connection = Connection(api_key=API_KEY, base_url="https://api.nanobanana.invalid", retry=RetryPolicy(retries=0))
    try:
        with pytest.raises(NetworkError, match="proxy for api.nanobanana.invalid") as raised:
            connection.submit(request("through a dead proxy"))
    finally:
        connection.close()
    message = str(raised.value)
    assert "HTTPS_PROXY" in message and "proxy-secret" not in message and "may exist" not in message


def test_a_closed_connection_closes_its_sockets_and_a_later_call_opens_new_ones(emulator):
    from nanobanana_magic.http.connection import Connection

    # The session replaces its connection when the key or base URL changes; tasks still polled
    # on the old one go on.
    connection = Connection(api_key=API_KEY, base_url=emulator.base_url)
    balance = connection.credits()
    pool = connection._session._route(emulator.base_url).pool()
    connection.close()
    assert pool.pool is None  # closed, with its sockets
    assert connection.credits() == balance
    assert connection._session._route(emulator.base_url).pool() is not pool
    connection.close()


def test_api_calls_and_downloads_go_through_the_environments_proxy(emulator, monkeypatch):
    from nanobanana_magic.http.connection import Connection

    # The emulator stands in for the proxy: a request it can answer arrived through it, since
    # the API's own host does not resolve.
    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", emulator.base_url)
    connection = Connection(api_key=API_KEY, base_url="http://api.nanobanana.invalid")
    try:
        task_id = connection.submit(request("through the proxy"))
        assert connection.record_info(task_id).task_id == task_id
    finally:
        connection.close()


def _urllib3_errors() -> list[Exception]:
    from urllib3 import exceptions as e

    pool = None
    reasons = [
        e.NewConnectionError(None, "refused"),
        e.NameResolutionError("api.example", None, socket.gaierror("no such host")),
        e.ConnectTimeoutError("connect timed out"),
        e.ReadTimeoutError(pool, "/", "read timed out"),
        e.ResponseError("too many 500 error responses"),
        e.ProxyError("proxy refused", OSError("refused")),
        e.SSLError("certificate verify failed"),
        e.ProtocolError("reset", ConnectionResetError()),
    ]
    raised = [
        e.ProxyError("proxy refused", OSError("refused")),
        e.SSLError("bad handshake"),
        e.ReadTimeoutError(pool, "/", "read timed out"),
        e.ProtocolError("reset", ConnectionResetError()),
        e.ClosedPoolError(pool, "closed"),
        ConnectionResetError("reset"),
        e.InvalidHeader("bad header"),
        e.LocationValueError("no host"),
        e.DecodeError("bad gzip"),
    ]
    return [e.MaxRetryError(pool, "/", reason) for reason in reasons] + raised


@pytest.mark.parametrize("error", _urllib3_errors(), ids=lambda x: type(x).__name__ + ":" + str(x)[:30])
def test_the_direct_path_raises_what_requests_own_adapter_raises_for_each_urllib3_error(error, monkeypatch, emulator):
    from urllib3.connectionpool import HTTPConnectionPool

    from nanobanana_magic.http.connection import Connection

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(HTTPConnectionPool, "urlopen", fail)
    session = Connection(api_key=API_KEY, base_url=emulator.base_url)._session
    url = emulator.base_url + "/api/v1/common/credit"
    with pytest.raises(Exception) as theirs:
        session.get(url, timeout=(1, 1))
    with pytest.raises(Exception) as ours:
        session.urlopen("GET", url, {}, (1, 1))
    if isinstance(theirs.value, requests.RequestException):
        assert type(ours.value) is type(theirs.value)
    else:  # requests lets it through; here it is still an error `Connection` turns into its own
        assert isinstance(ours.value, requests.RequestException)
    session.close()
