"""`SweepGrid`: the results of a sweep as a labelled table that fills in as tasks finish."""

from __future__ import annotations

import base64
import html
import itertools
import threading
import time
from typing import TYPE_CHECKING, Any, Sequence

from .render import MIME_META

if TYPE_CHECKING:
    from ..runtime.generation import Generation

Axis = tuple[str, Sequence[Any]]  # (name, values)

_CELL = "padding:4px;text-align:center;vertical-align:top;border:1px solid #eee;font-size:11px"
_HEAD = "padding:4px 8px;background:#fafafa;border:1px solid #eee;font-size:12px;font-family:monospace"


def combinations(axes: Sequence[Axis]) -> list[dict[str, Any]]:
    """The cartesian product of the axes, in order (the last axis varies fastest)."""
    names = [name for name, _ in axes]
    return [dict(zip(names, values)) for values in itertools.product(*(values for _, values in axes))]


class SweepGrid:
    """Rows are the combinations of all axes but the last, columns the last axis' values."""

    def __init__(self, axes: Sequence[Axis], thumb_px: int = 256) -> None:
        self.axes = list(axes)
        self.thumb_px = thumb_px
        self.cells: list["Generation | None"] = [None] * len(combinations(axes))
        self._thumbs: dict[str, str] = {}  # task id → base64 JPEG, made once per image
        self._lock = threading.Lock()  # guards _thumbs

    @property
    def columns(self) -> list[Any]:
        return list(self.axes[-1][1]) if self.axes else [""]

    @property
    def rows(self) -> list[dict[str, Any]]:
        return combinations(self.axes[:-1]) if len(self.axes) > 1 else [{}]

    def set(self, index: int, generation: "Generation") -> None:
        self.cells[index] = generation

    def bundle(self) -> tuple[dict, dict]:
        return {"text/plain": self.text(), "text/html": self.html()}, {
            MIME_META: {"sweep": [[name, list(map(str, values))] for name, values in self.axes],
                        "task_ids": [g.task_id if g else None for g in self.cells]}}

    def text(self) -> str:
        lines = [f"sweep: {' × '.join(f'{name} ({len(values)})' for name, values in self.axes)} = {len(self.cells)}"]
        for index, generation in enumerate(self.cells):
            combo = combinations(self.axes)[index]
            label = ", ".join(f"{k}={v}" for k, v in combo.items())
            state = "not submitted" if generation is None else generation.status
            where = f" {generation.path}" if generation is not None and generation.path else ""
            lines.append(f"  {label}: {state}{where}")
        return "\n".join(lines)

    def html(self) -> str:
        last = self.axes[-1][0] if self.axes else ""
        head = "".join(f"<th style='{_HEAD}'>{html.escape(f'{last}={value}')}</th>" for value in self.columns)
        rows = []
        width = len(self.columns)
        for r, row in enumerate(self.rows):
            label = "<br>".join(html.escape(f"{k}={v}") for k, v in row.items())
            cells = "".join(self._cell(self.cells[r * width + c]) for c in range(width))
            rows.append(f"<tr><th style='{_HEAD}'>{label}</th>{cells}</tr>")
        done = sum(1 for g in self.cells if g is not None and g.done)
        caption = f"{done}/{len(self.cells)} finished"
        return (f"<table style='border-collapse:collapse'><caption style='font-size:12px;text-align:left'>"
                f"{caption}</caption><tr><th style='{_HEAD}'></th>{head}</tr>{''.join(rows)}</table>")

    def _cell(self, generation: "Generation | None") -> str:
        if generation is None:
            return f"<td style='{_CELL};color:#999'>waiting to submit</td>"
        if generation.status == "succeeded":
            thumb = self._thumb(generation)
            alt = html.escape(generation.prompt[:80], quote=True)
            return (f"<td style='{_CELL}'><img src='data:image/jpeg;base64,{thumb}' alt=\"{alt}\" "
                    f"style='max-width:{self.thumb_px}px;max-height:{self.thumb_px}px'/><br>"
                    f"<code>{html.escape(generation.task_id[:8])}</code></td>")
        if generation.status == "pending":
            return f"<td style='{_CELL};color:#666'>⏳ {generation.elapsed:.0f} s</td>"
        return f"<td style='{_CELL};color:#b00020'>{html.escape(generation.error or generation.status)}</td>"

    def _thumb(self, generation: "Generation") -> str:
        with self._lock:
            if generation.task_id not in self._thumbs:
                image = generation.preview(self.thumb_px, "jpeg", quality=80) or b""
                self._thumbs[generation.task_id] = base64.b64encode(image).decode("ascii")
            return self._thumbs[generation.task_id]


class LiveGrid:
    """A SweepGrid in one display handle, redrawn (at most every `every` seconds) as tasks change."""

    def __init__(self, grid: SweepGrid, bridge: Any, every: float = 0.5) -> None:
        from IPython.display import display

        self.grid = grid
        self.bridge = bridge
        self.every = every
        self._last = 0.0
        self._lock = threading.Lock()
        data, metadata = grid.bundle()
        self.handle = display(data, metadata=metadata, raw=True, display_id=True)

    def refresh(self, generation: "Generation | None" = None, *, force: bool = False) -> None:
        with self._lock:
            if not force and (generation is None or not generation.done) and time.monotonic() - self._last < self.every:
                return
            self._last = time.monotonic()
            data, metadata = self.grid.bundle()
            self.bridge.update(self.handle, data, metadata)
