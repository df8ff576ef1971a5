"""Cell outputs that follow generations, updated in place from worker threads: one task, or a sweep's grid."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from IPython.display import display

from ..core.errors import NanoBananaError
from ..core.hints import with_hint
from ..core.render import Axis, Bundle, bundle_for, grid_bundle, status_bundle
from .progress import stopped_text

if TYPE_CHECKING:
    from ..runtime.generation import Generation
    from .kernel import KernelBridge

#: Status ticks at most twice a second per output...
TICK = 0.5
#: ...and at most this many a second in the whole kernel: nobody reads a thousand status lines
#: ticking, while each tick costs the kernel a bundle and an IOPub message (about 1 ms of CPU;
#: 20 a second were a tenth of a 1,000-task burst's CPU). Five outputs still tick at full rate.
#: Results and errors always go out at once.
KERNEL_TICKS_PER_SECOND = 10.0


class TickBudget:
    """A token bucket that never blocks: `take()` says whether a status tick may go out now."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_second
        self._clock = clock
        self._tokens = per_second
        self._stamp = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.per_second, self._tokens + (now - self._stamp) * self.per_second)
            self._stamp = now
            if self._tokens < 1.0:
                return False
            self._tokens -= 1.0
            return True


_KERNEL_TICKS = TickBudget(KERNEL_TICKS_PER_SECOND)


def generation_bundle(generation: Generation, max_px: int, fmt: str, *, quiet_errors: bool = False) -> Bundle:
    """The bundle of a generation's state, with its preview made here and advice for failures."""
    if quiet_errors and generation.status == "failed":
        return status_bundle(generation)  # a blocking cell raises the error itself: show it once
    notes = [generation.notice] if generation.notice else []
    try:
        preview = generation.preview(max_px, fmt)
    except NanoBananaError as exc:  # the file is gone or altered: never shown as the result
        return status_bundle(generation, with_hint(exc))
    except (OSError, SyntaxError, ValueError) as exc:  # the file is saved; only the preview failed
        preview, notes = None, [*notes, f"(no preview: the image could not be decoded: {type(exc).__name__})"]
    message = with_hint(generation.exception) if generation.exception is not None else None
    return bundle_for(generation, preview, error_message=message, notes=notes)


class LiveOutput:
    """One display handle per generation: status line → preview and caption, or → short error."""

    def __init__(
        self, generation: Generation, bridge: KernelBridge, max_px: int, fmt: str, *, quiet_errors: bool = False
    ) -> None:
        self.bridge = bridge
        self.max_px, self.fmt = max_px, fmt
        self.quiet_errors = quiet_errors
        self.generation = generation
        self._lock = threading.Lock()  # one update at a time; guards the three fields below
        self._ended_shown = generation.done
        self._stopped_waiting = False  # then status ticks would hide the "stopped waiting" note
        self._last_status = 0.0
        data, metadata = self._bundle()
        self.handle = display(data, metadata=metadata, raw=True, display_id=True)
        if not generation.done:
            generation.add_listener(self.refresh)

    def _bundle(self) -> Bundle:
        return generation_bundle(self.generation, self.max_px, self.fmt, quiet_errors=self.quiet_errors)

    def refresh(self, generation: Generation) -> None:
        with self._lock:
            ended = generation.done
            if self._ended_shown or (self._stopped_waiting and not ended):
                return
            if not ended and (time.monotonic() - self._last_status < TICK or not _KERNEL_TICKS.take()):
                return
            self._last_status = time.monotonic()
            data, metadata = self._bundle()
            self.bridge.update(self.handle, data, metadata)
            self._ended_shown = ended

    def settle(self, *, republish: bool) -> None:
        """Show the ended state from the calling (cell's) thread: a worker's update may still be
        on its way when a blocking cell returns, and one sent between cells is lost headless."""
        with self._lock:
            if not self.generation.done or (self._ended_shown and not republish):
                return
            data, metadata = self._bundle()
            self.bridge.update(self.handle, data, metadata)
            self._ended_shown = True

    def stopped_waiting(self) -> None:
        text = stopped_text()
        with self._lock:
            self._stopped_waiting = True
            self.bridge.update(self.handle, {"text/plain": text}, {})


class SweepCells:
    """A sweep's generations by position, and one thumbnail per finished image (made once)."""

    def __init__(self, axes: Sequence[Axis], count: int, thumb_px: int = 256) -> None:
        self.axes = list(axes)
        self.thumb_px = thumb_px
        self.cells: list[Generation | None] = [None] * count
        self._thumbs: dict[str, bytes] = {}
        self._lock = threading.Lock()  # guards _thumbs

    def set(self, index: int, generation: Generation) -> None:
        self.cells[index] = generation

    def thumbs(self) -> dict[str, bytes]:
        with self._lock:
            for generation in self.cells:
                if generation is None or generation.status != "succeeded" or generation.task_id in self._thumbs:
                    continue
                try:
                    self._thumbs[generation.task_id] = generation.preview(self.thumb_px, "jpeg", quality=80) or b""
                except (NanoBananaError, OSError, SyntaxError, ValueError):
                    continue
            return dict(self._thumbs)

    def bundle(self) -> Bundle:
        return grid_bundle(self.axes, self.cells, self.thumbs())


class LiveGrid:
    """A sweep's grid in one display handle, redrawn (at most every `every` seconds) as tasks change."""

    def __init__(self, cells: SweepCells, bridge: Any, every: float = TICK) -> None:
        self.cells = cells
        self.bridge = bridge
        self.every = every
        self._last = 0.0
        self._lock = threading.Lock()  # guards _last and the redraw
        data, metadata = cells.bundle()
        self.handle = display(data, metadata=metadata, raw=True, display_id=True)

    def refresh(self, generation: Generation | None = None, *, force: bool = False) -> None:
        with self._lock:
            ended = generation is not None and generation.done
            if not force and not ended and time.monotonic() - self._last < self.every:
                return
            self._last = time.monotonic()
            data, metadata = self.cells.bundle()
            self.bridge.update(self.handle, data, metadata)
