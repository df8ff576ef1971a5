"""What depends on the kind of IPython we run in: kernel or terminal, interactive or headless,
and publishing display updates from background threads."""

from __future__ import annotations

import threading
from typing import Any


class WaitInterrupted(KeyboardInterrupt):
    """Ctrl-C or a kernel interrupt stopped a wait; the task goes on. Shown as one line, like our errors."""


def stopped_waiting(*, batch: bool = False) -> WaitInterrupted:
    """The interrupt to raise when Ctrl-C stopped a wait: the same words in a terminal and a kernel."""
    from .progress import stopped_text

    return WaitInterrupted(stopped_text(batch=batch))


class KernelBridge:
    """Knows the latest cell's parent message so worker threads can update earlier cells' outputs.

    On ipykernel 7.0.x an update from a plain thread has no parent header
    (LookupError); setting the latest parent before each publish fixes it
    (see shared/spec/JUPYTER-NOTES.md).
    """

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self._parent: Any = None
        self._publish_lock = threading.Lock()
        shell.events.register("pre_run_cell", self._remember_parent)

    def close(self) -> None:
        try:
            self.shell.events.unregister("pre_run_cell", self._remember_parent)
        except ValueError:
            pass

    @property
    def in_kernel(self) -> bool:
        """False in terminal IPython: there is no output area to update later."""
        return getattr(self.shell, "kernel", None) is not None

    def headless(self) -> bool:
        """Best guess that nobody is watching: nbclient/papermill/nbconvert send allow_stdin=False."""
        if not self.in_kernel:
            return True
        parent = self._current_parent()
        content = parent.get("content", {}) if isinstance(parent, dict) else {}
        return content.get("allow_stdin") is False

    def _current_parent(self) -> Any:
        try:
            return self.shell.get_parent()
        except (AttributeError, LookupError):
            return self._parent

    def _remember_parent(self, *_: Any) -> None:
        if self.in_kernel:
            self._parent = self._current_parent()

    def update(self, handle: Any, data: dict, metadata: dict | None = None) -> None:
        """`handle.update` with a raw bundle, safe from any thread."""
        with self._publish_lock:
            if (
                threading.current_thread() is not threading.main_thread()
                and self._parent is not None
                and self._parent_per_thread()
            ):
                try:
                    self.shell.display_pub.set_parent(self._parent)
                except Exception:
                    pass
            handle.update(data, metadata=metadata or {}, raw=True)

    def _parent_per_thread(self) -> bool:
        """True where the display publisher keeps its parent per thread (ipykernel 7: a ContextVar).

        ipykernel 6 keeps one parent for every thread, which the kernel sets for the running cell:
        setting it from a worker there would hand the running cell's own outputs to another cell.
        """
        publisher = getattr(self.shell, "display_pub", None)
        return isinstance(getattr(type(publisher), "parent_header", None), property)
