"""`Session`: the per-kernel state the magics and the panel share (one code path for both).

It owns the client (rebuilt when the key or base URL changes), the store for the
output directory, the poller, and this kernel's generations.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from ..core.errors import NanoBananaError
from ..runtime.generation import DEFAULT_SCHEDULE, Generation
from ..core.params import GenerationRequest
from ..runtime.poller import Poller
from ..core.secret import ApiKey
from ..runtime.store import RunEntry, Store

if TYPE_CHECKING:
    from .client import NanoBananaClient


class Settings(Protocol):
    """What the session reads from the configuration (NanoBananaMagics provides it)."""

    api_key: ApiKey | None
    base_url: str
    output_dir: str
    timeout: float
    cache: bool
    poll_schedule: Sequence[Sequence[float]]
    workers: int


class Session:
    """Submits, tracks and recovers generations for one kernel."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.generations: dict[str, Generation] = {}  # this kernel's, in submit order
        self._client: "NanoBananaClient | None" = None
        self._client_key: tuple | None = None
        self._poller: Poller | None = None
        self._store: Store | None = None
        self._lock = threading.Lock()  # guards creating _client, _store and _poller

    # -- parts built on first use (keeps %load_ext fast) ---------------------

    @property
    def client(self) -> "NanoBananaClient":
        from .client import NanoBananaClient  # requests loads on first use, not at %load_ext

        key = (self.settings.api_key, self.settings.base_url)
        with self._lock:
            if self._client is None or self._client_key != key:
                # Optional timeouts/retries/backoff for the client (tests, slow links); absent on the magics.
                options = dict(getattr(self.settings, "client_options", None) or {})
                self._client = NanoBananaClient(api_key=self.settings.api_key or "", base_url=self.settings.base_url,
                                                **options)
                self._client_key = key
            return self._client

    @property
    def store(self) -> Store:
        """The store of the configured output_dir (kept while the setting stays the same)."""
        path = Path(self.settings.output_dir).expanduser()
        with self._lock:
            if self._store is None or self._store.output_dir != path:
                self._store = Store(path)
            return self._store

    @property
    def poller(self) -> Poller:
        with self._lock:
            if self._poller is None:
                self._poller = Poller(workers=self.settings.workers)
            return self._poller

    def close(self) -> None:
        """Stop the threads (on %unload_ext). Pending tasks stay in the run log."""
        if self._poller is not None:
            self._poller.stop()
        if self._client is not None:
            self._client.close()

    # -- the one way in ------------------------------------------------------

    def submit(self, request: GenerationRequest, *, force: bool = False,
               timeout: float | None = None) -> Generation:
        """A cached generation, or a new task: submitted, logged, then polled in the background."""
        body = request.to_body()
        store = self.store
        _check_output_dir(store.output_dir)  # before paying: a task whose id cannot be logged is at risk
        if self.settings.cache and not force:
            entry = store.find_cached(body)
            if entry is not None:
                return self._remember(self._from_entry(entry, store, cached=True))
        client = self.client
        task_id = client.submit(request)
        # The task's clock starts when the service answered: polls are timed from here.
        submitted_at = time.time()
        store.record_submit(task_id, body, submitted_at)  # before any polling: a paid task is never lost
        generation = Generation(task_id, body, client=client, submitted_at=submitted_at, sink=store,
                                timeout=self.settings.timeout if timeout is None else timeout,
                                schedule=self._schedule())
        self._remember(generation)
        self.poller.track(generation)
        return generation

    def generate_many(self, requests: Sequence[Any], *, concurrency: int = 4, force: bool = False,
                      progress: bool = True) -> list[Generation]:
        """A batch through this session (cache, run log, poller); Generations in input order."""
        from ..runtime.batch import as_requests, run_batch, submit_or_record_failure

        submit = submit_or_record_failure(lambda request: self.submit(request, force=force))
        return run_batch(as_requests(requests), submit, concurrency=concurrency, progress=progress)

    def fetch(self, task_id: str) -> Generation:
        """A task's result without submitting: from the saved file, else record-info and download."""
        task_id = task_id.strip()
        known = self.generations.get(task_id)
        if known is not None and known.status == "succeeded":
            return known
        store = self.store
        entry = store.entry(task_id)
        if entry is not None and entry.file and store.file_path(entry).is_file():
            return self._remember(self._from_entry(entry, store, cached=False))
        request = entry.request if entry is not None else {}
        generation = Generation(task_id, request, client=self.client, sink=store, timeout=None,
                                submitted_at=entry.submitted_at if entry and entry.submitted_at else time.time(),
                                schedule=self._schedule())
        generation.step()
        if entry is None and generation.request:  # known to the API: keep it in this directory's log
            store.record_submit(task_id, generation.request, generation.submitted_at)
        return self._remember(generation)

    def track(self, generation: Generation) -> None:
        """Keep polling a pending generation in the background (after fetch, say)."""
        if not generation.done:
            self.poller.track(generation)

    def pending(self) -> list[Generation]:
        return [g for g in self.generations.values() if not g.done]

    def resolve(self, task_ids: Sequence[str]) -> list[Generation]:
        """This kernel's generations by id (all pending ones when none are named)."""
        if not task_ids:
            return self.pending()
        missing = [t for t in task_ids if t not in self.generations]
        if missing:
            raise NanoBananaError(f"task {missing[0]} is not running in this kernel; "
                                  f"use %nanobanana fetch {missing[0]}")
        return [self.generations[t] for t in task_ids]

    # -- helpers -------------------------------------------------------------

    def _schedule(self) -> Sequence[Sequence[float]]:
        return getattr(self.settings, "poll_schedule", None) or DEFAULT_SCHEDULE

    def _remember(self, generation: Generation) -> Generation:
        self.generations[generation.task_id] = generation
        return generation

    @staticmethod
    def _from_entry(entry: RunEntry, store: Store, *, cached: bool) -> Generation:
        return Generation.from_file(entry.task_id, entry.request, store.file_path(entry), url=entry.url,
                                    submitted_at=entry.submitted_at, finished_at=entry.finished_at,
                                    cached=cached)


def _check_output_dir(path: Path) -> None:
    """Create `output_dir` if needed; a one-line error when it cannot hold the run log and images."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    else:
        if os.access(path, os.W_OK | os.X_OK):
            return
        reason = "not writable"
    raise NanoBananaError(f"output_dir {str(path)!r} cannot be used ({reason}); nothing was submitted. "
                          "Set %config NanoBananaMagics.output_dir = '...' or NANOBANANA_OUTPUT_DIR")
