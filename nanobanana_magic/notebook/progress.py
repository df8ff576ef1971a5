"""Progress of a batch: an ipywidgets bar in a kernel, one redrawn line in a terminal, lines when piped."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from ..runtime.batch import BatchProgress

#: A terminal line is redrawn at most twice a second; piped output gets a line every few seconds.
TERMINAL_EVERY = 0.5
PIPE_EVERY = 5.0


class Progress:
    """Shows `BatchProgress` reports; pass `progress.update` as a batch's `on_progress`."""

    def __init__(self, total: int, *, label: str = "nanobanana", widget: bool = False) -> None:
        self.label = label
        self.last = BatchProgress(total, started=time.monotonic())
        self._lock = threading.Lock()  # guards last and the drawing
        self._bar: Any = None
        self._text: Any = None
        self._printed = 0.0
        self._tty = sys.stdout.isatty()
        if widget:
            self._make_widget(total)

    def _make_widget(self, total: int) -> None:
        import ipywidgets as widgets
        from IPython.display import display

        self._bar = widgets.IntProgress(min=0, max=max(total, 1), bar_style="info", layout=widgets.Layout(width="40%"))
        self._text = widgets.HTML()
        display(widgets.HBox([widgets.HTML(f"<b>{self.label}</b>&nbsp;"), self._bar, self._text]))

    def update(self, progress: BatchProgress) -> None:
        with self._lock:
            self.last = progress
            line = self.line()
            complete = progress.ended == progress.total
            if self._bar is not None:
                self._bar.value = progress.ended
                self._bar.bar_style = (
                    "danger"
                    if progress.failed and complete
                    else "success"
                    if progress.done == progress.total
                    else "info"
                )
                self._text.value = f"<code>{line}</code>"
                return
            every = TERMINAL_EVERY if self._tty else PIPE_EVERY
            if not (progress.note or complete or time.monotonic() - self._printed > every):
                return
            self._printed = time.monotonic()
            if self._tty:
                print("\r" + line.ljust(90), end="", file=sys.stdout, flush=True)
            else:
                print(line, file=sys.stdout, flush=True)

    def finish(self) -> None:
        """End the redrawn line, so what follows starts on a line of its own."""
        if self._bar is None and self._tty:
            print(file=sys.stdout, flush=True)

    def line(self) -> str:
        p = self.last
        elapsed = time.monotonic() - p.started
        eta = f" · ETA {elapsed / p.ended * (p.total - p.ended):.0f} s" if 0 < p.ended < p.total else ""
        note = f" · {p.note}" if p.note else ""
        return (
            f"{p.ended}/{p.total} · {p.done} done · {p.failed} failed · {p.pending} pending"
            f" · {elapsed:.1f} s{eta}{note}"
        )
