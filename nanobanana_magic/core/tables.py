"""Tables the line magic shows: history, config, task status, dry runs, help. Pure: callers hand in thumbnails."""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .render import CELL, MONO, TABLE, data_uri, excerpt, when
from .secret import ApiKey, mask

if TYPE_CHECKING:
    from .params import GenerationRequest
    from .status import TaskStatus


class EntryView(Protocol):
    """What the history table reads of a run-log entry."""

    task_id: str
    request: dict
    submitted_at: float | None
    status: str
    file: str | None
    error: str | None
    references: list[dict]
    parents: list[str]


def _table(headers: list[str], rows: list[list[str]]) -> str:
    """A fixed-width text table (the text/plain of every tabular output)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def _html_table(headers: list[str], rows: list[list[str]]) -> str:
    """`rows` hold already-escaped HTML."""
    head = "".join(f"<th style='{CELL}'>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td style='{CELL}'>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table style='{TABLE}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


HISTORY_HEADERS = ["when", "status", "task id", "res", "ratio", "prompt", "refs", "file"]


def references_cell(entry: EntryView) -> str:
    """How many reference images a task had, and the results it was made from: `2 ← 31ce2c17, 9e4286b7`."""
    count = len(entry.references) or len(entry.request.get("imageUrls") or [])
    if not count:
        return ""
    parents = ", ".join(parent[:8] for parent in entry.parents)
    return f"{count} ← {parents}" if parents else str(count)


def history_rows(entries: Sequence[EntryView], paths: Mapping[str, str] | None = None) -> list[list[str]]:
    """Text cells of the history: a failed row's last column is its reason, whole (without the
    `task ID failed:` that its own row already says)."""
    paths = paths or {}
    rows = []
    for e in entries:
        reason = " ".join(str(e.error).split()) if e.error else "—"
        reason = reason.removeprefix(f"task {e.task_id} failed: ")
        outcome = paths.get(e.task_id) or e.file or reason
        rows.append(
            [
                when(e.submitted_at),
                e.status,
                e.task_id,
                str(e.request.get("resolution", "")),
                str(e.request.get("aspectRatio", "")),
                excerpt(e.request.get("prompt", ""), 30),
                references_cell(e),
                outcome,
            ]
        )
    return rows


def history_bundle(
    entries: Sequence[EntryView], where: str, paths: Mapping[str, str], thumbs: Mapping[str, bytes], note: str = ""
) -> dict:
    """The run log as a text table and an HTML table with thumbnails (`thumbs`: task id → JPEG)."""
    if not entries:
        text = f"no generations yet in {where}"
        return {"text/plain": text, "text/html": f"<em>{html.escape(text)}</em>"}
    rows = history_rows(entries, paths)
    html_rows = []
    for row, entry in zip(rows, entries):
        cells = [html.escape(c) for c in row]
        if entry.status == "pending":
            cells[1] = "<b style='color:#b26a00'>pending</b>"
        elif entry.status != "succeeded":
            cells[1] = f"<span style='color:#b00020'>{html.escape(entry.status)}</span>"
        if entry.task_id in thumbs:
            cells[-1] = (
                f"<img src='{data_uri(thumbs[entry.task_id])}' style='height:48px;vertical-align:middle'/> " + cells[-1]
            )
        html_rows.append(cells)
    text = _table(HISTORY_HEADERS, rows) + (f"\n{note}" if note else "")
    markup = _html_table(HISTORY_HEADERS, html_rows) + (f"<p style='{MONO}'>{html.escape(note)}</p>" if note else "")
    return {"text/plain": text, "text/html": markup}


def markdown_bundle(text: str) -> dict:
    """Markdown that a notebook renders as a table; the same text where nothing renders it."""
    return {"text/markdown": text, "text/plain": text.rstrip("\n")}


def config_bundle(settings: Mapping[str, Any]) -> dict:
    rows = [
        [name, repr(value) if not isinstance(value, str) or name != "api_key" else value]
        for name, value in settings.items()
    ]
    text = _table(["setting", "value"], rows)
    return {
        "text/plain": text,
        "text/html": _html_table(["setting", "value"], [[html.escape(a), html.escape(b)] for a, b in rows]),
    }


def task_status_bundle(status: TaskStatus) -> dict:
    rows = [
        ["task id", status.task_id],
        ["state", f"{status.state} (successFlag {status.flag}, {status.flag_name})"],
        ["created", status.created or "—"],
        ["completed", status.completed or "—"],
        ["result URL", status.result_url or "—"],
    ]
    if status.error_message or status.error_code:
        rows.append(["error", f"{status.error_message or ''} (code {status.error_code})"])
    text = _table(["field", "value"], rows)
    return {
        "text/plain": text,
        "text/html": _html_table(["field", "value"], [[html.escape(a), html.escape(b)] for a, b in rows]),
    }


def dry_run_bundle(
    request: GenerationRequest,
    base_url: str,
    key: ApiKey | None,
    references: Sequence[Mapping[str, Any]] = (),
    cost_note: str = "",
) -> dict:
    """What would be sent, with the key masked; `references` (source, sha256, url) as they would go,
    and what it would cost."""
    body = request.to_body()
    if references:
        body["imageUrls"] = [str(ref["url"]) for ref in references]
    cost = f"; {cost_note}" if cost_note else ""
    text = (
        f"dry run: nothing sent{cost}\nPOST {base_url.rstrip('/')}/api/v1/nanobanana/generate-2\n"
        f"Authorization: Bearer {mask(key.reveal() if key else None)}\n{json.dumps(body, indent=2, ensure_ascii=False)}"
    )
    if references:
        lines = [
            f"  {n}. {ref['source']}" + (f" · sha256 {str(ref['sha256'])[:16]}…" if ref.get("sha256") else "")
            for n, ref in enumerate(references, 1)
        ]
        text += "\nreference images (nothing uploaded yet):\n" + "\n".join(lines)
    return {"text/plain": text, "text/html": f"<pre style='{MONO}'>{html.escape(text)}</pre>"}


def help_text(cell_usage: str, commands: Mapping[str, Callable], footer: str = "") -> str:
    parts = [
        "nanobanana-magic: images from the NanoBanana API in a notebook.",
        "",
        "CELL MAGIC",
        "",
        cell_usage.strip(),
        "",
        "LINE MAGIC COMMANDS",
        "",
    ]
    for name, func in commands.items():
        parser = getattr(func, "parser", None)
        usage = parser.format_usage().replace("usage: ", "").strip() if parser else f"%nanobanana {name}"
        doc = (getattr(parser, "description", None) or "").strip()
        parts.append(f"  {usage}")
        if doc:
            parts.append(f"      {doc.splitlines()[0]}")
    parts += ["", footer] if footer else []
    return "\n".join(parts)


def sweep_dry_run_bundle(combos: list[dict], requests: list[GenerationRequest], cost_note: str = "") -> dict:
    """The requests a sweep would send, their count and (when prices are known) their cost."""
    rows = []
    for n, (combo, request) in enumerate(zip(combos, requests), 1):
        body = request.to_body()
        rows.append(
            [
                str(n),
                ", ".join(f"{k}={v}" for k, v in combo.items()),
                body["resolution"],
                body["aspectRatio"],
                excerpt(body["prompt"], 50),
            ]
        )
    total = f"{len(requests)} requests; nothing sent" + (f"; {cost_note}" if cost_note else "")
    headers = ["#", "sweep", "res", "ratio", "prompt"]
    text = "dry run: " + total + "\n" + _table(headers, rows)
    return {
        "text/plain": text,
        "text/html": f"<p>dry run: {html.escape(total)}</p>"
        + _html_table(headers, [[html.escape(c) for c in row] for row in rows]),
    }
