"""The emulator is the oracle the package is tested against: here it is held to API.md."""

from __future__ import annotations

import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from PIL import Image

from nanobanana_magic.emulator import COSTS, Emulator, Fault, parse_fault
from nanobanana_magic.emulator.__main__ import build_parser, emulator_from_args, main

KEY = "sk-emulator-test-0123456789"
SUBMIT = "/api/v1/nanobanana/generate-2"
RECORD_INFO = "/api/v1/nanobanana/record-info"
CREDIT = "/api/v1/common/credit"
RECORD_KEYS = {
    "taskId",
    "paramJson",
    "completeTime",
    "response",
    "successFlag",
    "errorCode",
    "errorMessage",
    "operationType",
    "createTime",
}
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
REPO_ROOT = Path(__file__).resolve().parents[1]
NEW_OPTIONS = (
    "--file-content-type",
    "--wrong-extension",
    "--unregistered-polls",
    "--relative-urls",
    "--message-key",
    "--unknown-task-id",
    "--trailing-bytes",
    "--failed-code",
    "--reference-timeout",
    "--reference-max-bytes",
    "--durations",
    "--median",
    "--median-1k",
    "--median-2k",
    "--median-4k",
    "--sigma",
    "--rate-limit",
    "--max-concurrent",
)
NEW_FAULT_KINDS = (
    "forbidden",
    "content_type",
    "trailing_data",
    "server_exception",
    "generation_failed",
    "not_registered",
    "odd_flag",
    "no_url",
)


class Api:
    """A bare HTTP client: the emulator must be checked without the package's client."""

    def __init__(self, base_url: str, key: str | None = KEY) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        if key is not None:
            self.session.headers["Authorization"] = f"Bearer {key}"

    def submit(self, timeout: float = 10, **body) -> requests.Response:
        body.setdefault("prompt", "a red apple on a wooden table")
        return self.session.post(self.base_url + SUBMIT, json=body, timeout=timeout)

    def create(self, **body) -> str:
        answer = self.submit(**body).json()
        assert answer["code"] == 200, answer
        return answer["data"]["taskId"]

    def poll(self, task_id: str) -> requests.Response:
        return self.session.get(self.base_url + RECORD_INFO, params={"taskId": task_id}, timeout=10)

    def record(self, task_id: str) -> dict:
        answer = self.poll(task_id).json()
        assert answer["code"] == 200, answer
        return answer["data"]

    def credits(self) -> int:
        return self.session.get(self.base_url + CREDIT, timeout=10).json()["data"]


