"""The API itself: what each endpoint answers, independent of sockets and threads."""

from __future__ import annotations

import hmac
import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from . import images
from .callbacks import CallbackSender
from .faults import Fault, FaultPlan
from .records import Headers, RequestLog
from .tasks import SUCCESS, Failure, InsufficientCredits, Task, TaskStore, task_record
from .validation import InvalidBody, validate_submit

SUBMIT_PATH = "/api/v1/nanobanana/generate-2"
RECORD_INFO_PATH = "/api/v1/nanobanana/record-info"
CREDIT_PATH = "/api/v1/common/credit"

ERROR_STYLES = ("json", "http")

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

CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg"}


@dataclass
class Reply:
    """An HTTP answer before it goes on the wire (where faults may still spoil it)."""

    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(payload: Any, status: int = 200) -> Reply:
    """A JSON answer (UTF-8, non-ASCII kept readable)."""
    return Reply(status, "application/json", json.dumps(payload, ensure_ascii=False).encode("utf-8"))


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
    ) -> None:
        if error_style not in ERROR_STYLES:
            raise ValueError(f"error_style must be one of {', '.join(ERROR_STYLES)}; got {error_style!r}")
        self.api_key = api_key
        self.error_style = error_style
        self.store = TaskStore(credits, latency, tuple(fail_words))
        self.faults = FaultPlan()
        self.callbacks = CallbackSender()
        self.log = RequestLog()
        self.renders = images.RenderCache()
        self.files_base_url = files_base_url

    # --- answers --------------------------------------------------------------------

    def error(self, code: int, msg: str | None = None, style: str | None = None,
              retry_after: float | None = None) -> Reply:
        """An API error in the configured style: HTTP status, or HTTP 200 with a JSON code."""
        style = style or self.error_style
        reply = json_reply({"code": code, "msg": msg or ERROR_MESSAGES.get(code, "error")},
                           status=code if style == "http" else 200)
        if retry_after is not None:
            reply.headers["Retry-After"] = _number_text(retry_after)
        return reply

    @staticmethod
    def success(data: Any) -> Reply:
        """The API's success envelope around ``data``."""
        return json_reply({"code": 200, "msg": "success", "data": data})

    def handle(self, method: str, path: str, query: dict[str, str], headers: Headers, body: bytes,
               fault: Fault | None) -> Reply:
        """Serve one request whose fault (if any) does not replace the answer."""
        phase, parts = route_of(method, path)
        if phase == "submit":
            failure = Failure(**fault.options) if fault and fault.kind == "task_fails" else None
            return self.submit(headers, body, failure)
        if phase == "poll":
            return self.record_info(headers, query)
        if phase == "credits":
            return self.credit(headers)
        if phase == "download":
            return self.result_file(headers, parts["task_id"], parts["ext"])
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

    def submit(self, headers: Headers, raw: bytes, failure: Failure | None = None) -> Reply:
        """POST generate-2: validate, charge, create the task."""
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
            task = self.store.create(body, params, failure)
        except InsufficientCredits as broke:
            return self.error(402, str(broke))
        if params.callback_url and task.done_at is not None:
            self.callbacks.schedule(task.done_at - time.time(), task.task_id, params.callback_url,
                                    lambda: self._payload_when_done(task))
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
            return self.error(404, "task not found")
        return self.success(self.record(task))

    def credit(self, headers: Headers) -> Reply:
        """GET credit: the balance."""
        return self.authorize(headers) or self.success(self.store.credits)

    def result_file(self, headers: Headers, task_id: str, ext: str) -> Reply:
        """GET /files/<taskId>.<ext> on the "file host": no key allowed, rendered on demand."""
        if "Authorization" in headers:
            return json_reply({"code": 403, "msg": "the file host refuses requests carrying an Authorization header"},
                              status=403)
        task = self.store.get(task_id)
        if task is None or task.flag != SUCCESS or task.ext != ext:
            return json_reply({"code": 404, "msg": "file not found"}, status=404)
        return Reply(200, CONTENT_TYPES[ext], self.renders.get(task_id, lambda: self.render(task)))

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
        if kind == "not_found":
            return Reply(404, "application/xml", b"<?xml version='1.0' encoding='UTF-8'?>\n"
                         b"<Error><Code>NoSuchKey</Code><Message>The link has expired.</Message></Error>")
        if kind == "wrong_type":
            return Reply(200, "text/html; charset=utf-8", b"<!DOCTYPE html>\n<html><body><h1>Sign in to continue"
                         b"</h1><form><input name='user'></form></body></html>\n")
        if kind == "bomb":
            return Reply(200, "image/png", images.bomb_png())
        if kind == "endless":
            return Reply(200, _image_type(path), b"")  # the handler streams the body
        raise ValueError(f"fault kind {kind!r} does not replace the answer")

    # --- tasks ------------------------------------------------------------------------

    def record(self, task: Task) -> dict[str, Any]:
        """The record-info ``data`` of a task."""
        url = f"{self.files_base_url()}/files/{task.task_id}.{task.ext}"
        return task_record(task, url, json.dumps(task.body, ensure_ascii=False))

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
        """Draw the result image of a successful task."""
        params = task.params
        return images.render_result(images.RenderSpec(
            task.task_id, params.prompt, params.aspect_ratio, params.resolution,
            params.output_format, params.image_urls,
        ))

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
    return (b"<html><head><title>502 Bad Gateway</title></head>\n<body>\n<center><h1>502 Bad Gateway</h1></center>\n"
            b"<hr><center>nginx</center>\n</body>\n</html>\n")
