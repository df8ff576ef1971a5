"""`Transport`: the pooled HTTP session under `Connection`, and reading bodies with limits.

A thousand-task batch makes thousands of status requests and a thousand downloads, and
`requests` spent half of each status request's CPU on what neither needs (preparing and
re-validating the URL, cookie jars, ~/.netrc, hooks, building a `Response`). So a request
goes straight to the urllib3 pool that requests' own adapter would pick for it, with the
adapter's retries and the environment's proxy and CA settings, and comes back as urllib3's
response. A redirect is handed back to requests and followed by its rules (the key is
dropped when the host changes).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import BaseHTTPResponse, HTTPConnectionPool, Timeout
from urllib3 import exceptions as urllib3_errors

#: Bytes of a download looked at before the rest is read (enough for any image signature).
HEAD_BYTES = 16


class TooLarge(Exception):
    pass


@dataclass
class _Route:
    """How requests would send to one origin: its adapter, TLS and proxy settings, the URL form."""

    adapter: HTTPAdapter
    template: requests.PreparedRequest  # a request to the origin, for the adapter's pool lookup
    verify: Any
    cert: Any
    proxies: dict[str, str]
    absolute: bool  # through an HTTP proxy the request line holds the whole URL
    _pool: HTTPConnectionPool | None = None

    def pool(self) -> HTTPConnectionPool:
        pool = self._pool
        if pool is not None and pool.pool is not None:
            return pool
        # Looked up again once closed (`Transport.close`): a task still polled on a connection the
        # session replaced (a new key, base URL or retries) goes on through a new pool.
        adapter, template = self.adapter, self.template
        if hasattr(adapter, "get_connection_with_tls_context"):  # requests >= 2.32
            pool = adapter.get_connection_with_tls_context(template, self.verify, self.proxies, self.cert)
        else:  # pragma: no cover - requests 2.30/2.31, run by `make test-oldest`
            pool = adapter.get_connection(str(template.url), self.proxies)
        adapter.cert_verify(pool, str(template.url), self.verify, self.cert)
        self._pool = pool
        return pool


class Transport(requests.Session):
    """A `requests.Session` that reads the environment's proxy and CA settings once per origin
    (requests scans every environment variable twice per request) and sends API calls and
    downloads (`urlopen`) straight to the pool its adapter would use."""

    def __init__(self) -> None:
        super().__init__()
        self._environment: dict[tuple, dict[str, Any]] = {}
        self._routes: dict[str, _Route] = {}

    def urlopen(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        timeout: tuple[float, float],
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> BaseHTTPResponse:
        """One request (an API call or a download), its body not yet read. Errors are requests' own, as
        `Session.request` raises them; `headers` go to the first host only, as with requests."""
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if params:
            query = urlencode(params)
            url, path = (f"{url}&{query}", f"{path}&{query}") if parts.query else (f"{url}?{query}", f"{path}?{query}")
        sent = {**self.headers, **headers}
        body = None
        if json is not None:
            body = _json_bytes(json)
            sent["Content-Type"] = "application/json"
            sent["Content-Length"] = str(len(body))
        route = self._route(f"{parts.scheme}://{parts.netloc}")
        try:
            response = route.pool().urlopen(
                method,
                url if route.absolute else path,
                body=body,
                headers=sent,
                redirect=False,
                assert_same_host=False,
                preload_content=False,
                decode_content=False,
                retries=route.adapter.max_retries,
                timeout=Timeout(connect=timeout[0], read=timeout[1]),
            )
        except Exception as exc:
            raise _as_requests_error(exc) from None
        if response.get_redirect_location():
            return self._follow(response, route, method, url, sent, body, timeout)
        return response

    def _follow(
        self,
        first: BaseHTTPResponse,
        route: _Route,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None,
        timeout: tuple[float, float],
    ) -> BaseHTTPResponse:
        """The answer at the end of a redirect, each hop a full requests `send`."""
        prepared = requests.Request(method, url, headers=headers, data=body).prepare()
        response = route.adapter.build_response(prepared, first)
        sending = {"timeout": timeout, "verify": route.verify, "cert": route.cert}
        *_, last = (response, *self.resolve_redirects(response, prepared, stream=True, proxies={}, **sending))
        return last.raw

    def _route(self, origin: str) -> _Route:
        route = self._routes.get(origin)
        if route is None:
            template = requests.Request("GET", origin + "/").prepare()
            settings = self.merge_environment_settings(origin + "/", {}, True, None, None)
            adapter = self.get_adapter(origin + "/")
            if not isinstance(adapter, HTTPAdapter):  # pragma: no cover - a custom adapter was mounted
                raise TypeError(f"API calls need requests' HTTPAdapter, not {type(adapter).__name__}")
            proxies = settings["proxies"]
            absolute = adapter.request_url(template, proxies) != template.path_url
            route = _Route(adapter, template, settings["verify"], settings["cert"], proxies, absolute)
            self._routes[origin] = route
        return route

    def close(self) -> None:
        """Close the pools (and their sockets) of every origin; a later request opens new ones."""
        for route in self._routes.values():
            if route._pool is not None:
                route._pool.close()
        super().close()

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        if proxies:  # explicit proxies: requests' own merging, as always
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(str(url))
        key = (parts.scheme, parts.netloc, stream, verify, cert)
        known = self._environment.get(key)
        if known is None:
            known = self._environment[key] = super().merge_environment_settings(url, {}, stream, verify, cert)
        return {**known, "proxies": dict(known["proxies"])}


def _json_bytes(value: Any) -> bytes:
    # As requests encodes a `json=` body: no NaN, which is not JSON.
    return json.dumps(value, allow_nan=False).encode("utf-8")


#: As requests' `HTTPAdapter.send` names urllib3's errors (which `Connection` tells apart); first match wins.
_GAVE_UP_BECAUSE = (  # the reason of a MaxRetryError; any other: ConnectionError
    (urllib3_errors.NewConnectionError, requests.ConnectionError),  # a subclass of ConnectTimeoutError
    (urllib3_errors.ConnectTimeoutError, requests.exceptions.ConnectTimeout),
    (urllib3_errors.ResponseError, requests.exceptions.RetryError),
    (urllib3_errors.ProxyError, requests.exceptions.ProxyError),
    (urllib3_errors.SSLError, requests.exceptions.SSLError),
)
_RAISED = (
    (urllib3_errors.ProxyError, requests.exceptions.ProxyError),
    (urllib3_errors.SSLError, requests.exceptions.SSLError),
    (urllib3_errors.ReadTimeoutError, requests.exceptions.ReadTimeout),
    ((urllib3_errors.ProtocolError, urllib3_errors.ClosedPoolError, OSError), requests.ConnectionError),
    (urllib3_errors.InvalidHeader, requests.exceptions.InvalidHeader),
    (urllib3_errors.HTTPError, requests.RequestException),  # requests lets these through; `Connection` names them
)


def _as_requests_error(exc: Exception) -> Exception:
    gave_up = isinstance(exc, urllib3_errors.MaxRetryError)
    cause = exc.reason if isinstance(exc, urllib3_errors.MaxRetryError) else exc
    for theirs, ours in _GAVE_UP_BECAUSE if gave_up else _RAISED:
        if isinstance(cause, theirs):
            return ours(exc)
    return requests.ConnectionError(exc) if gave_up else exc


def read_capped(
    response: BaseHTTPResponse, cap: int, seconds: float | None = None, head: Callable[[bytes], None] | None = None
) -> bytes:
    """The body, refusing more than `cap` bytes or (a server dribbling forever) more than `seconds`.

    `head` sees the first `HEAD_BYTES` bytes (or the whole body, if shorter) before the rest is read.
    """
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > cap:
        if head is not None:  # a page that is not what was asked for is named as such, not as "too large"
            head(next(iter(_pieces(response)), b"")[:HEAD_BYTES])
        raise TooLarge(f"{int(declared):,} bytes, limit {cap:,}")
    deadline = None if seconds is None else time.monotonic() + seconds
    chunks, total = [], 0
    for chunk in _pieces(response):
        total += len(chunk)
        if total > cap:
            raise TooLarge(f"over {cap:,} bytes")
        if deadline is not None and time.monotonic() > deadline:
            raise requests.exceptions.ReadTimeout(f"the body was still arriving after {seconds:g} s")
        chunks.append(chunk)
        if head is not None and total >= HEAD_BYTES:
            head(b"".join(chunks)[:HEAD_BYTES])
            head = None
    body = b"".join(chunks)
    if head is not None:
        head(body)
    return body


def _pieces(response: BaseHTTPResponse) -> Iterator[bytes]:
    """The (decoded) body as it arrives, one socket read at a time.

    Reading n bytes blocks until n have come, so a server dribbling a byte per second would
    hold a deadline checked between chunks off for hours; `read1` returns whatever one read
    brought. urllib3's errors are mapped as requests' `iter_content` maps them.
    """
    while True:
        try:
            piece = response.read1(1 << 16, decode_content=True)
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
