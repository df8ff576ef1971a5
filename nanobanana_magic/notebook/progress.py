"""Progress of a batch: an ipywidgets bar in a kernel, one redrawn line in a terminal, lines when piped."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from ..core.hints import hint_text
from ..runtime.batch import INTERRUPTED, BatchProgress

#: A terminal line is redrawn at most twice a second; piped output gets a line every few seconds.
TERMINAL_EVERY = 0.5
PIPE_EVERY = 5.0


class Progress:
    """Shows `BatchProgress` reports; pass `progress.update` as a batch's `on_progress`.

    In a terminal one line is redrawn in place (`\\r`), at most every `TERMINAL_EVERY` seconds;
    when stdout is not a terminal (piped to a file, a CI log) each report is a line of its own,
    at most one every `PIPE_EVERY` seconds, plus the notes and the final count once. After
    `finish()` nothing more is drawn: what the caller prints next keeps its own line.
    """

    def __init__(self, total: int, *, label: str = "nanobanana", widget: bool = False) -> None:
        self.label = label
        self.last = BatchProgress(total, started=time.monotonic())
        self._lock = threading.Lock()  # guards last, the fields below and the drawing
        self._bar: Any = None
        self._text: Any = None
        self._printed = 0.0  # time.monotonic() of the last line drawn, 0 before the first
        self._shown = ""  # the text of that line
        self._finished = False
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
            if self._finished:
                return
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
            if self._tty:
                self._redraw(line, progress, complete)
            else:
                self._print_line(line, progress, complete)

    def _redraw(self, line: str, progress: BatchProgress, complete: bool) -> None:
        if not (progress.note or complete or time.monotonic() - self._printed >= TERMINAL_EVERY):
            return
        self._printed, self._shown = time.monotonic(), line
        print("\r" + line.ljust(90), end="", file=sys.stdout, flush=True)

    def _print_line(self, line: str, progress: BatchProgress, complete: bool) -> None:
        counts = _counts(line)
        if counts == _counts(self._shown) and not (progress.note and progress.note not in self._shown):
            return  # nothing new to say
        due = not self._printed or time.monotonic() - self._printed >= PIPE_EVERY
        if not (due or complete or (progress.note and progress.note not in self._shown)):
            return
        self._printed, self._shown = time.monotonic(), line
        print(f"{self.label}: {line}", file=sys.stdout, flush=True)

    def finish(self) -> None:
        """Stop drawing; end the redrawn line, so what follows starts on a line of its own."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
            if self._bar is None and not self._tty and _counts(self.line()) != _counts(self._shown):
                print(f"{self.label}: {self.line()}", file=sys.stdout, flush=True)  # the final count, once
            elif self._bar is None and self._tty and self._shown:
                print("\r" + self.line().ljust(90), file=sys.stdout, flush=True)  # the final count, then a newline

    def line(self) -> str:
        p = self.last
        elapsed = time.monotonic() - p.started
        eta = f" · ETA {elapsed / p.ended * (p.total - p.ended):.0f} s" if 0 < p.ended < p.total else ""
        note = f" · {stopped_text(batch=True)}" if p.note == INTERRUPTED else f" · {p.note}" if p.note else ""
        return (
            f"{p.ended}/{p.total} · {p.done} done · {p.failed} failed · {p.pending} pending"
            f" · {elapsed:.1f} s{eta}{note}"
        )


def stopped_text(*, batch: bool = False) -> str:
    """What an interrupt says, in a terminal and in a kernel alike, for one task or a batch."""
    if batch:
        where = hint_text("stopped").partition(": ")[2]  # %nanobanana history, %nanobanana wait
        return f"stopped waiting; the tasks already submitted are still running: {where}"
    return f"stopped waiting; {hint_text('stopped')}"


def _counts(line: str) -> str:
    """The counts of a progress line, without its clock (`3/12 · 2 done · 0 failed · 1 pending`)."""
    return " · ".join(line.split(" · ")[:4])