def wait_until(predicate, timeout: float = 5.0):
    """Re-check ``predicate`` until it is truthy; the deadline keeps a broken test short."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        threading.Event().wait(0.005)
    raise AssertionError("condition not met before the deadline")


def download(url: str, **kwargs) -> requests.Response:
    return requests.get(url, timeout=10, **kwargs)


def finished_url(emu: Emulator, api: Api, **body) -> str:
    task_id = api.create(**body)
    emu.finish(task_id)
    return api.record(task_id)["response"]["resultImageUrl"]


@pytest.fixture(scope="module")
def emu():
    with Emulator(latency=None, api_key=KEY) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def fresh_emulator(emu):
    emu.reset()
    yield


@pytest.fixture
def api(emu):
    return Api(emu.base_url)


@pytest.fixture
def callback_sink():
    """A small HTTP server that records the callbacks POSTed to it."""
    received: list[dict] = []
    arrived = threading.Event()

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"headers": dict(self.headers), "json": json.loads(body), "path": self.path})
            arrived.set()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    server.received, server.arrived = received, arrived
    server.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield server
    server.shutdown()
    server.server_close()


# --- life cycle -------------------------------------------------------------------------


def test_submit_answers_a_32_hex_task_id(api):
    answer = api.submit().json()
    assert answer["code"] == 200 and answer["msg"] == "success"
    assert re.fullmatch(r"[0-9a-f]{32}", answer["data"]["taskId"])


def test_record_info_goes_from_generating_to_success_with_the_documented_shape(emu, api):
    body = {
        "prompt": "a lighthouse",
        "imageUrls": [],
        "aspectRatio": "16:9",
        "resolution": "2K",
        "googleSearch": True,
        "outputFormat": "png",
    }
    task_id = api.create(**body)

    generating = api.poll(task_id)
    assert generating.headers["Content-Type"] == "application/json"
    assert "Content-Length" in generating.headers
    record = generating.json()["data"]
    assert set(record) == RECORD_KEYS
    assert record["successFlag"] == 0 and record["response"] is None and record["completeTime"] == ""
    assert record["errorCode"] is None and record["errorMessage"] is None
    assert TIMESTAMP.match(record["createTime"])
    assert record["operationType"] == "nano-banana-2_2k"
    assert json.loads(record["paramJson"]) == body

    assert emu.finish(task_id) is True
    done = api.record(task_id)
    assert set(done) == RECORD_KEYS
    assert done["successFlag"] == 1
    assert TIMESTAMP.match(done["completeTime"])
    assert done["response"] == {"originImageUrl": None, "resultImageUrl": f"{emu.base_url}/files/{task_id}.png"}
    assert done["errorCode"] is None and done["errorMessage"] is None
    assert emu.done_time(task_id) is not None


def test_task_ends_by_itself_once_latency_has_passed(emu, api):
    emu.latency = 0.05
    task_id = api.create()
    assert emu.done_time(task_id) is None
    wait_until(lambda: api.record(task_id)["successFlag"] == 1)
    task = emu.tasks[task_id]
    assert emu.done_time(task_id) == pytest.approx(task.created + 0.05)
    assert emu.poll_count(task_id) >= 1


def test_manual_mode_tasks_wait_for_finish_all(emu, api):
    first, second = api.create(), api.create()
    assert [api.record(t)["successFlag"] for t in (first, second)] == [0, 0]
    assert emu.finish_all() == 2
    assert [api.record(t)["successFlag"] for t in (first, second)] == [1, 1]
    assert emu.finish(first) is False


def test_unknown_task_is_a_404_code(api):
    answer = api.poll("0" * 32).json()
    assert answer["code"] == 404 and "task not found" in answer["msg"]


def test_omitted_optional_fields_take_the_api_defaults(emu, api):
    task_id = api.create(prompt="only a prompt", someFutureField=42)
    params = emu.tasks[task_id].params
    assert (
        params.image_urls,
        params.aspect_ratio,
        params.resolution,
        params.google_search,
        params.output_format,
        params.callback_url,
    ) == ((), "auto", "1K", False, "jpg", None)
    emu.finish(task_id)
    assert api.record(task_id)["response"]["resultImageUrl"].endswith(f"/files/{task_id}.jpg")


# --- images -----------------------------------------------------------------------------


def expected_size(ratio: str, resolution: str) -> tuple[int, int]:
    w, h = map(int, ratio.split(":"))
    pixels = {"1K": 1024**2, "2K": 2048**2, "4K": 4096**2}[resolution]
    width = math.sqrt(pixels * w / h)
    return round(width / 16) * 16, round(width * h / w / 16) * 16


@pytest.mark.parametrize(
    ("ratio", "resolution", "fmt"),
    [
        ("1:1", "1K", "png"),
        ("16:9", "1K", "jpg"),
        ("9:16", "2K", "png"),
        ("21:9", "1K", "jpg"),
        ("1:8", "1K", "png"),
        ("4:3", "2K", "jpg"),
        ("2:3", "1K", "png"),
    ],
)
def test_result_image_has_the_requested_ratio_resolution_and_format(emu, api, ratio, resolution, fmt):
    url = finished_url(emu, api, aspectRatio=ratio, resolution=resolution, outputFormat=fmt)
    answer = download(url)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == {"png": "image/png", "jpg": "image/jpeg"}[fmt]
    image = Image.open(io.BytesIO(answer.content))
    assert image.format == {"png": "PNG", "jpg": "JPEG"}[fmt]
    assert image.size == expected_size(ratio, resolution)
    assert image.width % 16 == 0 and image.height % 16 == 0
    w, h = map(int, ratio.split(":"))
    assert image.width / image.height == pytest.approx(w / h, rel=0.03)


@pytest.mark.timeout(30)
def test_4k_result_is_16_megapixels_and_renders_quickly(emu, api):
    url = finished_url(emu, api, aspectRatio="1:1", resolution="4K", outputFormat="png")
    started = time.monotonic()
    answer = download(url)
    elapsed = time.monotonic() - started
    assert Image.open(io.BytesIO(answer.content)).size == (4096, 4096)
    assert elapsed < 4.0
    started = time.monotonic()
    assert download(url).content == answer.content  # second download comes from the cache
    assert time.monotonic() - started < elapsed


def test_auto_ratio_follows_the_first_reference_image(emu, api):
    banana = Image.open(io.BytesIO(download(emu.sample_url("banana")).content))
    url = finished_url(emu, api, aspectRatio="auto", imageUrls=[emu.sample_url("banana"), emu.sample_url("cat")])
    image = Image.open(io.BytesIO(download(url).content))
    assert image.width / image.height == pytest.approx(banana.width / banana.height, rel=0.03)
    assert image.width * image.height == pytest.approx(1024**2, rel=0.03)

    plain = finished_url(emu, api, aspectRatio="auto")
    assert Image.open(io.BytesIO(download(plain).content)).size == (1024, 1024)


def test_unreachable_reference_image_draws_a_placeholder_instead_of_failing(emu, api):
    url = finished_url(emu, api, aspectRatio="1:1", imageUrls=["http://127.0.0.1:1/gone.png"])
    assert Image.open(io.BytesIO(download(url).content)).size == (1024, 1024)


def test_samples_are_served_without_a_key(emu):
    for name in ("banana", "cat"):
        answer = download(emu.sample_url(name))
        assert answer.status_code == 200 and answer.headers["Content-Type"] == "image/png"
        assert Image.open(io.BytesIO(answer.content)).format == "PNG"
    assert download(f"{emu.base_url}/samples/nothing.png").status_code == 404


# --- failures ---------------------------------------------------------------------------


def test_prompt_with_a_fail_word_ends_with_successflag_3(emu, api):
    task_id = api.create(prompt="Something FORBIDDEN here")
    assert api.record(task_id)["successFlag"] == 0
    emu.finish(task_id)
    record = api.record(task_id)
    assert record["successFlag"] == 3
    assert (record["errorCode"], record["errorMessage"]) == (400, "flagged by content policy")
    assert record["response"] is None and TIMESTAMP.match(record["completeTime"])
    assert download(f"{emu.base_url}/files/{task_id}.jpg").status_code == 404


def test_fail_next_fails_the_next_tasks_with_the_given_flag(emu, api):
    emu.fail_next(count=2, flag=2, code=500, message="could not create task")
    failed = [api.create(), api.create()]
    healthy = api.create()
    emu.finish_all()
    for task_id in failed:
        record = api.record(task_id)
        assert (record["successFlag"], record["errorCode"], record["errorMessage"]) == (2, 500, "could not create task")
    assert api.record(healthy)["successFlag"] == 1


def test_never_finish_next_keeps_a_task_generating_forever(emu, api):
    emu.never_finish_next()
    stuck, normal = api.create(), api.create()
    assert emu.finish_all() == 1
    assert emu.finish(stuck) is False
    assert api.record(stuck)["successFlag"] == 0 and emu.done_time(stuck) is None
    assert api.record(normal)["successFlag"] == 1


# --- credits and keys -------------------------------------------------------------------


def test_credits_go_down_by_the_cost_table(api):
    balance = api.credits()
    assert balance == 1000
    for resolution, cost in COSTS.items():
        api.create(resolution=resolution)
        assert api.credits() == balance - cost
        balance -= cost


@pytest.mark.parametrize(("style", "http_status"), [("json", 200), ("http", 402)])
def test_submit_without_enough_credits_is_402_and_creates_nothing(emu, api, style, http_status):
    emu.error_style = style
    emu.credits = COSTS["1K"] + 1
    api.create(resolution="1K")
    answer = api.submit(resolution="1K")
    assert answer.status_code == http_status
    assert answer.json()["code"] == 402 and "insufficient credits" in answer.json()["msg"]
    assert emu.submit_count == 1 and emu.credits == 1


@pytest.mark.parametrize(("style", "http_status"), [("json", 200), ("http", 401)])
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-key-987", "Bearer ", f"Basic {KEY}", KEY])
def test_missing_or_wrong_key_is_401_without_echoing_it(emu, style, http_status, authorization):
    emu.error_style = style
    headers = {"Authorization": authorization} if authorization is not None else {}
    for answer in (
        requests.get(emu.base_url + CREDIT, headers=headers, timeout=10),
        requests.post(emu.base_url + SUBMIT, json={"prompt": "x"}, headers=headers, timeout=10),
    ):
        assert answer.status_code == http_status
        assert answer.json()["code"] == 401
        assert "wrong-key" not in answer.text and KEY not in answer.text
    assert emu.submit_count == 0


def test_any_non_empty_key_is_accepted_when_none_is_configured():
    with Emulator(latency=None) as open_emu:
        assert Api(open_emu.base_url, key="whatever").credits() == 1000
        assert Api(open_emu.base_url, key=None).session.get(open_emu.base_url + CREDIT).json()["code"] == 401


# --- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 20_001}, "prompt"),
        ({"prompt": 42}, "prompt"),
        ({"imageUrls": []}, "prompt"),  # prompt missing: Api.submit only fills it when absent
        ({"prompt": "x", "imageUrls": ["http://a.example/x.png"] * 15}, "imageUrls"),
        ({"prompt": "x", "imageUrls": ["ftp://a.example/x.png"]}, "imageUrls"),
        ({"prompt": "x", "imageUrls": "http://a.example/x.png"}, "imageUrls"),
        ({"prompt": "x", "aspectRatio": "7:5"}, "aspectRatio"),
        ({"prompt": "x", "resolution": "1k"}, "resolution"),
        ({"prompt": "x", "resolution": "8K"}, "resolution"),
        ({"prompt": "x", "googleSearch": "yes"}, "googleSearch"),
        ({"prompt": "x", "outputFormat": "jpeg"}, "outputFormat"),
        ({"prompt": "x", "callBackUrl": None}, "callBackUrl"),
        ({"prompt": "x", "callBackUrl": "not a url"}, "callBackUrl"),
    ],
)
def test_invalid_fields_are_refused_with_422_naming_the_field(emu, api, body, field):
    if "prompt" not in body:
        answer = api.session.post(emu.base_url + SUBMIT, json=body, timeout=10).json()
    else:
        answer = api.submit(**body).json()
    assert answer["code"] == 422
    assert field in answer["msg"]
    assert emu.submit_count == 0 and emu.credits == 1000


def test_longest_prompt_and_most_reference_images_are_accepted(emu, api):
    api.create(prompt="y" * 20_000, imageUrls=["https://a.example/x.png"] * 14)
    assert emu.submit_count == 1


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b""])
def test_a_body_that_is_not_a_json_object_is_400(emu, api, raw):
    answer = api.session.post(
        emu.base_url + SUBMIT, data=raw, timeout=10, headers={"Content-Type": "application/json"}
    ).json()
    assert answer["code"] == 400
    assert emu.submit_count == 0


# --- file host --------------------------------------------------------------------------


def test_files_refuse_requests_carrying_authorization(emu, api):
    url = finished_url(emu, api)
    refused = download(url, headers={"Authorization": f"Bearer {KEY}"})
    assert refused.status_code == 403
    assert KEY not in refused.text
    assert download(url, headers={"Authorization": ""}).status_code == 403
    assert download(url).status_code == 200
    task_id = url.rsplit("/", 1)[1].split(".")[0]
    assert emu.download_count(task_id) == 3


def test_result_urls_can_point_at_another_host_name(emu, api):
    emu.files_base_url = "http://localhost:{port}"
    url = finished_url(emu, api)
    assert url.startswith(f"http://localhost:{emu.port}/files/")
    assert download(url).status_code == 200


def test_files_of_unfinished_tasks_are_not_found(emu, api):
    task_id = api.create(outputFormat="png")
    assert download(f"{emu.base_url}/files/{task_id}.png").status_code == 404
    emu.finish(task_id)
    assert download(f"{emu.base_url}/files/{task_id}.jpg").status_code == 404


# --- callbacks --------------------------------------------------------------------------


def test_callback_is_posted_without_a_key_when_a_task_succeeds(emu, api, callback_sink):
    task_id = api.create(callBackUrl=callback_sink.url)
    assert not callback_sink.arrived.is_set()
    emu.finish(task_id)
    assert callback_sink.arrived.wait(5)
    (call,) = callback_sink.received
    assert call["path"] == "/hook"
    assert "Authorization" not in call["headers"] and "authorization" not in call["headers"]
    assert call["json"] == {"code": 200, "msg": "success", "data": api.record(task_id)}
    attempts = wait_until(lambda: emu.callbacks)
    assert attempts[0]["url"] == callback_sink.url and attempts[0]["status"] == 200
    assert attempts[0]["payload"]["data"]["successFlag"] == 1


def test_callback_reports_a_failed_task_and_fires_on_its_own_after_latency(emu, api, callback_sink):
    emu.latency = 0.05
    task_id = api.create(prompt="forbidden fruit", callBackUrl=callback_sink.url)
    assert callback_sink.arrived.wait(5)
    data = callback_sink.received[0]["json"]["data"]
    assert (data["taskId"], data["successFlag"], data["errorCode"]) == (task_id, 3, 400)


def test_unreachable_callback_is_recorded_as_an_error(emu, api):
    emu.finish(api.create(callBackUrl="http://127.0.0.1:1/hook"))
    # An earlier test's callback may still land after the reset: look at this one only.
    attempt = wait_until(lambda: [a for a in emu.callbacks if a["url"] == "http://127.0.0.1:1/hook"])[0]
    assert attempt["status"] is None and attempt["error"]


# --- faults -----------------------------------------------------------------------------


def test_status_fault_answers_the_code_without_creating_a_task(emu, api):
    emu.inject("submit", "status", count=2, status=429, style="http", retry_after=1)
    for _ in range(2):
        answer = api.submit()
        assert answer.status_code == 429 and answer.headers["Retry-After"] == "1"
        assert answer.json()["code"] == 429
    assert emu.submit_count == 0 and emu.credits == 1000
    emu.inject("credits", "status", status=455)
    answer = api.session.get(emu.base_url + CREDIT)
    assert answer.status_code == 200 and answer.json()["code"] == 455
    assert api.credits() == 1000  # the fault was used up


def test_malformed_fault_sends_broken_json(emu, api):
    task_id = api.create()
    emu.inject("poll", "malformed")
    answer = api.poll(task_id)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/json"
    with pytest.raises(ValueError):
        answer.json()
    assert api.record(task_id)["taskId"] == task_id


def test_html_fault_sends_a_proxy_error_page(emu, api):
    emu.inject("credits", "html", status=502)
    answer = api.session.get(emu.base_url + CREDIT)
    assert answer.status_code == 502 and answer.headers["Content-Type"].startswith("text/html")
    assert "502 Bad Gateway" in answer.text.splitlines()[0]


def test_reset_fault_on_submit_creates_and_charges_the_task_but_drops_the_answer(emu, api):
    emu.inject("submit", "reset")
    with pytest.raises(requests.exceptions.RequestException):
        api.submit(resolution="2K")
    assert emu.submit_count == 1 and len(emu.tasks) >= 1
    assert emu.credits == 1000 - COSTS["2K"]
    assert emu.requests[-1].fault == Fault("submit", "reset")


@pytest.mark.timeout(20)
def test_delay_fault_on_submit_creates_the_task_before_the_client_times_out(emu, api):
    emu.inject("submit", "delay", seconds=0.5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.submit(timeout=0.1)
    assert emu.submit_count == 1


def test_task_fails_fault_creates_a_task_that_ends_in_failure(emu, api):
    emu.inject("submit", "task_fails", flag=3, code=400, message="nope")
    task_id = api.create()
    emu.finish(task_id)
    assert api.record(task_id)["errorMessage"] == "nope"


def test_huge_json_fault_sends_valid_json_of_about_64_mb(emu, api):
    task_id = api.create()
    emu.inject("poll", "huge_json")
    answer = api.poll(task_id)
    assert len(answer.content) >= 64 * 1024 * 1024
    assert answer.json()["data"]["taskId"] == task_id


def test_truncate_fault_closes_the_download_half_way(emu, api):
    url = finished_url(emu, api)
    emu.inject("download", "truncate")
    with pytest.raises(requests.exceptions.RequestException):
        download(url)
    assert download(url).status_code == 200


def test_corrupt_fault_sends_random_bytes_as_an_image(emu, api):
    url = finished_url(emu, api, outputFormat="jpg")
    emu.inject("download", "corrupt")
    answer = download(url)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "image/jpeg"
    with pytest.raises(Exception):
        Image.open(io.BytesIO(answer.content)).load()


@pytest.mark.parametrize(
    ("kind", "status", "content_type"),
    [
        ("not_found", 404, "application/xml"),
        ("wrong_type", 200, "text/html"),
    ],
)
def test_expired_or_wrong_type_downloads(emu, api, kind, status, content_type):
    url = finished_url(emu, api)
    emu.inject("download", kind)
    answer = download(url)
    assert answer.status_code == status and answer.headers["Content-Type"].startswith(content_type)


def test_slow_fault_drips_the_whole_file(emu, api):
    url = finished_url(emu, api)
    expected = download(url).content
    emu.inject("download", "slow", seconds=0.4)
    started = time.monotonic()
    assert download(url).content == expected
    assert time.monotonic() - started >= 0.3


def test_bomb_fault_sends_a_tiny_png_over_the_decompression_limit(emu, api):
    url = finished_url(emu, api, outputFormat="png")
    emu.inject("download", "bomb")
    answer = download(url)
    assert answer.headers["Content-Type"] == "image/png" and len(answer.content) < 200_000
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(answer.content))


def test_endless_fault_streams_until_the_client_hangs_up(emu, api):
    url = finished_url(emu, api, outputFormat="png")
    emu.inject("download", "endless")
    received = 0
    with requests.get(url, stream=True, timeout=10) as answer:
        assert "Content-Length" not in answer.headers
        for chunk in answer.iter_content(256 * 1024):
            received += len(chunk)
            if received >= 8 * 1024 * 1024:
                break
    assert received >= 8 * 1024 * 1024
    assert download(url).status_code == 200  # the server is still fine


def test_download_status_fault_defaults_to_a_real_http_status(emu, api):
    url = finished_url(emu, api)
    emu.inject("download", "status", status=503)
    assert download(url).status_code == 503


def test_faults_are_validated_when_injected(emu):
    with pytest.raises(ValueError, match="download"):
        emu.inject("poll", "truncate")
    with pytest.raises(ValueError, match="unknown option"):
        emu.inject("submit", "status", statsu=500)
    with pytest.raises(ValueError, match="phase"):
        emu.inject("everything", "status")
    with pytest.raises(ValueError, match="successFlag"):
        emu.inject("submit", "task_fails", flag=1)
    assert emu.requests == [] and emu.submit_count == 0


def test_fault_specs_parse_from_the_command_line_syntax():
    assert parse_fault("submit:status:2:status=429,retry_after=1") == (
        Fault("submit", "status", {"status": 429, "retry_after": 1}),
        2,
    )
    assert parse_fault("download:slow:seconds=0.5") == (Fault("download", "slow", {"seconds": 0.5}), 1)
    assert parse_fault("poll:reset") == (Fault("poll", "reset"), 1)
    with pytest.raises(ValueError):
        parse_fault("poll")


def random_fault_run(emu: Emulator, api: Api, seed: int) -> list:
    emu.reset()
    emu.random_faults(rate=0.5, seed=seed)
    for _ in range(12):
        try:
            api.session.get(emu.base_url + CREDIT, timeout=10)
        except requests.exceptions.RequestException:
            pass
    for _ in range(8):
        try:
            api.submit()
        except requests.exceptions.RequestException:
            pass
    return [(r.phase, r.fault) for r in emu.requests]


def test_random_faults_are_the_same_for_the_same_seed(emu, api):
    first = random_fault_run(emu, api, seed=7)
    assert random_fault_run(emu, api, seed=7) == first
    assert random_fault_run(emu, api, seed=8) != first
    faults = [fault for _, fault in first if fault]
    assert 0 < len(faults) < len(first)
    assert all(f.kind != "delay" or f["seconds"] <= 1.0 for f in faults)
    emu.random_faults(rate=0)
    api.credits()
    assert emu.requests[-1].fault is None


def test_reset_restores_the_constructor_settings(emu, api):
    emu.latency, emu.credits, emu.error_style = 3.0, 1, "http"
    emu.inject("credits", "status", status=500)
    emu.fail_next()
    emu.reset()
    assert (emu.latency, emu.credits, emu.error_style) == (None, 1000, "json")
    assert emu.requests == [] and emu.submit_count == 0
    assert api.credits() == 1000
    task_id = api.create()
    emu.finish(task_id)
    assert api.record(task_id)["successFlag"] == 1


def test_requests_are_recorded_with_case_insensitive_headers(emu, api):
    task_id = api.create(prompt="recorded")
    api.poll(task_id)
    submit, poll = emu.requests
    assert (submit.method, submit.path, submit.phase) == ("POST", SUBMIT, "submit")
    assert submit.headers["authorization"] == submit.headers["Authorization"] == f"Bearer {KEY}"
    assert submit.json()["prompt"] == "recorded"
    assert poll.query == {"taskId": task_id} and emu.poll_count(task_id) == 1 == emu.poll_count()


def test_stop_cuts_pooled_keep_alive_connections():
    emulator = Emulator(latency=None).start()
    client = Api(emulator.base_url, key="k")
    assert client.credits() == 1000
    emulator.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        client.credits()


# --- command line -----------------------------------------------------------------------


def test_cli_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--help"])
    assert stopped.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--host",
        "--port",
        "--latency",
        "--api-key",
        "--credits",
        "--error-style",
        "--fail-word",
        "--fault",
        "--random-faults",
        "--seed",
        "--files-base-url",
        "--verbose",
        *NEW_OPTIONS,
    ):
        assert option in text
    for kind in NEW_FAULT_KINDS:
        assert re.search(rf"^  {kind} +\S", text, re.MULTILINE), kind


@pytest.mark.timeout(30)
def test_cli_prints_its_address_serves_and_exits_0_on_sigterm():
    secret = "sk-cli-secret-42"
    command = [
        sys.executable,
        "-m",
        "nanobanana_magic.emulator",
        "--port",
        "0",
        "--latency",
        "0",
        "--api-key",
        secret,
        "--credits",
        "50",
        "--fault",
        "credits:status:1:status=503,style=http",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = process.stdout.readline()
        match = re.fullmatch(r"NanoBanana emulator listening on (http://127\.0\.0\.1:\d+)\n", line)
        assert match, line
        client = Api(match.group(1), key=secret)
        assert client.session.get(match.group(1) + CREDIT, timeout=10).status_code == 503
        assert client.credits() == 50
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0
    assert secret not in line + out + err


def test_cli_switches_build_an_emulator_that_behaves_as_asked():
    args = build_parser().parse_args(
        [
            "--port",
            "0",
            "--latency",
            "0",
            "--api-key",
            KEY,
            "--relative-urls",
            "--message-key",
            "message",
            "--unknown-task-id",
            "server_exception",
            "--wrong-extension",
            "--file-content-type",
            "application/binary",
            "--trailing-bytes",
            "10",
            "--unregistered-polls",
            "1",
            "--failed-code",
            "501",
            "--rate-limit",
            "50",
            "--max-concurrent",
            "7",
            "--reference-timeout",
            "0.5",
            "--reference-max-bytes",
            "1000",
            "--durations",
            "lognormal",
            "--median",
            "40",
            "--median-4k",
            "50",
            "--sigma",
            "0.2",
            "--seed",
            "9",
            "--fault",
            "download:forbidden",
        ]
    )
    with emulator_from_args(args) as cli_emu:
        assert (cli_emu.rate_limit, cli_emu.max_concurrent, cli_emu.reference_timeout, cli_emu.reference_max_bytes) == (
            50,
            7,
            0.5,
            1000,
        )
        assert cli_emu.durations.medians == {"1K": 40, "2K": 40, "4K": 50}
        assert (cli_emu.durations.sigma, cli_emu.durations.seed) == (0.2, 9)
        api = Api(cli_emu.base_url)
        task_id = api.create(outputFormat="png")
        assert api.poll(task_id).json() == {"code": 404, "message": "task not found"}
        assert api.poll("not-a-task").json()["code"] == 500
        cli_emu.finish(task_id)
        url = api.record(task_id)["response"]["resultImageUrl"]
        assert url == f"/files/{task_id}.jpeg"
        assert download(cli_emu.base_url + url).status_code == 403
        answer = download(cli_emu.base_url + url)
        assert answer.headers["Content-Type"] == "application/binary"
        assert answer.content.startswith(PNG_SIGNATURE) and answer.content[-10:] == b"nanobanana"
        assert decoded(answer.content).format == "PNG"


# --- what the live service may also do ----------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_EOI = b"\xff\xd9"
SERVER_EXCEPTION = "Server exception, please check the parameters"


def decoded(content: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(content))
    image.load()
    return image


@pytest.mark.parametrize("content_type", ["binary/octet-stream", "application/binary", "application/octet-stream"])
def test_content_type_fault_labels_the_real_file_with_a_generic_type(emu, api, content_type):
    url = finished_url(emu, api, outputFormat="png")
    emu.inject("download", "content_type", type=content_type)
    odd = download(url)
    assert odd.status_code == 200 and odd.headers["Content-Type"] == content_type
    assert decoded(odd.content).format == "PNG"
    normal = download(url)
    assert normal.headers["Content-Type"] == "image/png" and normal.content == odd.content


def test_file_content_type_option_labels_every_result_file(emu, api):
    emu.file_content_type = "binary/octet-stream"
    for fmt, image_format in (("png", "PNG"), ("jpg", "JPEG")):
        answer = download(finished_url(emu, api, outputFormat=fmt))
        assert answer.headers["Content-Type"] == "binary/octet-stream"
        assert decoded(answer.content).format == image_format


def test_wrong_extension_serves_png_bytes_behind_a_jpeg_url(emu, api):
    emu.wrong_extension = True
    task_id = api.create(outputFormat="png")
    emu.finish(task_id)
    url = api.record(task_id)["response"]["resultImageUrl"]
    assert url == f"{emu.base_url}/files/{task_id}.jpeg" == emu.result_url(task_id)
    answer = download(url)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "image/jpeg"
    assert answer.content.startswith(PNG_SIGNATURE) and decoded(answer.content).format == "PNG"


@pytest.mark.parametrize(("style", "http_status"), [("json", 200), ("http", 404)])
def test_first_polls_answer_not_found_then_the_task_appears(emu, api, style, http_status):
    emu.error_style = style
    emu.unregistered_polls = 2
    task_id = api.create()
    for _ in range(2):
        early = api.poll(task_id)
        assert early.status_code == http_status and early.json() == {"code": 404, "msg": "task not found"}
    assert api.record(task_id)["taskId"] == task_id
    assert api.record(task_id)["successFlag"] == 0


def test_not_registered_fault_hides_only_that_task_from_its_first_polls(emu, api):
    emu.inject("submit", "not_registered", polls=3)
    late, normal = api.create(), api.create()
    assert emu.submit_count == 2 and emu.credits == 1000 - 2 * COSTS["1K"]
    assert api.record(normal)["taskId"] == normal
    assert [api.poll(late).json()["code"] for _ in range(4)] == [404, 404, 404, 200]


def test_relative_result_urls_resolve_against_the_api_base_url(emu, api, callback_sink):
    emu.relative_urls = True
    task_id = api.create(outputFormat="jpg", callBackUrl=callback_sink.url)
    emu.finish(task_id)
    url = api.record(task_id)["response"]["resultImageUrl"]
    assert url == f"/files/{task_id}.jpg"
    assert decoded(download(emu.base_url + url).content).format == "JPEG"
    assert callback_sink.arrived.wait(5)
    assert callback_sink.received[0]["json"]["data"]["response"]["resultImageUrl"] == url


@pytest.mark.parametrize(("style", "http_status"), [("json", 200), ("http", 404)])
def test_error_answers_carry_message_instead_of_msg_when_asked(emu, api, style, http_status):
    emu.error_style, emu.message_key = style, "message"
    answer = api.poll("0" * 32)
    assert answer.status_code == http_status
    assert answer.json() == {"code": 404, "message": "task not found"}
    assert api.submit(prompt="").json().keys() == {"code", "message"}
    assert api.submit().json()["msg"] == "success"  # success answers keep msg


def test_unknown_task_ids_are_not_found_by_default(api):
    for task_id in ("not-a-task", "0" * 32):
        assert api.poll(task_id).json() == {"code": 404, "msg": "task not found"}


def test_unparseable_task_id_is_a_server_exception_when_asked(emu, api):
    emu.unknown_task_id = "server_exception"
    for task_id in ("not-a-task", "g" * 32, "0" * 31, "31ce2c17-b257-4929-59d6-2279e6d01a54"):
        answer = api.poll(task_id)
        assert answer.status_code == 200 and answer.json() == {"code": 500, "msg": SERVER_EXCEPTION}, task_id
    assert api.poll("0" * 32).json()["code"] == 404  # well-formed but unknown: still not found
    assert api.record(api.create())["successFlag"] == 0


def test_server_exception_fault_answers_a_known_task_with_code_500_once(emu, api):
    task_id = api.create()
    emu.inject("poll", "server_exception")
    assert api.poll(task_id).json() == {"code": 500, "msg": SERVER_EXCEPTION}
    assert api.record(task_id)["taskId"] == task_id


def test_forbidden_fault_is_a_403_from_the_file_host_then_the_file_comes(emu, api):
    url = finished_url(emu, api)
    emu.inject("download", "forbidden", count=2)
    for _ in range(2):
        refused = download(url)
        assert refused.status_code == 403 and "AccessDenied" in refused.text
        assert "NoSuchKey" not in refused.text and "expired" not in refused.text
    assert decoded(download(url).content).format == "JPEG"


def test_trailing_data_follows_the_end_of_image_marker_and_the_jpeg_stays_valid(emu, api):
    url = finished_url(emu, api, outputFormat="jpg")
    clean = download(url).content
    assert clean.endswith(JPEG_EOI)
    emu.inject("download", "trailing_data", bytes=1000)
    padded = download(url).content
    assert len(padded) == len(clean) + 1000 and padded.startswith(clean)
    assert b"\xff" not in padded[len(clean) :]
    assert decoded(padded).size == decoded(clean).size


def test_trailing_bytes_option_pads_every_result_file(emu, api):
    emu.trailing_bytes = 64
    url = finished_url(emu, api, outputFormat="png")
    emu.trailing_bytes = 0
    clean = download(url).content
    emu.trailing_bytes = 64
    padded = download(url).content
    assert padded.startswith(clean) and len(padded) == len(clean) + 64
    assert decoded(padded).format == "PNG"


def test_odd_flag_fault_ends_the_task_with_an_undocumented_success_flag(emu, api):
    emu.inject("submit", "odd_flag", flag=7)
    task_id = api.create(outputFormat="png")
    assert api.record(task_id)["successFlag"] == 0
    emu.finish(task_id)
    record = api.record(task_id)
    assert (record["successFlag"], record["response"], record["errorCode"]) == (7, None, None)
    assert TIMESTAMP.match(record["completeTime"])
    assert download(f"{emu.base_url}/files/{task_id}.png").status_code == 404


@pytest.mark.parametrize(
    ("shape", "response"),
    [
        ("null", {"originImageUrl": None, "resultImageUrl": None}),
        ("empty", {"originImageUrl": None, "resultImageUrl": ""}),
        ("missing", None),
    ],
)
def test_success_without_a_url_persists(emu, api, shape, response):
    emu.inject("submit", "no_url", shape=shape)
    task_id = api.create()
    emu.finish(task_id)
    for _ in range(3):
        record = api.record(task_id)
        assert (record["successFlag"], record["response"]) == (1, response)


def test_new_submit_faults_are_validated_when_injected(emu):
    with pytest.raises(ValueError, match="undocumented"):
        emu.inject("submit", "odd_flag", flag=1)
    with pytest.raises(ValueError, match="shape"):
        emu.inject("submit", "no_url", shape="absent")
    with pytest.raises(ValueError, match="download"):
        emu.inject("poll", "forbidden")
    with pytest.raises(ValueError, match="must be one of"):
        emu.message_key = "text"
    assert emu.message_key == "msg"


def test_generation_failed_fault_answers_record_info_with_code_501(emu, api):
    emu.inject("submit", "generation_failed")
    task_id = api.create()
    assert emu.submit_count == 1 and emu.credits == 1000 - COSTS["1K"]
    assert api.record(task_id)["successFlag"] == 0
    emu.finish(task_id)
    for _ in range(2):
        answer = api.poll(task_id)
        assert answer.status_code == 200
        assert answer.json() == {"code": 501, "msg": "generation failed", "data": None}
    assert emu.tasks[task_id].flag == 3


def test_failed_code_option_answers_every_failed_task_with_that_code(emu, api):
    emu.failed_code, emu.error_style = 501, "http"
    failed, healthy = api.create(prompt="forbidden fruit"), api.create()
    emu.finish_all()
    answer = api.poll(failed)
    assert answer.status_code == 501 and answer.json()["code"] == 501
    assert "generation failed" in answer.json()["msg"]
    assert api.record(healthy)["successFlag"] == 1


# --- realism --------------------------------------------------------------------------------


def lognormal_durations(seed: int, per_resolution: int = 25) -> dict[str, list[float]]:
    with Emulator(latency=None, durations="lognormal", duration_seed=seed, credits=10**6) as emulator:
        client = Api(emulator.base_url, key="k")
        ids = {res: [client.create(resolution=res) for _ in range(per_resolution)] for res in ("1K", "2K", "4K")}
        assert client.record(ids["4K"][0])["successFlag"] == 0  # tens of seconds away
        tasks = emulator.tasks
        return {res: [tasks[t].done_at - tasks[t].created for t in task_ids] for res, task_ids in ids.items()}


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def test_lognormal_durations_are_seeded_and_longer_for_higher_resolutions():
    first = lognormal_durations(seed=5)
    assert lognormal_durations(seed=5) == first
    assert lognormal_durations(seed=6) != first
    medians = {res: median(values) for res, values in first.items()}
    assert medians["1K"] < medians["2K"] < medians["4K"]
    for res, expected in {"1K": 15, "2K": 20, "4K": 30}.items():
        assert medians[res] == pytest.approx(expected, rel=0.35)
        assert len(set(first[res])) == len(first[res])  # drawn, not fixed
    assert all(3 < seconds < 150 for values in first.values() for seconds in values)


def test_lognormal_durations_restart_from_the_seed_on_reset():
    with Emulator(durations="lognormal", medians={"1K": 0.5}, sigma=0.5) as emulator:
        client = Api(emulator.base_url, key="k")

        def durations() -> list[float]:
            tasks = emulator.tasks
            return sorted(task.done_at - task.created for task in tasks.values())

        for _ in range(5):
            client.create()
        before = durations()
        emulator.reset()
        for _ in range(5):
            client.create()
        assert durations() == pytest.approx(before, abs=1e-3)
        assert median(before) == pytest.approx(0.5, rel=0.6) and len(set(before)) == 5


def test_fixed_latency_stays_the_default():
    emulator = Emulator(latency=0.25)
    assert emulator.durations is None and emulator.latency == 0.25
    with pytest.raises(ValueError, match="durations"):
        Emulator(durations="gaussian")
    with pytest.raises(ValueError, match="median"):
        Emulator(durations="lognormal", medians={"1K": 0})


def test_rate_limit_answers_429_with_retry_after_and_counts_them(emu, api):
    emu.rate_limit = 3
    url = f"{emu.base_url}/samples/cat.png"
    answers = [api.session.get(emu.base_url + CREDIT, timeout=10) for _ in range(5)]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 429, 429]
    for refused in answers[3:]:
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["code"] == 429 and "3 requests per second" in refused.json()["msg"]
    assert download(url).status_code == 200  # the file host is not the API: not limited
    assert [r.limited_by for r in emu.requests if r.phase == "credits"] == [None, None, None, "rate", "rate"]
    stats = emu.stats
    assert (stats.api_requests, stats.rate_limited, stats.answered_429, stats.concurrency_refused) == (5, 2, 2, 0)
    assert stats.peak_requests_per_second == 5
    emu.reset()
    assert emu.stats.api_requests == 0 and emu.rate_limit is None


def test_rate_limited_requests_use_up_no_fault_and_create_no_task(emu, api):
    emu.rate_limit = 1
    api.credits()
    emu.inject("submit", "status", status=500)
    refused = api.submit()
    assert refused.status_code == 429 and emu.submit_count == 0
    assert [(fault.kind, left) for fault, left in emu.pending_faults()] == [("status", 1)]


def test_rate_limit_window_slides_over_one_second():
    from nanobanana_magic.emulator.realism import RateLimiter, peak_in_window, retry_after_seconds

    now = [100.0]
    limiter = RateLimiter(clock=lambda: now[0])
    answers = []
    for moment in (100.0, 100.5, 100.9, 101.0, 101.2, 101.5):
        now[0] = moment
        answers.append(limiter.admit(2))
    # 100.9 is refused until 100.0 leaves the window; 101.2 until 100.5 does.
    assert answers == [None, None, pytest.approx(0.1), None, pytest.approx(0.3), None]
    assert retry_after_seconds(0.4) == 1 and retry_after_seconds(1.2) == 2
    assert peak_in_window([0.0, 0.5, 0.99, 1.0, 1.2, 3.0]) == 4


def test_max_concurrent_refuses_a_submit_while_n_tasks_generate_and_charges_nothing(emu, api):
    emu.max_concurrent = 2
    first, _ = api.create(), api.create()
    refused = api.submit(resolution="4K")
    assert refused.status_code == 200 and refused.json()["code"] == 429
    assert "at most 2" in refused.json()["msg"] and "Retry-After" not in refused.headers
    assert emu.submit_count == 2 and emu.credits == 1000 - 2 * COSTS["1K"]
    emu.finish(first)
    api.create()
    stats = emu.stats
    assert (stats.concurrency_refused, stats.answered_429, stats.peak_generating, stats.submits) == (1, 1, 2, 3)


def test_stats_count_every_429_sent_including_faults(emu, api):
    emu.inject("poll", "status", count=2, status=429, style="http")
    task_id = api.create()
    for _ in range(3):
        api.poll(task_id)
    stats = emu.stats
    assert (stats.answered_429, stats.rate_limited, stats.api_requests, stats.peak_generating) == (2, 0, 4, 1)


# --- references -----------------------------------------------------------------------------

RED = (255, 0, 0)


@pytest.fixture
def file_server(tmp_path):
    """A plain http.server serving a folder, as a local web server or bucket would."""
    from functools import partial
    from http.server import SimpleHTTPRequestHandler

    seen: list[dict] = []

    class Folder(SimpleHTTPRequestHandler):
        def do_GET(self):
            seen.append({"path": self.path, "headers": dict(self.headers)})
            super().do_GET()

        def log_message(self, *args):
            pass

    Image.new("RGB", (64, 64), RED).save(tmp_path / "red.png")
    (tmp_path / "note.txt").write_text("not a picture\n")
    (tmp_path / "big.png").write_bytes(PNG_SIGNATURE + bytes(4096))
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Folder, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    server.seen = seen
    yield server
    server.shutdown()
    server.server_close()


def red_pixels(image: Image.Image) -> int:
    counts = {colour: count for count, colour in image.convert("RGB").getcolors(1 << 24)}
    return counts.get(RED, 0)


def test_references_on_another_server_are_drawn_and_failures_are_marked(emu, api, file_server):
    emu.reference_max_bytes = 2048
    urls = [
        f"{file_server.url}/red.png",
        "http://127.0.0.1:1/gone.png",
        f"{file_server.url}/note.txt",
        f"{file_server.url}/big.png",
    ]
    task_id = api.create(outputFormat="png", aspectRatio="1:1", imageUrls=urls)
    assert emu.reference_report(task_id) is None  # drawn when first downloaded
    emu.finish(task_id)
    image = decoded(download(api.record(task_id)["response"]["resultImageUrl"]).content)
    assert emu.reference_report(task_id) == list(zip(urls, ["ok", "unreachable", "not an image", "too large"]))
    assert red_pixels(image) >= 0.9 * 64 * 64
    assert red_pixels(image.crop((0, image.height // 4, image.width, image.height))) == 0  # in the top strip
    assert sorted(hit["path"] for hit in file_server.seen) == ["/big.png", "/note.txt", "/red.png"]  # fetched at once
    assert not any("Authorization" in hit["headers"] for hit in file_server.seen)


@pytest.mark.timeout(20)
def test_a_reference_that_never_answers_costs_only_the_reference_timeout(emu, api):
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # connections are queued, never answered
    try:
        emu.reference_timeout = 0.2
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/slow.png"
        started = time.monotonic()
        image = decoded(download(finished_url(emu, api, aspectRatio="1:1", imageUrls=[url])).content)
        assert time.monotonic() - started < 2.0
        assert image.size == (1024, 1024)
        task_id = next(iter(emu.tasks))
        assert emu.reference_report(task_id) == [(url, "unreachable")]
    finally:
        silent.close()
