"""The API itself: what each endpoint answers, independent of sockets and threads."""

from __future__ import annotations

import hmac
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import images
from .callbacks import CallbackSender
from .faults import Fault, FaultPlan
from .options import Options
from .realism import RateLimiter, retry_after_seconds
from .records import API_PHASES, Headers, RequestLog
from .tasks import (
    CREATE_TASK_FAILED,
    GENERATE_FAILED,
    SUCCESS,
    Durations,
    Failure,
    InsufficientCredits,
    Order,
    Task,
    TaskStore,
    TooManyGenerating,
    task_record,
)
from .validation import InvalidBody, validate_submit

SUBMIT_PATH = "/api/v1/nanobanana/generate-2"
RECORD_INFO_PATH = "/api/v1/nanobanana/record-info"
CREDIT_PATH = "/api/v1/common/credit"

ERROR_STYLES = ("json", "http")

#: The ids the service hands out; with unknown_task_id="server_exception" anything else is unparseable.
TASK_ID = re.compile(r"[0-9a-fA-F]{32}")
SERVER_EXCEPTION = "Server exception, please check the parameters"

#: The extension of every result URL in wrong_extension mode, as in API.md's example URL.
WRONG_EXTENSION = "jpeg"

#: Routes as (method, path pattern, phase). Faults are planned per phase.
ROUTES = (
    ("POST", re.compile(re.escape(SUBMIT_PATH)), "submit"),
    ("GET", re.compile(re.escape(RECORD_INFO_PATH)), "poll"),
    ("GET", re.compile(re.escape(CREDIT_PATH)), "credits"),
    ("GET", re.compile(r"/files/(?P<task_id>[^/.]+)\.(?P<ext>[A-Za-z0-9]+)"), "download"),
    ("GET", re.compile(r"/samples/(?P<name>[A-Za-z0-9_-]+)\.png"), "samples"),
)

ERROR_MESSAGES = {
    400: "bad request",
    401: "missing or invalid API key",
    402: "insufficient credits",
    403: "access denied",
    404: "task not found",
    422: "parameter validation failed",
    429: "rate limited: too many requests",
    455: "service unavailable: maintenance",
    500: "internal server error",
    502: "bad gateway",
    503: "service unavailable",
    505: "feature disabled",
}

CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg", WRONG_EXTENSION: "image/jpeg"}

_ABSENT = object()


@dataclass
class Reply:
    """An HTTP answer before it goes on the wire (where faults may still spoil it).

    ``code`` is the JSON ``code`` of an API answer; ``limited_by`` says which limit
    ("rate" or "concurrency") refused the request, for the request log.
    """

    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    code: int | None = None
    limited_by: str | None = None


def json_reply(payload: Any, status: int = 200) -> Reply:
    """A JSON answer (UTF-8, non-ASCII kept readable)."""
    code = payload.get("code") if isinstance(payload, dict) else None
    return Reply(
        status,
        "application/json",
        json.dumps(payload, ensure_ascii=False).encode("utf-8"),
        code=code if isinstance(code, int) else None,
    )


def route_of(method: str, path: str) -> tuple[str, dict[str, str]]:
    """The phase of a request (or "other") and the parts its path pattern captured."""
    for route_method, pattern, phase in ROUTES:
        match = pattern.fullmatch(path)
        if match and method == route_method:
            return phase, match.groupdict()
    return "other", {}


