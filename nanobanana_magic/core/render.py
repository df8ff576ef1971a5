"""What a generation looks like, as text and HTML: status line, preview with caption, short error, sweep grid.

Pure: no IPython, no files. Callers hand in the preview bytes they made. Every bundle has a
`text/plain` fallback, so outputs read in a terminal and in `git diff`.
"""

from __future__ import annotations

import base64
import html
import itertools
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from .states import LABELS, TaskState

MIME_META = "application/vnd.nanobanana.task+json"  # metadata key notebook tooling can read

MONO = "font-family:var(--jp-code-font-family,monospace);font-size:12px"
MUTED = MONO + ";color:#666"
ERROR = MONO + ";color:#b00020;background:#fdecea;padding:4px 8px;border-radius:3px"
TABLE = MONO + ";border-collapse:collapse"
CELL = "padding:2px 8px;text-align:left;vertical-align:middle;border-bottom:1px solid #eee"
GRID_CELL = "padding:4px;text-align:center;vertical-align:top;border:1px solid #eee;font-size:11px"
GRID_HEAD = "padding:4px 8px;background:#fafafa;border:1px solid #eee;font-size:12px;font-family:monospace"

Bundle = tuple[dict, dict]
Axis = tuple[str, Sequence[Any]]  # (name, values)


class GenerationView(Protocol):
    """What rendering reads of a generation."""

    task_id: str
    request: dict
    cached: bool
    first_generated: float | None
    submitted_at: float

    @property
    def state(self) -> TaskState: ...
    @property
    def status(self) -> str: ...
    @property
    def done(self) -> bool: ...
    @property
    def elapsed(self) -> float: ...
    @property
    def path(self) -> Any: ...
    @property
    def url(self) -> str | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def exception(self) -> BaseException | None: ...
    @property
    def prompt(self) -> str: ...


# -- formatting shared by every view ---------------------------------------


def when(t: float | None, seconds: bool = True) -> str:
    """Local date and time of an epoch, or "—"."""
    return time.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M", time.localtime(t)) if t else "—"


