"""The one retry policy: exponential backoff with jitter, used by urllib3, the JSON-code loop and downloads."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from urllib3.util.retry import Retry

#: HTTP statuses and JSON codes that a later identical request may not hit.
RETRY_CODES = frozenset({429, 455, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """`retries` tries after the first; the n-th waits about `backoff * 2**(n-1)` s, at most
    `backoff_max`, less a random part of up to `jitter` of it, so that many clients (or many
    tasks of one kernel) that failed together do not all come back in the same instant."""

    retries: int = 4
    backoff: float = 0.5
    backoff_max: float = 20.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.backoff_max < 0 or not 0 <= self.jitter <= 1:
            raise ValueError("retries, backoff and backoff_max must be >= 0 and jitter within 0..1")

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds before retry number `retry` (1 = the first); a server's Retry-After wins, capped."""
        if retry_after is not None:
            return min(max(0.0, retry_after), self.backoff_max)
        base = min(self.backoff * 2 ** max(0, retry - 1), self.backoff_max)
        return base * (1.0 - self.jitter * random.random())

    def pause(self, retry: int, retry_after: float | None = None) -> None:
        time.sleep(self.delay(retry, retry_after))

    def for_urllib3(self) -> Retry:
        """urllib3's retries on the same policy, for failures below HTTP (refused, reset, DNS).

        Statuses are retried by the connection's own loop, where every attempt passes the
        kernel's request budget and a 429 slows the whole kernel down.
        """
        return ApiRetry(
            total=self.retries + 2,
            connect=self.retries,
            read=self.retries,
            status=0,
            other=0,
            backoff_max=self.backoff_max,
            allowed_methods=frozenset({"GET", "POST"}),
            raise_on_status=False,
            raise_on_redirect=False,
            policy=self,
        )


class ApiRetry(Retry):
    """urllib3 retries, except a submit that may have reached the server.

    Connection failures (refused, DNS) are retried for every method: nothing arrived.
    A read error or timeout on POST is not: the task may exist. Waits follow `policy`.
    """

    def __init__(self, *args: Any, policy: RetryPolicy | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.policy = policy or RetryPolicy()

    def new(self, **kwargs: Any) -> ApiRetry:
        retry = super().new(**kwargs)
        retry.policy = self.policy
        return retry

    def increment(
        self,
        method: Any = None,
        url: Any = None,
        response: Any = None,
        error: Any = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> ApiRetry:
        if method == "POST" and error is not None and self._is_read_error(error):
            return Retry.increment(self.new(read=False), method, url, response, error, _pool, _stacktrace)
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def get_backoff_time(self) -> float:
        return self.policy.delay(len(self.history)) if self.history else 0.0

    def get_retry_after(self, response: Any) -> float | None:
        # A server asking for an hour must not park a poller worker for an hour.
        value = super().get_retry_after(response)
        return None if value is None else min(value, self.policy.backoff_max)
