"""`Connection`: the REST calls of API.md (submit, record-info, credits, download) over one pooled session."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import replace
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import BaseHTTPResponse
from urllib3 import exceptions as urllib3_errors
from urllib3.exceptions import NameResolutionError, NewConnectionError
from urllib3.util.retry import Retry

from ..core.errors import AuthenticationError, DownloadError, NetworkError, ServiceUnavailableError, error_for_code
from ..core.images import CorruptImage, check_image, image_format
from ..core.params import DEFAULT_BASE_URL, GenerationRequest
from ..core.secret import ApiKey, MaskedHeader, as_key, mask
from ..core.status import TaskStatus, as_int, text
from ..core.version import USER_AGENT
from .budget import POLL, SUBMIT, RequestBudget
from .retry import RETRY_CODES, RetryPolicy
from .transport import TooLarge, Transport, read_capped

log = logging.getLogger("nanobanana_magic")

SUBMIT_PATH = "/api/v1/nanobanana/generate-2"
RECORD_INFO_PATH = "/api/v1/nanobanana/record-info"
CREDIT_PATH = "/api/v1/common/credit"

NO_KEY_MESSAGE = "no API key: set NANOBANANA_API_KEY"
MAY_EXIST = "the task may exist"
#: Content types of pages, not images: refused unless the bytes start like an image anyway.
#: Every other type (binary/octet-stream, application/binary, a wrong image type) is judged by the bytes.
NOT_IMAGES = ("text/html", "application/json", "text/plain", "application/xml", "text/xml")


class Connection:
    """Talks to the API. Thread-safe: the poller's workers share one connection."""

    def __init__(
        self,
        api_key: str | ApiKey | None = None,
        base_url: str | None = None,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        download_timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        max_json_bytes: int = 4 << 20,
        max_download_bytes: int = 128 << 20,
        pool_size: int = 16,
        budget: RequestBudget | None = None,
    ) -> None:
        self._key = as_key(api_key if api_key is not None else os.environ.get("NANOBANANA_API_KEY"))
        self.base_url = (base_url or os.environ.get("NANOBANANA_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.download_timeout = download_timeout
        self.retry = retry or RetryPolicy()
        self.max_json_bytes = max_json_bytes
        self.max_download_bytes = max_download_bytes
        self.budget = budget  # shared by every connection of the kernel; None: no ceiling
        self._session = Transport()
        adapter = HTTPAdapter(max_retries=self.retry.for_urllib3(), pool_connections=4, pool_maxsize=pool_size)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers["User-Agent"] = USER_AGENT

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, api_key={self.masked_key!r})"

    @property
    def has_key(self) -> bool:
        return self._key is not None

    @property
    def masked_key(self) -> str:
        return mask(self._key.reveal() if self._key else None)

    def close(self) -> None:
        self._session.close()

    # -- API calls -------------------------------------------------------

    def submit(self, request: GenerationRequest | dict) -> str:
        """POST generate-2; returns the task id. Never re-sends a request that may have arrived."""
        body = request.to_body() if isinstance(request, GenerationRequest) else dict(request)
        data = self._call("POST", SUBMIT_PATH, priority=SUBMIT, json=body)
        task_id = text(data.get("taskId")) if isinstance(data, dict) else None
        if not task_id:
            raise ServiceUnavailableError(f"the submit answer held no taskId; {MAY_EXIST}", hint="history")
        log.debug("submitted task %s", task_id)
        return task_id

    def record_info(self, task_id: str, *, priority: int = POLL) -> TaskStatus:
        """GET record-info for one task, parsed into a `TaskStatus`; `priority` orders it in the budget.

        A root-relative result URL (`/files/...`) is made absolute here, so the run log, captions
        and references only ever hold URLs that work as they are.
        """
        data = self._call("GET", RECORD_INFO_PATH, params={"taskId": task_id}, task_id=task_id, priority=priority)
        status = TaskStatus.from_data(task_id, data)
        if status.result_url and status.result_url != self.resolve_url(status.result_url):
            status = replace(status, result_url=self.resolve_url(status.result_url))
        return status

    def credits(self) -> float:
        """The remaining credit balance."""
        data = self._call("GET", CREDIT_PATH, priority=SUBMIT)  # a person is waiting for it
        try:
            return float(data)
        except (TypeError, ValueError):
            raise ServiceUnavailableError(f"the credit answer was not a number: {str(data)[:60]!r}") from None

    def resolve_url(self, url: str) -> str:
        """A result URL made absolute: one without a scheme (`/files/...`) is relative to the API's base URL."""
        if not url or urlsplit(url).scheme:
            return url
        return urljoin(self.base_url + "/", url)

    def download(self, url: str, *, task_id: str | None = None) -> bytes:
        """The bytes of a result image, checked to be whole. Sent without the Authorization header.

        Broken or refused-for-now answers are retried (`retry.retries` attempts in all); a 403 from
        the file host is retried once only: a CDN that refused twice will not change its mind in seconds.
        """
        url = self.resolve_url(url)
        attempts = max(1, self.retry.retries)
        failures = refusals = 0
        while True:
            try:
                data = self._fetch_image(url, task_id)
                check_image(data)
                return data
            except _Refused as exc:
                refusals += 1
                if refusals > 1:
                    raise DownloadError(
                        f"{exc}, twice; the task succeeded and the service keeps its image for a while",
                        task_id=task_id,
                    ) from None
                log.debug("file host refused %s (403); trying once more", _host(url))
                self.retry.pause(1)
            except (_RetryableDownload, CorruptImage) as exc:
                failures += 1
                if failures >= attempts:
                    raise DownloadError(f"{exc} (after {attempts} attempts)", task_id=task_id) from None
                self.retry.pause(failures, getattr(exc, "retry_after", None))

    # -- plumbing --------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        if self._key is None:
            raise AuthenticationError(NO_KEY_MESSAGE)
        return {"Authorization": MaskedHeader(f"Bearer {self._key.reveal()}"), "Accept": "application/json"}

    def _call(self, method: str, path: str, *, task_id: str | None = None, priority: int = POLL, **kwargs: Any) -> Any:
        """One API call: every attempt passes the request budget; retryable codes (HTTP or JSON) are retried."""
        headers = self._headers()
        url = self.base_url + path
        for attempt in range(1, self.retry.retries + 2):
            if self.budget is not None and not self.budget.acquire(priority):
                raise NetworkError("the connection was closed while a request waited for its turn", task_id=task_id)
            try:
                status, payload, retry_after = self._exchange(method, url, headers, task_id, **kwargs)
            except _BrokenAnswer as exc:
                # urllib3 retries until the headers arrive; an answer that breaks later is ours
                # to retry, and only for reads: a submit may have created its task.
                if method != "GET" or attempt > self.retry.retries:
                    raise NetworkError(str(exc), task_id=task_id) from None
                self.retry.pause(attempt)
                continue
            code = status if status != 200 else (as_int(payload.get("code")) or 500)
            if code == 200:
                if self.budget is not None:
                    self.budget.reward()
                return payload.get("data")
            if code == 429 and self.budget is not None:
                self.budget.penalize(retry_after)  # the whole kernel slows down, not just this request
            if code in RETRY_CODES and attempt <= self.retry.retries:
                # A JSON-coded 429 may carry Retry-After on an HTTP 200.
                delay = self.retry.delay(attempt, retry_after)
                log.debug("%s %s answered code %s; retrying in %.1f s", method, path, code, delay)
                time.sleep(delay)
                continue
            raise error_for_code(code, _message(payload), attempts=attempt, task_id=task_id)
        raise AssertionError("unreachable")

    def _exchange(
        self, method: str, url: str, headers: dict, task_id: str | None, **kwargs: Any
    ) -> tuple[int, dict, float | None]:
        """One HTTP exchange (urllib3 retries connection failures inside): the status, JSON object, Retry-After."""
        submit = method == "POST"
        try:
            response = self._session.urlopen(method, url, headers, self.timeout, **kwargs)
            with response:
                body = read_capped(response, self.max_json_bytes, seconds=self.timeout[1])
            status = response.status
        except requests.Timeout as exc:
            if submit and not _certainly_not_sent(exc):
                raise NetworkError(f"the submit timed out after it was sent; {MAY_EXIST}", hint="history") from None
            raise _BrokenAnswer(f"no answer from {_host(url)} within {self.timeout[1]:g} s") from None
        except TooLarge as exc:
            where = MAY_EXIST if submit else "not read"
            raise ServiceUnavailableError(
                f"the API's answer was too large ({exc}); {where}", hint="history" if submit else None
            ) from None
        except requests.exceptions.ProxyError:  # urllib3 raises it before the request leaves: nothing was sent
            raise NetworkError(_NO_PROXY.format(host=_host(url))) from None
        except requests.exceptions.SSLError as exc:
            if _untrusted(exc):  # the handshake failed: nothing was sent
                raise NetworkError(_UNTRUSTED.format(host=_host(url))) from None
            if submit:
                raise NetworkError(f"TLS with {_host(url)} broke after the submit was sent; {MAY_EXIST}") from None
            raise NetworkError(f"TLS with {_host(url)} failed; check the network or base_url") from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            if _certainly_not_sent(exc):
                raise NetworkError(f"could not connect to {_host(url)}; check the network or base_url") from None
            if submit:
                raise NetworkError(
                    f"the connection dropped after the submit was sent; {MAY_EXIST}", hint="history"
                ) from None
            raise _BrokenAnswer(f"the connection to {_host(url)} dropped before the answer arrived") from None
        except requests.RequestException as exc:
            raise NetworkError(f"request to {_host(url)} failed: {type(exc).__name__}") from None
        payload = _parse_json(body)
        if payload is None:
            first = body[:200].decode("utf-8", "replace").strip().splitlines()
            detail = f"HTTP {status}, body starts {first[0][:80]!r}" if first else f"HTTP {status}, empty body"
            if submit and status < 300:
                raise ServiceUnavailableError(f"the submit answer was not JSON ({detail}); {MAY_EXIST}", hint="history")
            if status < 400:
                raise ServiceUnavailableError(f"the API answered something that is not JSON ({detail})")
            payload = {"msg": detail}  # a proxy's error page: the status decides, the page explains
        elif status != 200 and not _message(payload):
            payload = {**payload, "msg": response.reason}
        return status, payload, _retry_after(response.headers.get("Retry-After"))

    def _fetch_image(self, url: str, task_id: str | None) -> bytes:
        if urlsplit(url).scheme not in ("http", "https"):
            raise DownloadError(f"the result URL is not http(s): {url[:80]!r}", task_id=task_id)
        try:
            # No Authorization header: the file host is not the API host.
            response = self._session.urlopen("GET", url, {}, (self.timeout[0], self.download_timeout))
            with response:
                if response.status == 403:
                    raise _Refused(f"the file host {_host(url)} refused the download ({_refusal(response)})")
                if response.status in (404, 410):
                    raise DownloadError(
                        f"the result URL answered {response.status}: it has expired or is gone",
                        task_id=task_id,
                        code=response.status,
                    )
                if response.status != 200:
                    raise _RetryableDownload(
                        f"the file host answered HTTP {response.status}",
                        _retry_after(response.headers.get("Retry-After")),
                    )
                ctype = response.headers.get("Content-Type", "").split(";")[0].strip().lower()

                def judge(head: bytes) -> None:
                    # The bytes decide (file hosts label results binary/octet-stream, or .jpeg for a
                    # PNG); a page that says it is HTML or JSON and does not start like an image is refused.
                    if ctype in NOT_IMAGES and image_format(head) == "bin":
                        raise DownloadError(f"the result URL gave {ctype}, not an image", task_id=task_id)

                # The timeout bounds each read; the whole image gets a few times that, not forever.
                return read_capped(response, self.max_download_bytes, seconds=4 * self.download_timeout, head=judge)
        except TooLarge as exc:
            raise DownloadError(f"the result image is too large ({exc})", task_id=task_id) from None
        except requests.exceptions.ProxyError:
            raise _RetryableDownload(_NO_PROXY.format(host=_host(url))) from None
        except requests.exceptions.SSLError as exc:
            if _untrusted(exc):  # not worth retrying: the certificate will not change in seconds
                raise DownloadError(_UNTRUSTED.format(host=_host(url)), task_id=task_id) from None
            raise _RetryableDownload(f"the image download broke off ({type(exc).__name__})") from None
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
        ) as exc:
            raise _RetryableDownload(f"the image download broke off ({type(exc).__name__})") from None


