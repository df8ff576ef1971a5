"""Batches: many requests through the one poller, with bounded concurrency and one progress bar."""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from ..core.errors import NanoBananaError, RateLimitError

if TYPE_CHECKING:
    from .generation import Generation
    from ..core.params import GenerationRequest

log = logging.getLogger("nanobanana_magic")

Submit = Callable[["GenerationRequest"], "Generation"]
MAX_RATE_LIMIT_PAUSE = 60.0


class Progress:
    """done / failed / pending, elapsed and ETA: an ipywidgets bar in a kernel, one text line elsewhere."""

    def __init__(self, total: int, *, label: str = "nanobanana", widget: bool | None = None) -> None:
        self.total = total
        self.label = label
        self.started = time.monotonic()
        self.done = self.failed = self.submitted = 0
        self.note = ""
        self._lock = threading.Lock()
        self._bar: Any = None
        self._text: Any = None
        self._printed = 0.0
        if widget is None:
            widget = _in_kernel()
        if widget:
            self._make_widget()

    def _make_widget(self) -> None:
        import ipywidgets as widgets
        from IPython.display import display

        self._bar = widgets.IntProgress(min=0, max=max(self.total, 1), bar_style="info",
                                        layout=widgets.Layout(width="40%"))
        self._text = widgets.HTML()
        display(widgets.HBox([widgets.HTML(f"<b>{self.label}</b>&nbsp;"), self._bar, self._text]))

    def update(self, *, done: int, failed: int, submitted: int, note: str = "") -> None:
        with self._lock:
            self.done, self.failed, self.submitted, self.note = done, failed, submitted, note
            line = self.line()
            if self._bar is not None:
                self._bar.value = done + failed
                self._bar.bar_style = "danger" if failed and done + failed == self.total else (
                    "success" if done == self.total else "info")
                self._text.value = f"<code>{line}</code>"
            elif note or done + failed == self.total or time.monotonic() - self._printed > 0.5:
                self._printed = time.monotonic()  # a terminal line is redrawn at most twice a second
                print("\r" + line.ljust(90), end="", file=sys.stdout, flush=True)

    def finish(self) -> None:
        if self._bar is None:
            print(file=sys.stdout, flush=True)

    def line(self) -> str:
        ended = self.done + self.failed
        pending = self.submitted - ended
        elapsed = time.monotonic() - self.started
        eta = ""
        if 0 < ended < self.total:
            eta = f" · ETA {elapsed / ended * (self.total - ended):.0f} s"
        note = f" · {self.note}" if self.note else ""
        return (f"{ended}/{self.total} · {self.done} done · {self.failed} failed · {pending} pending"
                f" · {elapsed:.1f} s{eta}{note}")


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def run_batch(requests: Iterable["GenerationRequest"], submit: Submit, *, concurrency: int = 4,
              progress: Progress | bool | None = True,
              on_submit: Callable[[int, "Generation"], None] | None = None) -> list["Generation"]:
    """Submit every request, at most `concurrency` pending at once; the `Generation`s in input order.

    Rate limits slow the batch down instead of failing it. Ctrl-C stops submitting;
    tasks already submitted stay in the run log and keep being polled.
    """
    requests = list(requests)
    if progress is True or progress is None:
        progress = Progress(len(requests))
    elif progress is False:
        progress = None
    results: list["Generation | None"] = [None] * len(requests)
    slots = threading.Semaphore(max(1, concurrency))
    changed = threading.Condition()  # guards released
    released: set[int] = set()  # indexes whose slot was given back

    def release(index: int, generation: "Generation") -> None:
        if not generation.done:
            return
        with changed:
            if index in released:
                return
            released.add(index)
            changed.notify_all()
        slots.release()

    def report(note: str = "") -> None:
        if progress:
            made = [g for g in results if g is not None]
            progress.update(done=sum(g.status == "succeeded" for g in made),
                            failed=sum(g.status in ("failed", "cancelled") for g in made),
                            submitted=len(made), note=note)

    try:
        for index, request in enumerate(requests):
            while not slots.acquire(timeout=0.2):
                report()
            results[index] = _submit_patiently(submit, request, report)
            generation = results[index]
            generation.add_listener(lambda g, i=index: (release(i, g), report()))
            if on_submit is not None:
                on_submit(index, generation)
            report()
        with changed:
            while not all(g is not None and g.done for g in results):
                changed.wait(0.2)
                report()
    except KeyboardInterrupt:
        report("interrupted: submitted tasks go on (%nanobanana wait / history)")
        if progress:
            progress.finish()
        raise
    report()
    if progress:
        progress.finish()
    return [g for g in results if g is not None]


def _submit_patiently(submit: Submit, request: "GenerationRequest", report: Callable[[str], None]) -> "Generation":
    pause = 2.0
    while True:
        try:
            return submit(request)
        except RateLimitError:
            report(f"rate limited: pausing {pause:.0f} s")
            time.sleep(pause)
            pause = min(pause * 2, MAX_RATE_LIMIT_PAUSE)


def failed_submit(request: "GenerationRequest", error: NanoBananaError) -> "Generation":
    """A Generation standing for a request whose submit failed (so a batch keeps its order)."""
    from .generation import Generation

    generation = Generation(f"not-submitted-{id(request):x}", request.to_body())
    generation._end("failed", error)
    return generation


def submit_or_record_failure(submit: Submit) -> Submit:
    """Wrap `submit` so that a refused request becomes a failed Generation instead of stopping the batch."""
    def wrapped(request: "GenerationRequest") -> "Generation":
        try:
            return submit(request)
        except RateLimitError:
            raise
        except NanoBananaError as exc:
            return failed_submit(request, exc)
    return wrapped


def as_requests(items: Sequence[Any]) -> list["GenerationRequest"]:
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
