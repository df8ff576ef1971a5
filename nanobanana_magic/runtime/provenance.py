"""Provenance: the run log as tables and files a methods section can cite, and a check of the files."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import InvalidRequestError, NanoBananaError
from .store import RunEntry, Store, sha256_file

if TYPE_CHECKING:
    from .datasets import ExportReport

FORMATS = ("table", "json", "csv", "markdown")
#: What `export` writes: a file (by default from PATH's suffix) or a dataset directory.
FILE_FORMATS = ("csv", "json", "jsonl", "md")
DATASET_FORMATS = ("imagefolder", "webdataset")
EXPORT_FORMATS = FILE_FORMATS + DATASET_FORMATS
EXPORT_SUFFIXES = {".json": "json", ".csv": "csv", ".md": "md", ".markdown": "md", ".jsonl": "jsonl"}
SINCE_SYNTAX = "30m, 2h or 7d ago, or a date 2026-11-24 or '2026-11-24 10:30' (local time)"
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
    "references",
    "parents",
    "file",
    "sha256",
    "url",
    "error",
    "parents",
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
    raise InvalidRequestError(f"--since '{text}' is not a time; use {SINCE_SYNTAX}")


def select(entries: Iterable[RunEntry], since: float | None = None) -> list[RunEntry]:
    return [e for e in entries if since is None or (e.submitted_at or e.finished_at or 0) >= since]


def read_entries(store: Store, since: str | None = None) -> list[RunEntry]:
    """The run log's entries (oldest first) submitted since `since` (`parse_since` text);
    a one-line error when `output_dir` is not a readable folder."""
    since_t = parse_since(since) if since else None
    where = store.output_dir
    if where.exists() and not where.is_dir():
        raise NanoBananaError(
            f"output_dir {str(where)!r} is a file, not a folder; it holds no run log", hint="output_dir"
        )
    try:
        return select(store.entries(), since_t)
    except OSError as exc:
        raise NanoBananaError(
            f"cannot read the run log {store.log_path}: {exc.strerror or type(exc).__name__}", hint="output_dir"
        ) from None


def record(entry: RunEntry, store: Store) -> dict:
    """Everything known about one generation: the full request body, the row's metadata, references."""
    elapsed = entry.elapsed  # the task's own duration, as the run log recorded it
    if elapsed is None and entry.finished_at and entry.submitted_at:
        elapsed = round(entry.finished_at - entry.submitted_at, 2)
    return {
        "task_id": entry.task_id,
        "status": entry.status,
        "submitted": _iso(entry.submitted_at),
        "finished": _iso(entry.finished_at),
        "elapsed_s": round(elapsed, 2) if elapsed is not None else None,
        "request": entry.request,
        # per reference image: its source (URL, path or task:<id>), the sha256 of its bytes, the URL sent
        "references": [dict(ref) for ref in entry.references],
        "parents": list(entry.parents),  # task ids of the results used as references
        "file": str(store.file_path(entry)) if entry.file else None,
        "sha256": entry.sha256,
        "url": entry.url,
        "error": entry.error,
        "api": entry.api,
        "metadata": dict(entry.metadata),
    }


def _flat(rec: dict, extra: list[str]) -> dict:
    """One table row: the request's parameters as columns, then the metadata columns (`extra`)."""
    request = rec.get("request") or {}
    row = {k: rec.get(k) for k in COLUMNS if k in rec}
    for key in ("prompt", "aspectRatio", "resolution", "outputFormat", "googleSearch"):
        row[key] = request.get(key)
    row["imageUrls"] = " ".join(request.get("imageUrls") or [])
    row["references"] = "; ".join(_reference_text(ref) for ref in rec.get("references") or [])
    row["parents"] = " ".join(rec.get("parents") or [])
    for key, value in (rec.get("metadata") or {}).items():
        row[_metadata_columns([key])[0]] = _text(value)
    return {column: row.get(column) for column in [*COLUMNS, *extra]}


def _metadata_keys(records: list[dict]) -> list[str]:
    """Every metadata key of the records, in first-seen order."""
    seen: dict[str, None] = {}
    for rec in records:
        seen.update(dict.fromkeys(rec.get("metadata") or {}))
    return list(seen)


def _metadata_columns(keys: list[str]) -> list[str]:
    """Column names for metadata keys: one that would shadow a column of ours gets `meta_` in front."""
    return [f"meta_{k}" if k in COLUMNS else k for k in keys]


def _text(value: object) -> object:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value


def _reference_text(ref: dict) -> str:
    """One reference in a flat cell: its source and, when known, the sha256 of its bytes."""
    source = str(ref.get("source") or ref.get("url") or "")
    return f"{source} sha256:{ref['sha256']}" if ref.get("sha256") else source


