"""`NanoBananaClient`: the API for Python code, a `Connection` plus `generate` and `generate_many`."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..core.params import GenerationRequest
from ..core.secret import ApiKey
from ..core.status import TaskStatus
from ..http.connection import Connection
from ..http.retry import RetryPolicy
from ..runtime.generation import Generation, TaskRules

if TYPE_CHECKING:
    from ..runtime.batch import OnProgress
    from ..runtime.poller import Poller


class NanoBananaClient:
    """Talks to the API. Thread-safe. `api_key` and `base_url` default to `NANOBANANA_API_KEY` /
    `NANOBANANA_BASE_URL`. No run log, no cache: for those use `nanobanana_magic.generate_many`."""

    def __init__(
        self,
        api_key: str | ApiKey | None = None,
        base_url: str | None = None,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        download_timeout: float = 120.0,
        retries: int = 4,
        backoff: float = 0.5,
        backoff_max: float = 20.0,
        max_json_bytes: int = 4 << 20,
        max_download_bytes: int = 128 << 20,
        pool_size: int = 16,
    ) -> None:
        self.connection = Connection(
            api_key,
            base_url,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            download_timeout=download_timeout,
            retry=RetryPolicy(retries, backoff, backoff_max),
            max_json_bytes=max_json_bytes,
            max_download_bytes=max_download_bytes,
            pool_size=pool_size,
        )
        self._poller: Poller | None = None  # for generate_many, made on first use
        self._lock = threading.Lock()  # guards _poller

    def __repr__(self) -> str:
        return f"NanoBananaClient(base_url={self.base_url!r}, api_key={self.masked_key!r})"

    @property
    def base_url(self) -> str:
        return self.connection.base_url

    @property
    def has_key(self) -> bool:
        return self.connection.has_key

    @property
    def masked_key(self) -> str:
        return self.connection.masked_key

    def close(self) -> None:
        if self._poller is not None:
            self._poller.stop()
        self.connection.close()

    def submit(self, request: GenerationRequest | dict) -> str:
        """POST generate-2; returns the task id. Never re-sends a request that may have arrived."""
        return self.connection.submit(request)

    def record_info(self, task_id: str) -> TaskStatus:
        """GET record-info for one task."""
        return self.connection.record_info(task_id)

    def credits(self) -> float:
        """The remaining credit balance."""
        return self.connection.credits()

    def download(self, url: str) -> bytes:
        """The bytes of a result image, checked to be whole; sent without the Authorization header."""
        return self.connection.download(url)

    def generate(self, request: GenerationRequest, *, timeout: float = 600.0) -> Generation:
        """Submit and return a pending `Generation`; `.wait()` polls until it ends."""
        task_id = self.submit(request)
        return Generation(task_id, request.to_body(), api=self.connection, rules=TaskRules(timeout=timeout))

    def generate_many(
        self,
        requests: Sequence[GenerationRequest | dict | str],
        *,
        concurrency: int = 4,
        timeout: float = 600.0,
        on_progress: OnProgress | None = None,
    ) -> list[Generation]:
        """Generate many images, at most `concurrency` pending at once; results in input order.

        Rate limits slow the batch down instead of failing it; a request the API refuses becomes
        a failed Generation. `on_progress` hears the counts after every change.
        """
        from ..runtime.batch import as_requests, run_batch, submit_or_record_failure
        from ..runtime.poller import Poller

        with self._lock:
            if self._poller is None:
                self._poller = Poller(workers=2)
            poller = self._poller

        def submit(request: GenerationRequest) -> Generation:
            generation = self.generate(request, timeout=timeout)
            poller.track(generation)
            return generation

        return run_batch(
            as_requests(requests), submit_or_record_failure(submit), concurrency=concurrency, on_progress=on_progress
        )
