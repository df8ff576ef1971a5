"""Batches: many requests with bounded concurrency, progress reported through a callback."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from ..core.errors import NanoBananaError, RateLimitError
from ..http.retry import RetryPolicy

if TYPE_CHECKING:
    from ..core.params import GenerationRequest
    from .generation import Generation

log = logging.getLogger("nanobanana_magic")

Submit = Callable[["GenerationRequest"], "Generation"]


@dataclass(frozen=True)
class BatchProgress:
    """Counts of a batch, reported after every change: ended = done + failed."""

    total: int
    submitted: int = 0
    done: int = 0
    failed: int = 0
    started: float = 0.0  # time.monotonic() when the batch began
    note: str = ""

    @property
    def ended(self) -> int:
        return self.done + self.failed

    @property
    def pending(self) -> int:
        return self.submitted - self.ended


OnProgress = Callable[[BatchProgress], None]
#: After the connection's own retries, a still rate-limited batch waits and tries again, patiently.
RATE_LIMIT_PAUSES = RetryPolicy(retries=1_000_000, backoff=2.0, backoff_max=60.0, jitter=0.25)


def run_batch(
    requests: Iterable[GenerationRequest],
    submit: Submit,
    *,
    concurrency: int = 4,
    on_progress: OnProgress | None = None,
    on_submit: Callable[[int, Generation], None] | None = None,
) -> list[Generation]:
    """Submit every request, at most `concurrency` pending at once; the `Generation`s in input order.

    Rate limits slow the batch down instead of failing it. Ctrl-C stops submitting;
    tasks already submitted stay in the run log and keep being polled.
    """
    requests = list(requests)
    started = time.monotonic()
    results: list[Generation | None] = [None] * len(requests)
    slots = threading.Semaphore(max(1, concurrency))
    changed = threading.Condition()  # guards released
    released: set[int] = set()  # indexes whose slot was given back

    def release(index: int, generation: Generation) -> None:
        if not generation.done:
            return
        with changed:
            if index in released:
                return
            released.add(index)
            changed.notify_all()
        slots.release()

    def on_change(index: int, generation: Generation) -> None:
        release(index, generation)
        report()

    def report(note: str = "") -> None:
        if on_progress is not None:
            made = [g for g in results if g is not None]
            on_progress(
                BatchProgress(
                    len(requests),
                    submitted=len(made),
                    done=sum(g.status == "succeeded" for g in made),
                    failed=sum(g.status in ("failed", "cancelled") for g in made),
                    started=started,
                    note=note,
                )
            )

    try:
        for index, request in enumerate(requests):
            while not slots.acquire(timeout=0.2):
                report()
            generation = results[index] = _submit_patiently(submit, request, report)
            generation.add_listener(partial(on_change, index))
            if on_submit is not None:
                on_submit(index, generation)
            report()
        with changed:
            while not all(g is not None and g.done for g in results):
                changed.wait(0.2)
                report()
    except KeyboardInterrupt:
        report("interrupted: the tasks already submitted go on")
        raise
    report()
    return [g for g in results if g is not None]


def _submit_patiently(submit: Submit, request: GenerationRequest, report: Callable[[str], None]) -> Generation:
    attempt = 0
    while True:
        try:
            return submit(request)
        except RateLimitError:
            attempt += 1
            pause = RATE_LIMIT_PAUSES.delay(attempt)
            report(f"rate limited: pausing {pause:.0f} s")
            time.sleep(pause)


def submit_or_record_failure(submit: Submit) -> Submit:
    """Wrap `submit` so that a refused request becomes a failed Generation instead of stopping the batch."""

    def wrapped(request: GenerationRequest) -> Generation:
        try:
            return submit(request)
        except RateLimitError:
            raise
        except NanoBananaError as exc:
            from .generation import Generation

            return Generation.failed_before_submit(request.to_body(), exc)

    return wrapped


def as_requests(items: Sequence[Any]) -> list[GenerationRequest]:
    """Accept GenerationRequests, dicts of parameters, or plain prompt strings."""
    from ..core.params import BY_NAME, GenerationRequest

    out = []
    for item in items:
        if isinstance(item, GenerationRequest):
            out.append(item)
        elif isinstance(item, str):
            out.append(GenerationRequest(prompt=item))
        elif set(item) - set(BY_NAME):  # a JSON body (camelCase), e.g. from an export
            out.append(GenerationRequest.from_body(item))
        else:
            out.append(GenerationRequest(**dict(item)))
    return out
