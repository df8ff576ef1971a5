"""Batches: many requests with bounded concurrency, progress reported through a callback."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..core.errors import NanoBananaError, RateLimitError
from ..http.retry import RetryPolicy

if TYPE_CHECKING:
    from ..core.params import GenerationRequest, Param
    from .generation import Generation

log = logging.getLogger("nanobanana_magic")


class HasBody(Protocol):
    """A batch item: a GenerationRequest, or a Row that carries one."""

    def to_body(self) -> dict[str, Any]: ...


Item = TypeVar("Item", bound=HasBody)
Submit = Callable[[Item], "Generation"]


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
#: The note of an interrupted batch, the same in a terminal and a kernel.
INTERRUPTED = "interrupted: the tasks already submitted go on"
#: After the connection's own retries, a still rate-limited batch waits and tries again, patiently.
RATE_LIMIT_PAUSES = RetryPolicy(retries=1_000_000, backoff=2.0, backoff_max=60.0, jitter=0.25)


def run_batch(
    requests: Iterable[Item],
    submit: Submit[Item],
    *,
    concurrency: int = 4,
    on_progress: OnProgress | None = None,
    on_submit: Callable[[int, Generation], None] | None = None,
) -> list[Generation]:
    """Submit every request, at most `concurrency` pending at once; the `Generation`s in input order.

    Rate limits slow the batch down instead of failing it. Ctrl-C stops submitting;
    tasks already submitted stay in the run log and keep being polled. `on_progress` hears
    nothing after this returns or raises (a task's late listener must not redraw a line that
    the caller has already closed).
    """
    requests = list(requests)
    started = time.monotonic()
    results: list[Generation | None] = [None] * len(requests)
    slots = threading.Semaphore(max(1, concurrency))
    changed = threading.Condition()  # guards released
    released: set[int] = set()  # indexes whose slot was given back
    closed = threading.Event()  # set once the final report is made

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

    def report(note: str = "", *, final: bool = False) -> None:
        if on_progress is not None and not closed.is_set():
            if final:
                closed.set()
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
        report(INTERRUPTED, final=True)
        raise
    report(final=True)
    return [g for g in results if g is not None]


def _submit_patiently(submit: Submit[Item], request: Item, report: Callable[[str], None]) -> Generation:
    attempt = 0
    while True:
        try:
            return submit(request)
        except RateLimitError:
            attempt += 1
            pause = RATE_LIMIT_PAUSES.delay(attempt)
            report(f"rate limited: pausing {pause:.0f} s")
            time.sleep(pause)


def submit_or_record_failure(submit: Submit[Item]) -> Submit[Item]:
    """Wrap `submit` so that a refused request becomes a failed Generation instead of stopping the batch."""

    def wrapped(request: Item) -> Generation:
        try:
            return submit(request)
        except RateLimitError:
            raise
        except NanoBananaError as exc:
            from .generation import Generation

            return Generation.failed_before_submit(request.to_body(), exc)

    return wrapped


@dataclass(frozen=True)
class Row:
    """One item of a batch: the request to send and the row's other columns (kept in the run log)."""

    request: GenerationRequest
    metadata: dict[str, Any]

    def to_body(self) -> dict[str, Any]:
        return self.request.to_body()


def as_rows(items: Any, defaults: Mapping[str, Any] | None = None) -> list[Row]:
    """Rows from prompts, GenerationRequests, dicts, or a DataFrame-like object (`.to_dict("records")`).

    In a dict, the keys that are parameters (`aspect_ratio`, the body's `aspectRatio`, or a flag's
    name such as `format` or `image`) make the request, with `defaults` for the ones it lacks (an
    empty or NaN cell counts as lacking); the other keys (a label, a split, an id) are the row's
    metadata, except a near miss of a parameter's name, which is refused as a typo. Every row is
    checked before anything is sent: a bad one is a one-line error naming it.
    """
    from ..core.errors import InvalidRequestError

    if callable(getattr(items, "to_dict", None)) and not isinstance(items, Mapping):
        items = items.to_dict("records")  # a pandas DataFrame, or anything that answers the same
    if isinstance(items, (str, Mapping)):
        items = [items]
    rows = []
    for number, item in enumerate(items):
        try:
            rows.append(_row(item, defaults or {}))
        except InvalidRequestError as exc:
            raise InvalidRequestError(f"row {number}: {exc}") from None
    return rows


