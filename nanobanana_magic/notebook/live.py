"""`LiveOutput`: one cell output that follows a generation, updated in place from worker threads."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from IPython.display import display

from ..core.render import bundle_for, status_bundle

if TYPE_CHECKING:
    from ..runtime.generation import Generation
    from .kernel import KernelBridge


class LiveOutput:
    """One display handle per generation: status line → preview and caption, or → short error."""

    def __init__(self, generation: "Generation", bridge: "KernelBridge", max_px: int, fmt: str,
                 *, quiet_errors: bool = False) -> None:
        self.bridge = bridge
        self.max_px, self.fmt = max_px, fmt
        self.quiet_errors = quiet_errors  # a blocking cell raises the error itself: show it once
        self.generation = generation
        self._lock = threading.Lock()  # one update at a time; guards _ended_shown
        data, metadata = self._bundle(generation)
        self.handle = display(data, metadata=metadata, raw=True, display_id=True)
        self._ended_shown = generation.done
        self._stopped_waiting = False  # then status ticks would hide the "stopped waiting" note
        self._last_status = 0.0
        if not generation.done:
            generation.add_listener(self.refresh)

    def _bundle(self, generation: "Generation") -> tuple[dict, dict]:
        if self.quiet_errors and generation.status == "failed":
            return status_bundle(generation)
        return bundle_for(generation, self.max_px, self.fmt)

    def refresh(self, generation: "Generation") -> None:
        with self._lock:
            ended = generation.done
            if self._ended_shown or (self._stopped_waiting and not ended):
                return
            if not ended and time.monotonic() - self._last_status < 0.5:
                return  # status ticks at most twice a second
            self._last_status = time.monotonic()
            data, metadata = self._bundle(generation)
            self.bridge.update(self.handle, data, metadata)
            self._ended_shown = ended

    def settle(self, *, republish: bool) -> None:
        """Show the ended state from the calling (cell's) thread: a worker's update may still be
        on its way when a blocking cell returns, and one sent between cells is lost headless."""
        with self._lock:
            if not self.generation.done or (self._ended_shown and not republish):
                return
            data, metadata = self._bundle(self.generation)
            self.bridge.update(self.handle, data, metadata)
            self._ended_shown = True

    def stopped_waiting(self) -> None:
        text = "stopped waiting (the task is still running: %nanobanana history, %nanobanana wait)"
        with self._lock:
            self._stopped_waiting = True
            self.bridge.update(self.handle, {"text/plain": text}, {})