def render(entries: list[RunEntry], store: Store, fmt: str) -> str:
    """The entries as json, jsonl, csv or markdown text."""
    records = [record(e, store) for e in entries]
    extra = _metadata_columns(_metadata_keys(records))
    if fmt == "json":
        return json.dumps(records, indent=2, ensure_ascii=False)
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=[*COLUMNS, *extra])
        writer.writeheader()
        writer.writerows(_flat(r, extra) for r in records)
        return out.getvalue()
    if fmt in ("markdown", "md"):
        columns = [*COLUMNS, *extra]
        head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
        lines = ["| " + " | ".join(_md(v) for v in _flat(r, extra).values()) + " |" for r in records]
        return head + "\n".join(lines) + ("\n" if lines else "")
    raise InvalidRequestError(f"format '{fmt}' is not supported; use one of {' '.join(FORMATS)}")


def _md(value: object) -> str:
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


# -- export -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileExport:
    """A csv/json/jsonl/md export: the whole selection, written again (the same text leaves the file as it was)."""

    path: Path
    format: str
    count: int
    changed: bool

    def __str__(self) -> str:
        return f"wrote {self.count} generation(s) to {self.path}" + ("" if self.changed else " (unchanged)")


def export_format(path: str | Path, fmt: str | None = None) -> str:
    """The export format: `fmt` if given, else PATH's suffix, else the format of the export already at PATH."""
    if fmt:
        fmt = {"markdown": "md"}.get(fmt.strip().lower(), fmt.strip().lower())
        if fmt not in EXPORT_FORMATS:
            raise InvalidRequestError(f"export format '{fmt}' is not supported; use one of {' '.join(EXPORT_FORMATS)}")
        return fmt
    target = Path(path).expanduser()
    if target.suffix.lower() in EXPORT_SUFFIXES and not str(path).endswith(("/", os.sep)):
        return EXPORT_SUFFIXES[target.suffix.lower()]
    from .datasets import INDEX

    try:
        index = json.loads((target / INDEX).read_text(encoding="utf-8"))
        if isinstance(index, dict) and index.get("format") in DATASET_FORMATS:
            return str(index["format"])
    except (OSError, ValueError):
        pass
    raise InvalidRequestError(
        f"export path '{path}' does not say what to write; end it in {' '.join(EXPORT_SUFFIXES)} for a file, "
        f"or give --format imagefolder or --format webdataset for a dataset directory"
    )


def export(
    path: str | Path, entries: list[RunEntry], store: Store, *, fmt: str | None = None, endpoint: str = ""
) -> FileExport | ExportReport:
    """Write the entries to `path`: a file (csv, json, jsonl, md) or a dataset directory (imagefolder,
    webdataset; incremental: exporting again adds only the new images). Errors are one line."""
    fmt = export_format(path, fmt)
    if fmt in DATASET_FORMATS:
        return _export_dataset(Path(path).expanduser(), entries, store, fmt, endpoint)
    target = Path(path).expanduser()
    text = render(entries, store, "markdown" if fmt == "md" else fmt)
    try:
        if target.is_dir():
            raise IsADirectoryError(21, "it is a directory", str(target))
        target.parent.mkdir(parents=True, exist_ok=True)
        unchanged = target.is_file() and target.read_text(encoding="utf-8") == text
        if not unchanged:
            partial = target.with_name(f".{target.name}.partial")
            partial.write_text(text, encoding="utf-8")
            os.replace(partial, target)
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise NanoBananaError(f"cannot write the export {target}: {reason}; choose another path") from None
    return FileExport(target, fmt, len(entries), not unchanged)


def _export_dataset(dest: Path, entries: list[RunEntry], store: Store, fmt: str, endpoint: str) -> ExportReport:
    """Each entry goes in with the API it was submitted to (the card names it), so group them by API."""
    from .datasets import ExportReport, export_imagefolder, export_webdataset

    groups: dict[str, list[dict]] = {}
    for entry in entries:
        groups.setdefault(entry.api or endpoint, []).append(record(entry, store))
    if not groups:
        groups[endpoint] = []
    added, unchanged = 0, 0
    skipped: list[tuple[str, str]] = []
    for api, records in groups.items():
        if fmt == "imagefolder":
            report = export_imagefolder(records, dest, source_dir=store.output_dir, endpoint=api)
        else:
            report = export_webdataset(records, dest, source_dir=store.output_dir, endpoint=api)
        added, unchanged = added + report.added, unchanged + report.unchanged
        skipped += report.skipped
    return ExportReport(added, unchanged, tuple(skipped), report.path, fmt)


@dataclass(frozen=True)
class Check:
    """One saved file against the run log: "ok", "missing" or "altered"."""

    entry: RunEntry
    state: str
    path: Path


def verify(store: Store) -> list[Check]:
    """Re-hash every saved file and compare with the sha256 in the run log."""
    checks = []
    for entry in read_entries(store):
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
