"""Provenance: the run log as tables and files a methods section can cite, and a check of the files."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..core.errors import InvalidRequestError
from .store import RunEntry, Store, sha256_file

FORMATS = ("table", "json", "csv", "markdown")
EXPORT_SUFFIXES = {".json": "json", ".csv": "csv", ".md": "markdown", ".markdown": "markdown", ".jsonl": "jsonl"}
COLUMNS = [
    "task_id",
    "status",
    "submitted",
    "finished",
    "elapsed_s",
    "prompt",
    "aspectRatio",
    "resolution",
    "outputFormat",
    "googleSearch",
    "imageUrls",
    "file",
    "sha256",
    "url",
    "error",
]


def _iso(t: float | None) -> str | None:
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds") if t else None


def parse_since(text: str, now: float | None = None) -> float:
    """`30m`, `2h`, `7d` ago, or a date/time like `2026-11-24` or `2026-11-24 10:30`."""
    now = time.time() if now is None else now
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if match:
        seconds = float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return now - seconds
    for pattern in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(text.strip(), pattern).timestamp()
        except ValueError:
            continue
    raise InvalidRequestError(f"--since '{text}' is not a time; use e.g. 30m, 2h, 7d, 2026-11-24 or '2026-11-24 10:30'")


def select(entries: Iterable[RunEntry], since: float | None = None) -> list[RunEntry]:
    return [e for e in entries if since is None or (e.submitted_at or e.finished_at or 0) >= since]


def record(entry: RunEntry, store: Store) -> dict:
    """Everything known about one generation, with the full request body."""
    elapsed = entry.elapsed  # the task's own duration, as the run log recorded it
    if elapsed is None and entry.finished_at and entry.submitted_at:
        elapsed = round(entry.finished_at - entry.submitted_at, 2)
    return {
        "task_id": entry.task_id,
        "status": entry.status,
        "submitted": _iso(entry.submitted_at),
        "finished": _iso(entry.finished_at),
        "elapsed_s": elapsed,
        "request": entry.request,
        "file": str(store.file_path(entry)) if entry.file else None,
        "sha256": entry.sha256,
        "url": entry.url,
        "error": entry.error,
    }


def _flat(rec: dict) -> dict:
    request = rec.get("request") or {}
    row = {k: rec.get(k) for k in COLUMNS if k in rec}
    for key in ("prompt", "aspectRatio", "resolution", "outputFormat", "googleSearch"):
        row[key] = request.get(key)
    row["imageUrls"] = " ".join(request.get("imageUrls") or [])
    return {k: row.get(k) for k in COLUMNS}


def render(entries: list[RunEntry], store: Store, fmt: str) -> str:
    """The entries as json, jsonl, csv or markdown text."""
    records = [record(e, store) for e in entries]
    if fmt == "json":
        return json.dumps(records, indent=2, ensure_ascii=False)
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(_flat(r) for r in records)
        return out.getvalue()
    if fmt == "markdown":
        head = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
        lines = ["| " + " | ".join(_md(v) for v in _flat(r).values()) + " |" for r in records]
        return head + "\n".join(lines) + ("\n" if lines else "")
    raise InvalidRequestError(f"format '{fmt}' is not supported; use one of {' '.join(FORMATS)}")


def _md(value: object) -> str:
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def export(path: str | Path, entries: list[RunEntry], store: Store) -> Path:
    """Write every entry to `path`; the format follows the suffix (.json .jsonl .csv .md)."""
    path = Path(path).expanduser()
    fmt = EXPORT_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise InvalidRequestError(f"export path '{path}' needs one of the suffixes {' '.join(EXPORT_SUFFIXES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(entries, store, fmt), encoding="utf-8")
    return path


@dataclass(frozen=True)
class Check:
    """One saved file against the run log: "ok", "missing" or "altered"."""

    entry: RunEntry
    state: str
    path: Path


def verify(store: Store) -> list[Check]:
    """Re-hash every saved file and compare with the sha256 in the run log."""
    checks = []
    for entry in store.entries():
        if entry.status != "succeeded" or not entry.file:
            continue
        path = store.file_path(entry)
        if not path.exists():
            checks.append(Check(entry, "missing", path))
        elif entry.sha256 and sha256_file(path) != entry.sha256:
            checks.append(Check(entry, "altered", path))
        else:
            checks.append(Check(entry, "ok", path))
    return checks