def excerpt(text: Any, limit: int = 80) -> str:
    """One line of at most `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown_path(path: Any) -> str:
    """The path relative to the working directory when it is below it, else as is."""
    if not path:
        return "—"
    try:
        rel = os.path.relpath(path)
        return rel if not rel.startswith("..") else str(path)
    except ValueError:
        return str(path)


def params_text(request: Mapping[str, Any]) -> str:
    """`2K · 16:9 · png` (+ google search, references)."""
    parts = [request.get("resolution"), request.get("aspectRatio"), request.get("outputFormat")]
    if request.get("googleSearch"):
        parts.append("google search")
    if request.get("imageUrls"):
        parts.append(f"{len(request['imageUrls'])} ref")
    return " · ".join(str(p) for p in parts if p)


def data_uri(data: bytes) -> str:
    """`data:` URI of PNG or JPEG bytes (a preview may be either: see `images.preview_bytes`)."""
    mime = "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


# -- one generation --------------------------------------------------------


def status_text(gen: GenerationView) -> str:
    """`nanobanana · generating · 12.4 s · 2K · 16:9 · png · task 31ce2c17b257…`"""
    word = "resumed · generating" if getattr(gen, "resumed", False) and not gen.done else LABELS[gen.state][0]
    return f"nanobanana · {word} · {gen.elapsed:.1f} s · {params_text(gen.request)} · task {gen.task_id[:12]}…"


def caption_lines(gen: GenerationView) -> list[str]:
    """Two lines under the image: what was asked, and where it is."""
    if gen.cached:
        first = when(gen.first_generated or gen.submitted_at, seconds=False)
        return [
            f"\"{excerpt(gen.prompt)}\" · {params_text(gen.request)}",
            f"cached · first generated {first} · task {gen.task_id} · {shown_path(gen.path)}",
        ]
    resumed = "resumed · " if getattr(gen, "resumed", False) else ""
    return [
        f"\"{excerpt(gen.prompt)}\" · {params_text(gen.request)} · {gen.elapsed:.1f} s",
        f"{resumed}task {gen.task_id} · {shown_path(gen.path)}",
    ]


def error_text(gen: GenerationView, message: str | None = None) -> str:
    """`ErrorName: message` (the caller may hand in the message with its advice)."""
    name = type(gen.exception).__name__ if gen.exception is not None else "NanoBananaError"
    return f"{name}: {message or gen.error}"


def task_metadata(gen: GenerationView) -> dict:
    return {
        MIME_META: {
            "task_id": gen.task_id,
            "status": gen.status,
            "request": gen.request,
            "path": str(gen.path) if gen.path else None,
            "url": gen.url,
            "cached": gen.cached,
            "elapsed": round(gen.elapsed, 2),
        }
    }


def status_bundle(gen: GenerationView, text: str | None = None) -> Bundle:
    text = text or status_text(gen)
    icon = LABELS[gen.state][1]
    return {"text/plain": text, "text/html": f"<div style='{MUTED}'>{icon} {html.escape(text)}</div>"}, task_metadata(
        gen
    )


def error_bundle(gen: GenerationView, message: str | None = None) -> Bundle:
    text = error_text(gen, message)
    return {"text/plain": text, "text/html": f"<div style='{ERROR}'>{html.escape(text)}</div>"}, task_metadata(gen)


def result_bundle(gen: GenerationView, preview: bytes | None, notes: Sequence[str] = ()) -> Bundle:
    """Preview image and caption as one output (`notes` are extra caption lines)."""
    lines = [*notes, *caption_lines(gen)]
    if preview is None:
        return {"text/plain": "\n".join(lines)}, task_metadata(gen)
    caption = "<br>".join(html.escape(line) for line in lines)
    alt = html.escape(excerpt(gen.prompt), quote=True)
    markup = (
        f"<figure style='margin:0'><img src='{data_uri(preview)}' alt=\"{alt}\" "
        f"style='max-width:100%;height:auto'/><figcaption style='{MUTED}'>{caption}</figcaption></figure>"
    )
    return {"text/plain": "\n".join(lines), "text/html": markup}, task_metadata(gen)


def bundle_for(
    gen: GenerationView,
    preview: bytes | None = None,
    *,
    error_message: str | None = None,
    notes: Sequence[str] = (),
) -> Bundle:
    """The bundle for the generation's current state."""
    if gen.state is TaskState.SUCCEEDED:
        return result_bundle(gen, preview, notes)
    if gen.state is TaskState.FAILED:
        return error_bundle(gen, error_message)
    return status_bundle(gen)


def generation_html(gen: GenerationView, preview: bytes | None) -> str:
    """`_repr_html_` of a Generation: a small preview or its state."""
    data, _ = bundle_for(gen, preview)
    return data.get("text/html") or f"<pre>{html.escape(data['text/plain'])}</pre>"


# -- a sweep's grid ----------------------------------------------------------


def combinations(axes: Sequence[Axis]) -> list[dict[str, Any]]:
    """The cartesian product of the axes, in order (the last axis varies fastest)."""
    names = [name for name, _ in axes]
    return [dict(zip(names, values)) for values in itertools.product(*(values for _, values in axes))]


def grid_shape(axes: Sequence[Axis], count: int, max_columns: int = 6) -> tuple[list[str], list[list[int]]]:
    """Column labels and rows of cell indexes. One axis is wrapped into rows of `max_columns`;
    with more, rows are the combinations of all axes but the last, columns the last axis."""
    if len(axes) == 1:
        name, values = axes[0]
        width = min(max_columns, max(1, len(values)))
        return [""] * width, [list(range(i, min(i + width, count))) for i in range(0, count, width)]
    name, values = axes[-1]
    width = len(values)
    return [f"{name}={v}" for v in values], [list(range(r, r + width)) for r in range(0, count, width)]