class Service:
    """State and behaviour of the fake API; the HTTP handler only moves bytes."""

    def __init__(
        self,
        *,
        api_key: str | None,
        latency: float | None,
        credits: int,
        error_style: str,
        fail_words: tuple[str, ...],
        files_base_url: Callable[[], str],
        options: Options = Options(),
        durations: Durations | None = None,
    ) -> None:
        if error_style not in ERROR_STYLES:
            raise ValueError(f"error_style must be one of {', '.join(ERROR_STYLES)}; got {error_style!r}")
        self.api_key = api_key
        self.error_style = error_style
        self.options = options
        self.store = TaskStore(credits, latency, tuple(fail_words), durations)
        self.faults = FaultPlan()
        self.callbacks = CallbackSender()
        self.log = RequestLog()
        self.renders = images.RenderCache()
        self.limiter = RateLimiter()
        self.files_base_url = files_base_url
        #: per task id: what became of each reference when its result was last drawn
        self.reference_reports: dict[str, list[tuple[str, str]]] = {}

    # --- answers --------------------------------------------------------------------

    def error(
        self,
        code: int,
        msg: str | None = None,
        style: str | None = None,
        retry_after: float | None = None,
        data: Any = _ABSENT,
    ) -> Reply:
        """An API error in the configured style: HTTP status, or HTTP 200 with a JSON code.

        The text goes under the configured message key; ``data`` is added only when given.
        """
        style = style or self.error_style
        payload = {"code": code, self.options.message_key: msg or ERROR_MESSAGES.get(code, "error")}
        if data is not _ABSENT:
            payload["data"] = data
        reply = json_reply(payload, status=code if style == "http" else 200)
        if retry_after is not None:
            reply.headers["Retry-After"] = _number_text(retry_after)
        return reply

    def admit(self, phase: str) -> Reply | None:
        """None when the rate limit lets the request through, else its HTTP 429 answer."""
        limit = self.options.rate_limit
        if limit is None or phase not in API_PHASES:
            return None
        wait = self.limiter.admit(limit)
        if wait is None:
            return None
        reply = self.error(
            429,
            f"rate limited: more than {limit} requests per second",
            style="http",
            retry_after=retry_after_seconds(wait),
        )
        reply.limited_by = "rate"
        return reply

    @staticmethod
    def success(data: Any) -> Reply:
        """The API's success envelope around ``data``."""
        return json_reply({"code": 200, "msg": "success", "data": data})

    def handle(
        self, method: str, path: str, query: dict[str, str], headers: Headers, body: bytes, fault: Fault | None
    ) -> Reply:
        """Serve one request whose fault (if any) does not replace the answer."""
        phase, parts = route_of(method, path)
        if phase == "submit":
            return self.submit(headers, body, self.order_of(fault))
        if phase == "poll":
            return self.record_info(headers, query)
        if phase == "credits":
            return self.credit(headers)
        if phase == "download":
            return self.result_file(headers, parts["task_id"], parts["ext"], fault)
        if phase == "samples":
            return self.sample(parts["name"])
        if any(pattern.fullmatch(path) for _, pattern, _ in ROUTES):
            return json_reply({"code": 405, "msg": f"method {method} not allowed here"}, status=405)
        return json_reply({"code": 404, "msg": "no such endpoint"}, status=404)

    def authorize(self, headers: Headers) -> Reply | None:
        """None when the bearer key is acceptable, else the 401 answer (never echoing the key)."""
        scheme, _, key = headers.get("Authorization", "").strip().partition(" ")
        key = key.strip()
        valid = scheme.lower() == "bearer" and bool(key)
        if valid and self.api_key is not None:
            valid = hmac.compare_digest(key.encode("utf-8"), self.api_key.encode("utf-8"))
        return None if valid else self.error(401, "missing or invalid API key")

    def order_of(self, fault: Fault | None) -> Order:
        """How the task a submit creates is to behave: from its fault, else the server options."""
        kind = fault.kind if fault else None
        hidden = fault["polls"] if kind == "not_registered" else self.options.unregistered_polls
        if kind == "task_fails":
            return Order(failure=Failure(**fault.options), hidden_polls=hidden)
        if kind == "generation_failed":
            return Order(
                failure=Failure(GENERATE_FAILED, fault["code"], fault["message"]),
                failed_code=fault["code"],
                hidden_polls=hidden,
            )
        if kind == "odd_flag":
            return Order(odd_flag=fault["flag"], hidden_polls=hidden)
        if kind == "no_url":
            return Order(url_shape=fault["shape"], hidden_polls=hidden)
        return Order(hidden_polls=hidden)

    def submit(self, headers: Headers, raw: bytes, order: Order = Order()) -> Reply:
        """POST generate-2: validate, charge, create the task as ``order`` says."""
        denied = self.authorize(headers)
        if denied:
            return denied
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return self.error(400, "request body is not valid JSON")
        try:
            params = validate_submit(body)
        except InvalidBody as invalid:
            return self.error(invalid.code, invalid.msg)
        try:
            task = self.store.create(body, params, order, max_generating=self.options.max_concurrent)
        except InsufficientCredits as broke:
            return self.error(402, str(broke))
        except TooManyGenerating as busy:
            reply = self.error(429, f"{busy}; try again when one has ended")
            reply.limited_by = "concurrency"
            return reply
        if params.callback_url and task.done_at is not None:
            self.callbacks.schedule(
                task.done_at - time.time(), task.task_id, params.callback_url, lambda: self._payload_when_done(task)
            )
        return self.success({"taskId": task.task_id})

    def record_info(self, headers: Headers, query: dict[str, str]) -> Reply:
        """GET record-info: the task as it is now."""
        denied = self.authorize(headers)
        if denied:
            return denied
        task_id = query.get("taskId", "")
        if not task_id:
            return self.error(422, "taskId is required")
        task = self.store.get(task_id)
        if task is None:
            return self.unknown_task(task_id)
        if self.store.take_hidden_poll(task):
            return self.error(404, "task not found")
        failed_code = task.failed_code or self.options.failed_code
        if failed_code and task.flag in (CREATE_TASK_FAILED, GENERATE_FAILED):
            return self.error(failed_code, task.failure.message if task.failed_code else "generation failed", data=None)
        return self.success(self.record(task))

    def unknown_task(self, task_id: str) -> Reply:
        """The answer for an id the service has no task for."""
        if self.options.unknown_task_id == "server_exception" and not TASK_ID.fullmatch(task_id):
            return self.error(500, SERVER_EXCEPTION)
        return self.error(404, "task not found")

    def credit(self, headers: Headers) -> Reply:
        """GET credit: the balance."""
        return self.authorize(headers) or self.success(self.store.credits)

    def result_file(self, headers: Headers, task_id: str, ext: str, fault: Fault | None = None) -> Reply:
        """GET /files/<taskId>.<ext> on the "file host": no key allowed, rendered on demand.

        The Content-Type follows the URL's extension, as an S3-style host labels by the
        name; a ``content_type`` fault or the file_content_type option overrides it.
        """
        if "Authorization" in headers:
            return json_reply(
                {"code": 403, "msg": "the file host refuses requests carrying an Authorization header"}, status=403
            )
        task = self.store.get(task_id)
        if task is None or task.flag != SUCCESS or ext not in (task.ext, self.result_ext(task)):
            return json_reply({"code": 404, "msg": "file not found"}, status=404)
        data = self.renders.get(task_id, lambda: self.render(task))
        trailer = fault["bytes"] if fault and fault.kind == "trailing_data" else self.options.trailing_bytes
        if trailer:
            data = images.append_trailer(data, int(trailer))
        content_type = fault["type"] if fault and fault.kind == "content_type" else self.options.file_content_type
        return Reply(200, content_type or CONTENT_TYPES[ext], data)

    def result_ext(self, task: Task) -> str:
        """The extension of the task's result URL (not always that of its bytes)."""
        return WRONG_EXTENSION if self.options.wrong_extension else task.ext

    def result_url(self, task: Task, absolute: bool = False) -> str:
        """Where the result is served; root-relative when relative_urls is on, unless ``absolute``."""
        path = f"/files/{task.task_id}.{self.result_ext(task)}"
        if self.options.relative_urls and not absolute:
            return path
        return self.files_base_url() + path

    @staticmethod
    def sample(name: str) -> Reply:
        """GET /samples/<name>.png: a small picture to use as a reference image."""
        data = images.sample_png(name)
        if data is None:
            known = ", ".join(f"{sample}.png" for sample in images.sample_names())
            return json_reply({"code": 404, "msg": f"no sample {name}.png; samples: {known}"}, status=404)
        return Reply(200, "image/png", data)

    def fault_reply(self, fault: Fault, path: str) -> Reply:
        """The answer a replacing fault gives instead of the service."""
        kind = fault.kind
        if kind == "status":
            # A file host has no JSON envelope, so its errors default to real HTTP statuses.
            style = fault["style"] or ("http" if fault.phase == "download" else None)
            return self.error(fault["status"], style=style, retry_after=fault["retry_after"])
        if kind == "malformed":
            return Reply(200, "application/json", b'{"code": 200, "msg": "success", "data": {"taskId": "3f9')
        if kind == "html":
            return Reply(fault["status"], "text/html; charset=utf-8", _proxy_page())
        if kind == "corrupt":
            return Reply(200, _image_type(path), os.urandom(64 * 1024))
        if kind == "server_exception":
            return self.error(500, SERVER_EXCEPTION)
        if kind == "forbidden":
            return Reply(
                403,
                "application/xml",
                b"<?xml version='1.0' encoding='UTF-8'?>\n"
                b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
            )
        if kind == "not_found":
            return Reply(
                404,
                "application/xml",
                b"<?xml version='1.0' encoding='UTF-8'?>\n"
                b"<Error><Code>NoSuchKey</Code><Message>The link has expired.</Message></Error>",
            )
        if kind == "wrong_type":
            return Reply(
                200,
                "text/html; charset=utf-8",
                b"<!DOCTYPE html>\n<html><body><h1>Sign in to continue"
                b"</h1><form><input name='user'></form></body></html>\n",
            )
        if kind == "bomb":
            return Reply(200, "image/png", images.bomb_png())
        if kind == "endless":
            return Reply(200, _image_type(path), b"")  # the handler streams the body
        raise ValueError(f"fault kind {kind!r} does not replace the answer")

    # --- tasks ------------------------------------------------------------------------

    def record(self, task: Task) -> dict[str, Any]:
        """The record-info ``data`` of a task."""
        return task_record(task, self.result_url(task), json.dumps(task.body, ensure_ascii=False))

    def callback_payload(self, task: Task) -> dict[str, Any]:
        """What is POSTed to ``callBackUrl``: the record-info answer of the task."""
        return {"code": 200, "msg": "success", "data": self.record(task)}

    def _payload_when_done(self, task: Task) -> dict[str, Any]:
        # Timers run on the monotonic clock and may wake a hair before the wall-clock done time.
        remaining = (task.done_at or 0) - time.time()
        if remaining > 0:
            time.sleep(remaining)
        return self.callback_payload(task)

    def render(self, task: Task) -> bytes:
        """Draw the result image of a successful task, fetching its references now."""
        params = task.params
        references = images.fetch_references(
            params.image_urls[: images.MAX_REFERENCES_DRAWN],
            self.options.reference_timeout,
            self.options.reference_max_bytes,
        )
        self.reference_reports[task.task_id] = [(ref.url, ref.status) for ref in references]
        return images.render_result(
            images.RenderSpec(
                task.task_id,
                params.prompt,
                params.aspect_ratio,
                params.resolution,
                params.output_format,
                params.image_urls,
            ),
            references,
        )

    def finished(self, tasks: list[Task]) -> None:
        """Send the callbacks of tasks that were just ended by hand."""
        for task in tasks:
            if task.params.callback_url:
                self.callbacks.send(task.task_id, task.params.callback_url, self.callback_payload(task))


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _image_type(path: str) -> str:
    return CONTENT_TYPES["jpg"] if path.endswith(".jpg") else CONTENT_TYPES["png"]


def _proxy_page() -> bytes:
    return (
        b"<html><head><title>502 Bad Gateway</title></head>\n<body>\n<center><h1>502 Bad Gateway</h1></center>\n"
        b"<hr><center>nginx</center>\n</body>\n</html>\n"
    )
