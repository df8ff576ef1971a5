"""`NanoBananaClient`: the REST calls of API.md over one pooled `requests.Session`."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Sequence
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import exceptions as urllib3_errors
from urllib3.exceptions import NameResolutionError, NewConnectionError
from urllib3.util.retry import Retry

from ..core.errors import (AuthenticationError, DownloadError, NetworkError,
                     ServiceUnavailableError, error_for_code)
from ..core.params import DEFAULT_BASE_URL, GenerationRequest
from ..core.secret import ApiKey, MaskedHeader, as_key, mask

if TYPE_CHECKING:
    from ..runtime.generation import Generation

log = logging.getLogger("nanobanana_magic")

SUBMIT_PATH = "/api/v1/nanobanana/generate-2"
RECORD_INFO_PATH = "/api/v1/nanobanana/record-info"
CREDIT_PATH = "/api/v1/common/credit"

RETRY_CODES = frozenset({429, 455, 500, 502, 503, 504})
NO_KEY_MESSAGE = ("no API key: set NANOBANANA_API_KEY, run %nanobanana login, "
                  "or %config NanoBananaMagics.api_key = '...'")
MAY_EXIST = "the task may exist, see %nanobanana history"

FLAG_STATES = {0: "pending", 1: "succeeded", 2: "failed", 3: "failed"}
FLAG_NAMES = {0: "GENERATING", 1: "SUCCESS", 2: "CREATE_TASK_FAILED", 3: "GENERATE_FAILED"}


@dataclass(frozen=True)
class TaskStatus:
    """One record-info answer, parsed: `state` is "pending", "succeeded" or "failed"."""

    task_id: str
    state: str
    flag: int | None = None
    result_url: str | None = None
    error_code: Any = None
    error_message: str | None = None
    created: str | None = None
    completed: str | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def done(self) -> bool:
        return self.state != "pending"

    @property
    def flag_name(self) -> str:
        return FLAG_NAMES.get(self.flag, "UNKNOWN") if self.flag is not None else "UNKNOWN"

    @classmethod
    def from_data(cls, task_id: str, data: Any) -> "TaskStatus":
        """Parse `data` of record-info; nulls, empty strings, string flags and extra fields are fine."""
        data = data if isinstance(data, dict) else {}
        flag = _as_int(data.get("successFlag"))
        response = data.get("response") if isinstance(data.get("response"), dict) else {}
        url = _text(response.get("resultImageUrl")) or _text(response.get("originImageUrl"))
        state = FLAG_STATES.get(flag, "pending")
        if state == "succeeded" and not url:
            state = "pending"  # success reported before the URL: ask again
        return cls(task_id=_text(data.get("taskId")) or task_id, state=state, flag=flag,
                   result_url=url, error_code=data.get("errorCode") or None,
                   error_message=_text(data.get("errorMessage")),
                   created=_text(data.get("createTime")), completed=_text(data.get("completeTime")),
                   raw=data)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def _as_int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


class _ApiRetry(Retry):
    """urllib3 retries, except a submit that may have reached the server.

    Connection failures (refused, DNS) are retried for every method: nothing
    arrived. A read error or timeout on POST is not: the task may exist.
    """

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        if method == "POST" and error is not None and self._is_read_error(error):
            return Retry.increment(self.new(read=False), method, url, response, error, _pool, _stacktrace)
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def get_retry_after(self, response):
        # A server asking for an hour must not park a poller worker for an hour.
        value = super().get_retry_after(response)
        return None if value is None else min(value, self.backoff_max)


def _certainly_not_sent(exc: BaseException) -> bool:
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, (NewConnectionError, NameResolutionError))


class NanoBananaClient:
    """Talks to the API. Thread-safe: the poller's workers share one client.

    `api_key` and `base_url` default to `NANOBANANA_API_KEY` / `NANOBANANA_BASE_URL`.
    """

    def __init__(self, api_key: "str | ApiKey | None" = None, base_url: str | None = None, *,
                 connect_timeout: float = 5.0, read_timeout: float = 30.0,
                 download_timeout: float = 120.0, retries: int = 4, backoff: float = 0.5,
                 backoff_max: float = 20.0, max_json_bytes: int = 4 << 20,
                 max_download_bytes: int = 128 << 20, pool_size: int = 16) -> None:
        self._key = as_key(api_key if api_key is not None else os.environ.get("NANOBANANA_API_KEY"))
        self.base_url = (base_url or os.environ.get("NANOBANANA_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.download_timeout = download_timeout
        self.retries = retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.max_json_bytes = max_json_bytes
        self.max_download_bytes = max_download_bytes
        self._session = requests.Session()
        retry = _ApiRetry(total=retries + 2, connect=retries, read=retries, status=retries,
                          other=0, backoff_factor=backoff, backoff_max=backoff_max,
                          status_forcelist=RETRY_CODES, allowed_methods=frozenset({"GET", "POST"}),
                          respect_retry_after_header=True, raise_on_status=False,
                          raise_on_redirect=False)
        adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=pool_size)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers["User-Agent"] = "nanobanana-magic/0.1"
        self._poller: Any = None  # for generate_many, made on first use
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"NanoBananaClient(base_url={self.base_url!r}, api_key={mask(self._key.reveal() if self._key else None)!r})"

    @property
    def has_key(self) -> bool:
        return self._key is not None

    @property
    def masked_key(self) -> str:
        return mask(self._key.reveal() if self._key else None)

    def close(self) -> None:
        if self._poller is not None:
            self._poller.stop()
        self._session.close()

    # -- API calls -------------------------------------------------------

    def submit(self, request: GenerationRequest | dict) -> str:
        """POST generate-2; returns the task id. Never re-sends a request that may have arrived."""
        body = request.to_body() if isinstance(request, GenerationRequest) else dict(request)
        data = self._call("POST", SUBMIT_PATH, json=body)
        task_id = _text(data.get("taskId")) if isinstance(data, dict) else None
        if not task_id:
            raise ServiceUnavailableError(f"the submit answer held no taskId; {MAY_EXIST}")
        log.debug("submitted task %s", task_id)
        return task_id

    def record_info(self, task_id: str) -> TaskStatus:
        """GET record-info for one task, parsed into a `TaskStatus`."""
        data = self._call("GET", RECORD_INFO_PATH, params={"taskId": task_id})
        return TaskStatus.from_data(task_id, data)

    def credits(self) -> float:
        """The remaining credit balance."""
        data = self._call("GET", CREDIT_PATH)
        try:
            return float(data)
        except (TypeError, ValueError):
            raise ServiceUnavailableError(f"the credit answer was not a number: {str(data)[:60]!r}") from None

    def generate(self, request: GenerationRequest, *, timeout: float = 600.0) -> "Generation":
        """Submit and return a pending `Generation`; `.wait()` polls until it ends."""
        from ..runtime.generation import Generation

        task_id = self.submit(request)
        return Generation(task_id, request.to_body(), client=self, timeout=timeout)

    def generate_many(self, requests: "Sequence[GenerationRequest | dict | str]", *, concurrency: int = 4,
                      progress: bool = True, timeout: float = 600.0) -> "list[Generation]":
        """Generate many images, at most `concurrency` pending at once; results in input order.

        One progress bar (a widget in a notebook, a line in a terminal). Rate limits slow the batch
        down instead of failing it; a request the API refuses becomes a failed Generation.
        """
        from ..runtime.batch import as_requests, run_batch, submit_or_record_failure
        from ..runtime.poller import Poller

        with self._lock:
            if self._poller is None:
                self._poller = Poller()
            poller = self._poller

        def submit(request: GenerationRequest) -> "Generation":
            generation = self.generate(request, timeout=timeout)
            poller.track(generation)
            return generation

        return run_batch(as_requests(requests), submit_or_record_failure(submit),
                         concurrency=concurrency, progress=progress)

    def download(self, url: str) -> bytes:
        """The bytes of a result image, checked to decode. Sent without the Authorization header."""
        attempts = max(1, self.retries)
        for attempt in range(1, attempts + 1):
            try:
                data = self._fetch_image(url)
                check_image(data)
                return data
            except _RetryableDownload as exc:
                if attempt == attempts:
                    raise DownloadError(f"{exc} (after {attempts} attempts)") from None
                time.sleep(min(self.backoff * 2 ** (attempt - 1), self.backoff_max))
        raise AssertionError("unreachable")

    # -- plumbing --------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        if self._key is None:
            raise AuthenticationError(NO_KEY_MESSAGE)
        return {"Authorization": MaskedHeader(f"Bearer {self._key.reveal()}"), "Accept": "application/json"}

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = self._headers()
        url = self.base_url + path
        for attempt in range(1, self.retries + 2):
            try:
                payload, attempts, retry_after = self._exchange(method, url, headers, **kwargs)
            except _BrokenAnswer as exc:
                # urllib3 retries until the headers arrive; an answer that breaks later is ours
                # to retry, and only for reads: a submit may have created its task.
                if method != "GET" or attempt > self.retries:
                    raise NetworkError(str(exc)) from None
                time.sleep(min(self.backoff * 2 ** (attempt - 1), self.backoff_max))
                continue
            code = _as_int(payload.get("code"))
            if code == 200:
                return payload.get("data")
            code = code or 500
            if code in RETRY_CODES and attempt <= self.retries:
                delay = min(self.backoff * 2 ** (attempt - 1), self.backoff_max)
                if retry_after is not None:  # a JSON-coded 429 may carry Retry-After on an HTTP 200
                    delay = min(retry_after, self.backoff_max)
                log.debug("%s %s answered code %s; retrying in %.1f s", method, path, code, delay)
                time.sleep(delay)
                continue
            raise error_for_code(code, payload.get("msg"), attempts=max(attempt, attempts))
        raise AssertionError("unreachable")

    def _exchange(self, method: str, url: str, headers: dict, **kwargs: Any) -> tuple[dict, int, float | None]:
        """One HTTP exchange (urllib3 retries inside); returns the JSON object, attempt count and Retry-After."""
        submit = method == "POST"
        try:
            response = self._session.request(method, url, headers=headers, timeout=self.timeout,
                                             stream=True, **kwargs)
            with response:
                body = _read_capped(response, self.max_json_bytes, seconds=self.timeout[1])
        except requests.Timeout as exc:
            if submit and not _certainly_not_sent(exc):
                raise NetworkError(f"the submit timed out after it was sent; {MAY_EXIST}") from None
            raise _BrokenAnswer(f"no answer from {_host(url)} within {self.timeout[1]:g} s") from None
        except _TooLarge as exc:
            raise ServiceUnavailableError(f"the API's answer was too large ({exc}); {MAY_EXIST if submit else 'not read'}") from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            if _certainly_not_sent(exc):
                raise NetworkError(f"could not connect to {_host(url)}; check the network or base_url") from None
            if submit:
                raise NetworkError(f"the connection dropped after the submit was sent; {MAY_EXIST}") from None
            raise _BrokenAnswer(f"the connection to {_host(url)} dropped before the answer arrived") from None
        except requests.RequestException as exc:
            raise NetworkError(f"request to {_host(url)} failed: {type(exc).__name__}") from None
        retries = getattr(response.raw, "retries", None)
        attempts = len(retries.history) + 1 if retries is not None else 1
        payload = _parse_json(body)
        if payload is None:
            first = body[:200].decode("utf-8", "replace").strip().splitlines()
            detail = f"HTTP {response.status_code}, body starts {first[0][:80]!r}" if first else f"HTTP {response.status_code}, empty body"
            if submit and response.status_code < 300:
                raise ServiceUnavailableError(f"the submit answer was not JSON ({detail}); {MAY_EXIST}")
            if response.status_code >= 400:
                raise error_for_code(response.status_code, detail, attempts=attempts)
            raise ServiceUnavailableError(f"the API answered something that is not JSON ({detail})")
        if response.status_code != 200:  # urllib3 has already retried what was worth retrying
            raise error_for_code(response.status_code, payload.get("msg") or response.reason, attempts=attempts)
        return payload, attempts, _retry_after(response.headers.get("Retry-After"))

    def _fetch_image(self, url: str) -> bytes:
        if urlsplit(url).scheme not in ("http", "https"):
            raise DownloadError(f"the result URL is not http(s): {url[:80]!r}")
        try:
            # No Authorization header: the file host is not the API host.
            response = self._session.get(url, timeout=(self.timeout[0], self.download_timeout), stream=True)
            with response:
                if response.status_code in (403, 404, 410):
                    raise DownloadError(f"the result URL answered {response.status_code}: it has expired or is gone; "
                                        "run %nanobanana fetch TASK_ID to ask the API again")
                if response.status_code != 200:
                    raise _RetryableDownload(f"the file host answered HTTP {response.status_code}")
                ctype = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if not ctype.startswith("image/") and ctype not in ("application/octet-stream", ""):
                    raise DownloadError(f"the result URL gave {ctype}, not an image")
                # The timeout bounds each read; the whole image gets a few times that, not forever.
                return _read_capped(response, self.max_download_bytes, seconds=4 * self.download_timeout)
        except _TooLarge as exc:
            raise DownloadError(f"the result image is too large ({exc})") from None
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError) as exc:
            raise _RetryableDownload(f"the image download broke off ({type(exc).__name__})") from None


class _RetryableDownload(Exception):
    pass


class _BrokenAnswer(NetworkError):
    """The answer to a request broke off after the headers (worth another try for a GET)."""


class _TooLarge(Exception):
    pass


def _read_capped(response: requests.Response, cap: int, seconds: float | None = None) -> bytes:
    """The body, refusing more than `cap` bytes or (a server dribbling forever) more than `seconds`."""
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise _TooLarge(f"{int(declared):,} bytes, limit {cap:,}")
    deadline = None if seconds is None else time.monotonic() + seconds
    chunks, total = [], 0
    for chunk in _pieces(response):
        total += len(chunk)
        if total > cap:
            raise _TooLarge(f"over {cap:,} bytes")
        if deadline is not None and time.monotonic() > deadline:
            raise requests.exceptions.ReadTimeout(f"the body was still arriving after {seconds:g} s")
        chunks.append(chunk)
    return b"".join(chunks)


def _pieces(response: requests.Response) -> Iterator[bytes]:
    """The (decoded) body as it arrives, one socket read at a time.

    `iter_content(n)` blocks until n bytes have come, so a server dribbling a byte per
    second would hold a deadline checked between chunks off for hours; `read1` returns
    whatever one read brought. urllib3's errors are mapped as `iter_content` maps them.
    """
    read1 = getattr(response.raw, "read1", None)
    if read1 is None:
        yield from response.iter_content(1 << 16)
        return
    while True:
        try:
            piece = read1(1 << 16, decode_content=True)
        except urllib3_errors.ReadTimeoutError as exc:
            raise requests.exceptions.ReadTimeout(str(exc)) from None
        except urllib3_errors.ProtocolError as exc:
            raise requests.exceptions.ChunkedEncodingError(str(exc)) from None
        except urllib3_errors.DecodeError as exc:
            raise requests.exceptions.ContentDecodingError(str(exc)) from None
        except urllib3_errors.SSLError as exc:
            raise requests.exceptions.SSLError(str(exc)) from None
        if not piece:
            return
        yield piece


def _parse_json(body: bytes) -> dict | None:
    import json

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
    except Exception:  # noqa: BLE001 - urllib3 raises InvalidHeader; a bad header means "no advice"
        return None


def _host(url: str) -> str:
    return urlsplit(url).netloc


#: The API's largest result (4K) has about 16.8 million pixels. Pillow's own bomb limit lets
#: through images that decode to ~0.7 GB; far bigger than any real result is refused undecoded.
MAX_RESULT_PIXELS = 64 * 1024 * 1024


def check_image(data: bytes, max_pixels: int = MAX_RESULT_PIXELS) -> None:
    """Prove the bytes are a whole image without decoding the pixels; refuses pixel counts no result has.

    PNG: every chunk's CRC up to IEND (Pillow's verify). JPEG: a valid header and the end-of-image
    marker. Others are decoded. The preview decodes the image once anyway, off the main thread.
    """
    from io import BytesIO

    from PIL import Image

    try:
        with Image.open(BytesIO(data)) as image:
            if image.width * image.height > max_pixels:
                raise DownloadError(f"the result image has too many pixels to decode safely "
                                    f"({image.width}x{image.height}, limit {max_pixels:,})")
            if image.format == "PNG":
                image.verify()
            elif image.format == "JPEG":
                if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
                    raise OSError("JPEG without its end-of-image marker")
            else:
                image.load()
    except Image.DecompressionBombError as exc:
        raise DownloadError(f"the result image has too many pixels to decode safely ({exc.args[0][:80]})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise _RetryableDownload(f"the result image is truncated or corrupt ({type(exc).__name__})") from None