def grid_text(axes: Sequence[Axis], cells: Sequence[GenerationView | None]) -> str:
    """One line per combination, with its state (and the reason when it failed)."""
    combos = combinations(axes)
    done = sum(1 for g in cells if g is not None and g.state is TaskState.SUCCEEDED)
    failed = sum(1 for g in cells if g is not None and g.state in (TaskState.FAILED, TaskState.CANCELLED))
    head = f"sweep: {' × '.join(f'{name} ({len(values)})' for name, values in axes)} = {len(cells)}"
    lines = [f"{head} · {done} succeeded · {failed} failed · {len(cells) - done - failed} pending"]
    for combo, gen in zip(combos, cells):
        label = ", ".join(f"{k}={v}" for k, v in combo.items())
        if gen is None:
            state = "not submitted"
        elif gen.state is TaskState.FAILED:
            state = f"failed: {_reason(gen)}"
        else:
            resumed = " (resumed)" if getattr(gen, "resumed", False) else ""  # attached, not paid again
            state = gen.status + resumed + (f" {gen.path}" if gen.path else "")
        lines.append(f"  {label}: {state}")
    return "\n".join(lines)


def grid_html(
    axes: Sequence[Axis], cells: Sequence[GenerationView | None], thumbs: Mapping[str, bytes], thumb_px: int = 256
) -> str:
    """A labelled table of thumbnails (`thumbs`: task id → JPEG bytes) that fills in as tasks end."""
    combos = combinations(axes)
    columns, rows = grid_shape(axes, len(cells))
    head = "".join(f"<th style='{GRID_HEAD}'>{html.escape(c)}</th>" for c in columns)
    body = []
    for indexes in rows:
        shared = {k: v for k, v in combos[indexes[0]].items() if len(axes) > 1 and k != axes[-1][0]}
        label = "<br>".join(html.escape(f"{k}={v}") for k, v in shared.items())
        row = "".join(_grid_cell(cells[i], combos[i] if len(axes) == 1 else None, thumbs, thumb_px) for i in indexes)
        body.append(f"<tr><th style='{GRID_HEAD}'>{label}</th>{row}</tr>")
    done = sum(1 for g in cells if g is not None and g.state is TaskState.SUCCEEDED)
    failed = sum(1 for g in cells if g is not None and g.state in (TaskState.FAILED, TaskState.CANCELLED))
    caption = f"{done} of {len(cells)} succeeded" + (f" · {failed} failed" if failed else "")
    return (
        f"<table style='border-collapse:collapse'><caption style='font-size:12px;text-align:left'>"
        f"{caption}</caption><tr><th style='{GRID_HEAD}'></th>{head}</tr>{''.join(body)}</table>"
    )


def _grid_cell(
    gen: GenerationView | None, combo: Mapping[str, Any] | None, thumbs: Mapping[str, bytes], thumb_px: int
) -> str:
    label = f"{html.escape(', '.join(f'{k}={v}' for k, v in combo.items()))}<br>" if combo else ""
    if gen is None:
        return f"<td style='{GRID_CELL};color:#999'>{label}waiting to submit</td>"
    if gen.state is TaskState.SUCCEEDED and gen.task_id in thumbs:
        alt = html.escape(excerpt(gen.prompt), quote=True)
        return (
            f"<td style='{GRID_CELL}'>{label}<img src='{data_uri(thumbs[gen.task_id])}' alt=\"{alt}\" "
            f"style='max-width:{thumb_px}px;max-height:{thumb_px}px'/><br>"
            f"<code>{html.escape(gen.task_id[:8])}</code></td>"
        )
    if gen.state is TaskState.PENDING:
        return f"<td style='{GRID_CELL};color:#666'>{label}⏳ {gen.elapsed:.0f} s</td>"
    return f"<td style='{GRID_CELL};color:#b00020'>{label}{html.escape(_reason(gen) or gen.status)}</td>"


def _reason(gen: GenerationView) -> str:
    """Why a cell of a grid failed, without the `task ID failed:` that its position already says."""
    reason = gen.error or ""
    prefix = f"task {gen.task_id} failed: "
    return reason[len(prefix) :] if reason.startswith(prefix) else reason


def grid_bundle(axes: Sequence[Axis], cells: Sequence[GenerationView | None], thumbs: Mapping[str, bytes]) -> Bundle:
    return {"text/plain": grid_text(axes, cells), "text/html": grid_html(axes, cells, thumbs)}, {
        MIME_META: {
            "sweep": [[name, list(map(str, values))] for name, values in axes],
            "task_ids": [g.task_id if g else None for g in cells],
        }
    }