class _RetryableDownload(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Refused(Exception):
    pass


class _BrokenAnswer(NetworkError):
    """The answer to a request broke off after the headers (worth another try for a GET)."""


def _message(payload: dict) -> Any:
    """The service's explanation: `msg`, or `message` as the sibling endpoints send it."""
    return payload.get("msg") or payload.get("message")


def _refusal(response: BaseHTTPResponse) -> str:
    """ "HTTP 403", with the host's own error code when its (S3-style XML) body names one."""
    try:
        body = response.read(4096, decode_content=True) or b""
    except (OSError, urllib3_errors.HTTPError):  # the explanation is optional; the 403 is what counts
        body = b""
    found = re.search(rb"<Code>\s*([A-Za-z]{1,40})\s*</Code>", body)
    return f"HTTP 403 {found.group(1).decode()}" if found else "HTTP 403"


_UNTRUSTED = (
    "the TLS certificate of {host} is not trusted; if a proxy re-signs HTTPS here, "
    "set REQUESTS_CA_BUNDLE to its CA bundle"
)


_NO_PROXY = (
    "the proxy for {host} could not be reached or refused the connection; check HTTPS_PROXY / HTTP_PROXY, "
    "or list the host in NO_PROXY"
)


def _untrusted(exc: BaseException) -> bool:
    return "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate verify failed" in str(exc)


def _certainly_not_sent(exc: BaseException) -> bool:
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, (NewConnectionError, NameResolutionError))


def _parse_json(body: bytes) -> dict | None:
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def _retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks for (a number or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, Retry(0).parse_retry_after(value))
    except Exception:
        return None


def _host(url: str) -> str:
    return urlsplit(url).netloc
