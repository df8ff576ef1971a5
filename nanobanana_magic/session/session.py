"""`Session`: the per-kernel state the magics, the panel and the Python API share (one code path for all).

It owns the connection (rebuilt when the key, base URL or retry settings change), the store
of the output directory, the one poller, and a locked registry of this kernel's generations.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import InvalidRequestError, NanoBananaError
from ..core.params import GenerationRequest, request_key
from ..core.schedule import (
    LAG_COSTS,
    FixedSchedule,
    LearnedSchedule,
    LoadAwareSchedule,
    PollSchedule,
    lag_cost_for,
)
from ..http.budget import RequestBudget
from ..runtime.generation import Generation, TaskRules
from ..runtime.poller import Poller
from ..runtime.store import RunEntry, Store
from .checks import check_callback, check_output_dir, check_timeout, file_state
from .registry import Registry
from .reuse import SharedResult, forgotten, from_entry, restore
from .settings import Settings
from .sources import PLANNED, PlannedUploads, batch_items, cache_identities, split_sources, with_references
from .spending import Prices, Spending

if TYPE_CHECKING:
    from ..http.connection import Connection
    from ..runtime.batch import OnProgress
    from ..runtime.references import Reference
    from ..runtime.uploads import Uploader

OnSubmit = Callable[[int, Generation], None]


class Session:
    """Submits, tracks and recovers generations for one kernel."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.generations = Registry()
        self._connection: Connection | None = None
        self._connection_key: tuple | None = None
        self._poller: Poller | None = None
        self._store: Store | None = None
        self._schedules: dict[tuple[Path, str], tuple[int, PollSchedule]] = {}  # learned, by (dir, resolution)
        self._uploader: Uploader | None = None
        self._uploader_key: tuple | None = None
        self._lock = threading.Lock()  # guards creating _connection, _store, _poller, _uploader and _schedules
        self.budget = RequestBudget(self.settings.max_requests_per_second)  # every API request of the kernel
        self.spending = Spending()  # the max_credits budget

    def update(self, settings: Settings) -> None:
        """Use new settings from now on; parts built from changed ones are rebuilt on next use."""
        self.settings = settings
        self.budget.rate = settings.max_requests_per_second

    # -- parts built on first use (keeps %load_ext fast) ---------------------

    @property
    def connection(self) -> Connection:
        from ..http.connection import Connection  # requests loads on first use, not at %load_ext
        from ..http.retry import RetryPolicy

        settings = self.settings
        with self._lock:
            if self._connection is None or self._connection_key != settings.connection_key:
                retry = RetryPolicy(settings.retries, settings.retry_backoff, settings.retry_backoff_max)
                self._connection = Connection(
                    api_key=settings.api_key or "",
                    base_url=settings.base_url,
                    connect_timeout=settings.connect_timeout,
                    read_timeout=settings.read_timeout,
                    download_timeout=settings.download_timeout,
                    retry=retry,
                    budget=self.budget,
                )
                self._connection_key = settings.connection_key
            return self._connection

    @property
    def store(self) -> Store:
        """The store of the configured output_dir (kept while the setting stays the same)."""
        path = Path(self.settings.output_dir).expanduser().absolute()
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

    def uploader(self) -> Uploader | None:
        """The uploader of `upload_to` (kept while the upload settings stay the same), or None when unset.

        Made on first need only: fsspec and the storage library load when something must be uploaded.
        """
        settings = self.settings
        if not settings.upload_to.strip():
            return None
        from ..runtime.uploads import Uploader

        with self._lock:
            if self._uploader is None or self._uploader_key != settings.upload_key:
                self._uploader = Uploader(
                    settings.upload_to,
                    settings.upload_options,
                    public_url=settings.upload_public_url,
                    expiry=settings.upload_expiry,
                )
                self._uploader_key = settings.upload_key
            return self._uploader

    def references_for(
        self,
        sources: Any,
        namespace: Mapping[str, Any] | None = None,
        *,
        cwd: str | os.PathLike[str] | None = None,
        upload: bool = True,
    ) -> list[Reference]:
        """The reference images for `sources` (`-i` strings, `@NAME`, Generations, PIL images, Paths, lists).

        Local files, in-memory images and results older than `result_url_ttl` are uploaded to
        `upload_to`; with `upload=False` nothing is uploaded and those get a stand-in URL that is
        never sent (validation, dry runs, the cache check). One-line InvalidRequestError for any
        unusable source, with the `upload` hint when something must be uploaded and upload_to is unset.
        """
        from ..runtime import references

        factory: Callable[[], references.UrlMaker | None] = self.uploader if upload else self._planner
        try:
            return references.resolve(
                sources,
                namespace=namespace,
                cwd=cwd,
                uploader_factory=factory,
                result_url_ttl=self.settings.result_url_ttl,
            )
        except InvalidRequestError as exc:
            message = str(exc)
            if not message.endswith(references.NEEDS_UPLOAD_HINT):
                raise
            # The notebook adds its own advice from core/hints.py; a script user reads upload_to here.
            stem = message[: -len(references.NEEDS_UPLOAD_HINT)].rstrip("; ")
            raise InvalidRequestError(f"{stem} (upload_to)", hint="upload") from None

    def _planner(self) -> PlannedUploads | None:
        return PlannedUploads(self.settings) if self.settings.upload_to.strip() else None

    def submit_sources(
        self,
        request: GenerationRequest,
        sources: Any,
        *,
        namespace: Mapping[str, Any] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        force: bool = False,
        timeout: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Generation:
        """`submit` with reference sources: a result cached for the same images (by content) is shown
        without touching the storage; otherwise they are uploaded, then the request is submitted."""
        if not sources:
            return self.submit(request, force=force, timeout=timeout, metadata=metadata)
        planned = self.references_for(sources, namespace, cwd=cwd, upload=False)
        if self.settings.cache and not force and any(r.url.startswith(PLANNED) for r in planned):
            hit = self.cached(request, planned)
            if hit is not None:
                return hit
        refs = self.references_for(sources, namespace, cwd=cwd)
        return self.submit(
            with_references(request, refs), force=force, timeout=timeout, references=refs, metadata=metadata
        )

    def cached(self, request: GenerationRequest, references: Sequence[Reference] = ()) -> Generation | None:
        """A succeeded earlier result of this request (references by content) whose file matches its hash."""
        store = self.store
        api = self.settings.base_url.rstrip("/")
        key = request_key(api, request.to_body(), cache_identities(references) if references else None)
        entry = store.find_cached(key)
        if entry is None or file_state(store, entry) != "ok":
            return None  # submit decides: fetch again, attach to a pending task, or pay
        return self.generations.add(from_entry(entry, store, cached=True))

    def close(self) -> None:
        """Stop the threads (on %unload_ext). Pending tasks stay in the run log."""
        if self._poller is not None:
            self._poller.stop()
        self.budget.close()
        if self._connection is not None:
            self._connection.close()

    def rules(self, timeout: float | None = None, resolution: str = "1K") -> TaskRules:
        """How a new task of this session is waited for: its timeout and its poll schedule."""
        check_timeout(timeout)
        return TaskRules(
            timeout=self.settings.timeout if timeout is None else timeout, schedule=self.schedule(resolution)
        )

    def schedule(self, resolution: str) -> PollSchedule:
        """The fixed schedule of the settings, or one learned from `output_dir`'s finished tasks of this
        resolution (re-planned when the history has grown by a tenth, at most every 10 tasks)."""
        steps = self.settings.poll_schedule
        if steps != "auto":
            return FixedSchedule(steps)  # type: ignore[arg-type]
        store = self.store
        seen = store.duration_count(resolution)  # kept by the store as the run log grows: cheap per submit
        key = (store.output_dir, resolution.upper())
        with self._lock:
            known = self._schedules.get(key)
            if known is not None and seen - known[0] < max(10, known[0] // 10):
                return known[1]
        learned = LearnedSchedule.from_durations(store.durations(resolution), FixedSchedule())
        schedule = LoadAwareSchedule(learned, self._lag_cost)
        with self._lock:
            self._schedules[key] = (seen, schedule)
        return schedule

    def _lag_cost(self) -> float:
        """What a second of lag is worth now: the budget's requests per second shared by the pending tasks,
        and the least when anything already waits for the budget (a burst of submits, say)."""
        poller = self._poller
        if self.budget.waiting:
            return LAG_COSTS[0]
        return lag_cost_for(self.budget.effective_rate / max(poller.tracked if poller else 0, 1))

    # -- the one way in ------------------------------------------------------

    def submit(
        self,
        request: GenerationRequest,
        *,
        force: bool = False,
        timeout: float | None = None,
        references: Sequence[Any] = (),
        metadata: Mapping[str, Any] | None = None,
    ) -> Generation:
        """A checked cache hit, an attached pending task, or a new task: submitted, logged, then polled.

        `references`: the resolved reference images (`references.Reference`) whose URLs the request
        carries; they are identified by content for the cache and recorded with their sources.
        `metadata`: a batch row's other columns, kept in the run log.
        """
        body = request.to_body()
        check_timeout(timeout)  # before paying: a task given up at once is money lost
        check_callback(request.callback_url, self.settings.base_url)
        store = self.store
        check_output_dir(store.output_dir)  # before paying: a task whose id cannot be logged is at risk
        api = self.settings.base_url.rstrip("/")
        identities = cache_identities(references) if references else None
        key = request_key(api, body, identities)
        notice = None
        with store.deciding():  # one kernel at a time decides: two Run Alls never pay twice
            if self.settings.cache and not force:
                found, notice = self._reuse(key, body, store)
                if found is not None:
                    return self.generations.add(found)
            connection = self.connection
            prices = self.prices
            cost = prices.cost(request.resolution)
            self.spending.check([cost], f"this {request.resolution} task")
            learn = self.spending.cap is not None and prices.needs_learning(request.resolution)
            before = connection.credits() if learn else None
            task_id = connection.submit(request)
            # The task's clock starts when the service answered: polls are timed from here.
            submitted_at = time.time()
            refs = [{"source": r.source, "sha256": r.sha256, "url": r.url, "parent": r.parent} for r in references]
            # Before any polling: a paid task is never lost.
            store.record_submit(task_id, body, submitted_at, api=api, key=key, references=refs, metadata=metadata)
            if before is not None:
                cost = self._learn_price(prices, request.resolution, before) or cost
            self.spending.charge(cost)
        shared = SharedResult(connection, store)  # another kernel may attach to this task
        generation = Generation(
            task_id,
            body,
            api=shared,
            submitted_at=submitted_at,
            sink=shared,
            rules=self.rules(timeout, request.resolution),
        )
        generation.notice = notice
        generation.parents = tuple(r.parent for r in references if r.parent)
        self.generations.add(generation)
        self.poller.track(generation)
        return generation

    @property
    def prices(self) -> Prices:
        """Task prices: `credit_costs`, else what this output_dir learned from the balance."""
        return Prices(self.settings.credit_costs, self.store.output_dir, self.settings.base_url)

    def _learn_price(self, prices: Prices, resolution: str, before: float) -> float | None:
        from ..core.errors import NanoBananaError

        try:
            return prices.learn(resolution, before, self.connection.credits())
        except NanoBananaError:  # the task is paid and logged; the price is learned another time
            return None

    def paid_costs(self, requests: Sequence[GenerationRequest]) -> list[float | None]:
        """The price of each request that would be paid for (not a cache hit, not a pending task)."""
        store, api, prices = self.store, self.settings.base_url.rstrip("/"), self.prices
        costs = []
        for request in requests:
            key = request_key(api, request.to_body())
            if self.settings.cache and (store.find_cached(key) or store.find_pending(key, self.settings.timeout)):
                continue
            costs.append(prices.cost(request.resolution))
        return costs

    def check_budget(self, requests: Sequence[GenerationRequest], *, force: bool = False) -> None:
        """`BudgetExceededError` before anything is sent when a batch or sweep would pass `max_credits`."""
        if self.spending.cap is None:
            return
        costs = [self.prices.cost(r.resolution) for r in requests] if force else self.paid_costs(requests)
        self.spending.check(costs, f"these {len(requests)} tasks")

    def cost_note(self, requests: Sequence[GenerationRequest]) -> str:
        """What the requests would cost and what would be left of the budget, for dry runs."""
        costs = self.paid_costs(requests)
        if not costs:
            return "all answered from the cache or pending tasks: no credits"
        if all(c is None for c in costs) and self.spending.cap is None:
            return "price unknown (set credit_costs, or max_credits to learn it)"
        return self.spending.summary(costs)

    def _reuse(self, key: str, body: dict, store: Store) -> tuple[Generation | None, str | None]:
        """Under the decision lock: a cached result whose file matches its hash, a task still
        pending (any kernel) to attach to, or None with the reason a cached result was not used."""
        cached = store.cached_entries(key)
        notice = None
        for entry in cached:
            if file_state(store, entry) == "ok":
                return from_entry(entry, store, cached=True), None
        if cached:
            entry = cached[0]
            state = file_state(store, entry)
            restored, gone = restore(self.connection, entry, store, state)
            if restored is not None:
                return restored, None
            notice = f"the saved image of task {entry.task_id} is {state} and {gone}; submitted a new task"
        pending = store.find_pending(key, younger_than=self.settings.timeout)
        if pending is not None and forgotten(self.connection, pending):
            return None, f"task {pending.task_id} of the run log is unknown to the API; submitted a new task"
        if pending is not None:
            return self.attach(pending), None
        return None, notice

    def attach(self, entry: RunEntry) -> Generation:
        """Follow a task of the run log that is still pending (submitted by this or another kernel)."""
        known = self.generations.get(entry.task_id)
        if known is not None and not known.done:
            known.resumed = True
            return known
        shared = SharedResult(self.connection, self.store)
        generation = Generation(
            entry.task_id,
            entry.request,
            api=shared,
            sink=shared,
            submitted_at=entry.submitted_at,
            rules=self.rules(None, _resolution(entry.request)),
        )
        generation.resumed = True
        generation.parents = tuple(entry.parents)
        self.generations.add(generation)
        self.poller.track(generation, first_poll_in=0)
        return generation

    def resume(self) -> list[Generation]:
        """Attach to every task of the run log still pending and younger than `timeout`; never submits."""
        with self.store.deciding():
            entries = self.store.pending_entries(younger_than=self.settings.timeout)
        return [self.attach(entry) for entry in entries]

    def generate_many(
        self,
        requests: Any,
        *,
        concurrency: int | None = None,
        force: bool = False,
        timeout: float | None = None,
        defaults: Mapping[str, Any] | None = None,
        on_submit: OnSubmit | None = None,
        on_progress: OnProgress | None = None,
        references: Sequence[Reference] = (),
        namespace: Mapping[str, Any] | None = None,
    ) -> list[Generation]:
        """A batch through this session (cache, run log, poller); Generations in input order.

        `requests`: prompts, GenerationRequests, dicts or a DataFrame-like object (`runtime.batch.as_rows`):
        the columns that are parameters make each request (`defaults` for those a row lacks), the others
        are kept as the row's metadata in the run log. A row equal to a finished one is a cache hit, and
        one still pending (a batch run again after a restart) is attached to, not paid for again.
        `references` (resolved already, e.g. a sweep's `-i`) go with every request; a dict row may
        carry its own sources under `image_urls` or `references` (files, Generations, PIL images,
        URLs: as `-i` takes them). Every row's references are resolved (and uploaded) before the
        first submit, so a bad one is an error that names its row and nothing is sent.
        """
        from ..runtime.batch import Row, as_rows, run_batch, submit_or_record_failure

        if concurrency is not None and concurrency < 1:
            raise InvalidRequestError(f"concurrency {concurrency} is not allowed; use 1 or more (default 4)")
        split = [split_sources(item) for item in batch_items(requests)]
        rows = as_rows([item for item, _ in split], defaults)
        refs_of: dict[int, Sequence[Reference]] = {}  # id(row) → its references
        for index, ((_, sources), row) in enumerate(zip(split, rows)):
            refs: Sequence[Reference] = references
            if sources is not None:
                try:
                    refs = self.references_for(sources, namespace)
                except InvalidRequestError as exc:
                    raise InvalidRequestError(f"row {index}: {exc}", hint=exc.hint) from None
            if refs:
                rows[index] = row = Row(with_references(row.request, refs), row.metadata)
            refs_of[id(row)] = refs
        self.check_budget([row.request for row in rows], force=force)

        def submit(row: Row) -> Generation:
            return self.submit(
                row.request,
                force=force,
                timeout=timeout,
                metadata=row.metadata or None,
                references=refs_of.get(id(row), ()),
            )

        return run_batch(
            rows,
            submit_or_record_failure(submit),
            concurrency=concurrency or self.settings.concurrency,
            on_submit=on_submit,
            on_progress=on_progress,
        )

    def start_many(self, requests: Sequence[Any], **options: Any) -> threading.Thread:
        """`generate_many` in a daemon thread (a sweep that must not hold the kernel)."""
        thread = threading.Thread(
            target=self.generate_many, args=(requests,), kwargs=options, name="nanobanana-batch", daemon=True
        )
        thread.start()
        return thread

    def fetch(self, task_id: str) -> Generation:
        """A task's result without submitting: the saved file if it matches its hash, else the API's."""
        store = self.store
        task_id = self.resolve_task_id(task_id)
        known = self.generations.get(task_id)
        entry = store.entry(task_id)
        if known is not None and not known.done:
            return known  # this kernel follows it already: a second poller would save it twice
        if known is not None and known.status == "succeeded" and (entry is None or file_state(store, entry) == "ok"):
            return known
        if entry is not None and entry.status == "succeeded" and file_state(store, entry) == "ok":
            return self.generations.add(from_entry(entry, store, cached=False))
        ended = entry is not None and not entry.pending
        generation = Generation(
            task_id,
            entry.request if entry else {},
            api=self.connection,
            sink=store,
            submitted_at=entry.submitted_at if entry and entry.submitted_at else time.time(),
            duration=entry.elapsed if ended and entry else None,  # the run log's times stand
            rules=TaskRules(
                timeout=None,
                not_found_grace=0.0 if entry is None else 30.0,
                schedule=self.schedule(_resolution(entry.request if entry else {})),
            ),
        )
        generation.parents = tuple(entry.parents) if entry else ()
        generation.step()
        if entry is None and generation.request:  # known to the API: keep it in this directory's log
            api = self.settings.base_url.rstrip("/")
            store.record_submit(
                task_id, generation.request, generation.submitted_at, api=api, key=request_key(api, generation.request)
            )
        return self.generations.add(generation)

    def resolve_task_id(self, text: str) -> str:
        """A full task id from an id or an unambiguous prefix of one in the run log (status lines show 12)."""
        from ..core.errors import InvalidRequestError

        text = text.strip()
        if not text:
            raise InvalidRequestError("no task id given", hint="history")
        matches = self.store.find_prefix(text)
        if any(e.task_id == text for e in matches):
            return text
        if len(matches) == 1:
            return matches[0].task_id
        if matches:
            shown = ", ".join(e.task_id for e in matches[:3])
            raise InvalidRequestError(
                f"'{text}' is the start of {len(matches)} task ids ({shown}, ...); give more of it"
            )
        return text  # not in this directory's log: the API says whether it knows it

    def track(self, generation: Generation) -> None:
        """Keep polling a pending generation in the background (after fetch, say)."""
        if not generation.done:
            self.poller.track(generation)

    def pending(self) -> list[Generation]:
        return self.generations.pending()

    def resolve(self, task_ids: Sequence[str]) -> list[Generation]:
        """This kernel's generations by id (all pending ones when none are named)."""
        if not task_ids:
            return self.pending()
        missing = [t for t in task_ids if t not in self.generations]
        if missing:
            raise NanoBananaError(f"task {missing[0]} is not running in this kernel", task_id=missing[0], hint="fetch")
        return [self.generations[t] for t in task_ids]


def _resolution(request: Mapping[str, Any]) -> str:
    return str(request.get("resolution") or "1K")