def _row(item: Any, defaults: Mapping[str, Any]) -> Row:
    from ..core.errors import InvalidRequestError
    from ..core.params import BY_JSON, BY_NAME, GenerationRequest

    if isinstance(item, Row):
        return item
    if isinstance(item, GenerationRequest):
        return Row(item, {})
    if isinstance(item, str):
        return Row(GenerationRequest(prompt=item, **_given(defaults)), {})
    if not isinstance(item, Mapping):
        raise InvalidRequestError(
            f"{type(item).__name__} is not a batch row; give a prompt, a dict or a GenerationRequest"
        )
    values: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    for key, value in item.items():
        param = BY_NAME.get(str(key)) or BY_JSON.get(str(key)) or _by_flag().get(str(key))
        if param is None:
            _refuse_a_misspelt_parameter(str(key))
            metadata[str(key)] = plain(value)
        elif not _missing(value):
            values[param.name] = value
    if "prompt" not in values:
        raise InvalidRequestError(f"no prompt; a row needs a 'prompt' column (it has {', '.join(map(str, item))})")
    prompt = values.pop("prompt")
    return Row(GenerationRequest(prompt=prompt, **{**_given(defaults), **values}), metadata)


def _by_flag() -> dict[str, Param]:
    """Parameters by their flag's long name, as `--sweep` takes them: `format`, `image`, ..."""
    from ..core.params import PARAMETERS

    return {p.flag[2:].replace("-", "_"): p for p in PARAMETERS if p.flag}


def _refuse_a_misspelt_parameter(column: str) -> None:
    """A column one letter or two away from a parameter is a typo, not metadata: it would be silently ignored."""
    import difflib

    from ..core.errors import InvalidRequestError
    from ..core.params import BY_JSON, BY_NAME

    names = [*BY_NAME, *BY_JSON, *_by_flag()]
    close = difflib.get_close_matches(column, names, n=1, cutoff=0.85)
    if close or column.lower().replace("-", "_") in names:
        meant = close[0] if close else column.lower().replace("-", "_")
        raise InvalidRequestError(
            f"column '{column}' looks like the parameter '{meant}'; rename it (any other column is kept as metadata)"
        )


def _given(defaults: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in defaults.items() if k != "prompt" and not _missing(v)}


def _missing(value: Any) -> bool:
    """None, NaN (a DataFrame's empty cell) or pandas' NA."""
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN is the one value unequal to itself
    except TypeError:  # pandas.NA refuses bool()
        return True
    except ValueError:  # an array: a value, not a missing one
        return False


def plain(value: Any) -> Any:
    """A JSON value for the run log: NumPy scalars as Python numbers, NaN as null, other objects as text."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    item = getattr(value, "item", None)  # numpy.int64, numpy.bool_, ...
    if callable(item) and getattr(value, "shape", None) == ():
        return plain(item())
    if _missing(value):
        return None
    isoformat = getattr(value, "isoformat", None)  # datetime, date, pandas.Timestamp
    return isoformat() if callable(isoformat) else str(value)


def as_requests(items: Any) -> list[GenerationRequest]:
    """GenerationRequests from the same rows, for a caller that keeps no metadata: a column that is
    not a parameter is an error there, never silently dropped."""
    from ..core.errors import InvalidRequestError

    rows = as_rows(items)
    for number, row in enumerate(rows):
        if row.metadata:
            raise InvalidRequestError(
                f"row {number}: {next(iter(row.metadata))!r} is not a parameter; NanoBananaClient keeps no "
                "other columns (nanobanana_magic.generate_many keeps them in the run log)"
            )
    return [row.request for row in rows]
