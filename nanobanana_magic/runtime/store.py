"""The output directory: saved images and the run log `runs.jsonl`.

The run log is append-only, one JSON object per line. A "submitted" line is
written as soon as the API returns a task id, a "finished" line when the API
says how the task ended. Several kernels may share a directory: each line is
written with a single `write` under an exclusive `flock`.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.images import embed_metadata, image_format
from ..core.params import canonical_json
from ..core.version import TOOL

if TYPE_CHECKING:
    from .generation import Outcome

try:
    import fcntl
except ImportError:  # Windows: one O_APPEND write per line is still atomic enough there
    fcntl = None  # type: ignore[assignment]

RUN_LOG = "runs.jsonl"


@dataclass
class RunEntry:
    """Everything the run log knows about one task."""

    task_id: str
    request: dict = field(default_factory=dict)
    submitted_at: float | None = None
    status: str = "pending"
    finished_at: float | None = None
    url: str | None = None
    file: str | None = None
    sha256: str | None = None
    error: str | None = None
    elapsed: float | None = None

    @property
    def pending(self) -> bool:
        return self.status == "pending"


def _parse_line(line: bytes) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:  # a torn line from a writer that died mid-write
        return None
    return record if isinstance(record, dict) and record.get("task_id") else None


def _apply(entries: dict[str, RunEntry], record: dict) -> None:
    task_id = str(record["task_id"])
    entry = entries.setdefault(task_id, RunEntry(task_id))
    if record.get("event") == "submitted":
        entry.request = record.get("request") or {}
        entry.submitted_at = record.get("t")
    elif record.get("event") == "finished" and entry.pending:
        # History: the first outcome stands; later events only say where the bytes are now.
        entry.status = record.get("status") or entry.status
        entry.finished_at = record.get("t")
        entry.elapsed = record.get("elapsed")
        entry.error = record.get("error")
        _apply_file(entry, record)
    elif record.get("event") in ("finished", "restored"):
        _apply_file(entry, record)


def _apply_file(entry: RunEntry, record: dict) -> None:
    entry.url = record.get("url") or entry.url
    if record.get("file"):
        entry.file, entry.sha256 = record["file"], record.get("sha256")


def _iso(t: float | None) -> str | None:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else None


class Store:
    """Saves images under `output_dir` and keeps the run log; a `ResultSink` for generations."""

    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir)
        self.log_path = self.output_dir / RUN_LOG
        # The parsed run log, caught up incrementally: a long history costs nothing per cell.
        self._lock = threading.Lock()  # guards the three fields below
        self._entries: dict[str, RunEntry] = {}
        self._by_body: dict[str, list[str]] = {}  # canonical request body → task ids, oldest first
        self._read_upto = 0
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file parsed

    # -- run log -----------------------------------------------------------

    def append(self, record: dict) -> None:
        """Append one line, atomically with respect to other writers."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        fd = os.open(self.log_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # a writer died mid-line: never glue our record onto its fragment
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)  # closing releases the lock

    def record_submit(self, task_id: str, request: dict, submitted_at: float) -> None:
        """The paid-for fact: written before any polling, so the task can always be found."""
        self.append(
            {
                "event": "submitted",
                "task_id": task_id,
                "time": _iso(submitted_at),
                "t": round(submitted_at, 3),
                "request": request,
            }
        )

    def record_outcome(self, outcome: Outcome) -> None:
        """How the task ended (first outcome) or, for a task already ended, where its bytes are now."""
        entry = self.entry(outcome.task_id)
        event = "restored" if entry is not None and not entry.pending else "finished"
        self.append(
            {
                "event": event,
                "task_id": outcome.task_id,
                "status": outcome.status.value,
                "time": _iso(outcome.finished_at),
                "t": round(outcome.finished_at, 3),
                "elapsed": outcome.elapsed,
                "url": outcome.url,
                "file": outcome.path.name if outcome.path else None,
                "sha256": outcome.sha256,
                "error": outcome.error,
            }
        )

    def records(self) -> Iterator[dict]:
        """Every readable line, as written; torn lines (a crash mid-write) are skipped."""
        try:
            with open(self.log_path, "rb") as handle:
                for line in handle:
                    record = _parse_line(line)
                    if record is not None:
                        yield record
        except FileNotFoundError:
            return

    def entries(self) -> list[RunEntry]:
        """One entry per task, in submit order (oldest first)."""
        with self._lock:
            self._catch_up()
            return [replace(entry) for entry in self._entries.values()]

    def entry(self, task_id: str) -> RunEntry | None:
        with self._lock:
            self._catch_up()
            entry = self._entries.get(task_id)
            return replace(entry) if entry is not None else None

    def find_cached(self, body: dict) -> RunEntry | None:
        """The newest succeeded entry with this exact body whose file is still here."""
        key = canonical_json(body)
        with self._lock:
            self._catch_up()
            same = (self._entries[t] for t in reversed(self._by_body.get(key, [])))
            candidates = [e for e in same if e.status == "succeeded" and e.file]
        for entry in candidates:
            if self.file_path(entry).is_file():  # a name like ".." must not count
                return replace(entry)
        return None

    def _catch_up(self) -> None:
        """Parse the lines appended since the last call (by any kernel); start over if the file was replaced."""
        try:
            stat = os.stat(self.log_path)
        except FileNotFoundError:
            self._entries, self._by_body, self._read_upto, self._identity = {}, {}, 0, None
            return
        identity = (stat.st_dev, stat.st_ino)
        if identity != self._identity or stat.st_size < self._read_upto:
            self._entries, self._by_body, self._read_upto, self._identity = {}, {}, 0, identity
        if stat.st_size == self._read_upto:
            return
        with open(self.log_path, "rb") as handle:
            handle.seek(self._read_upto)
            chunk = handle.read(stat.st_size - self._read_upto)
        complete = chunk.rfind(b"\n") + 1  # a line still being written waits for the next call
        for line in chunk[:complete].splitlines():
            record = _parse_line(line)
            if record is None:
                continue
            _apply(self._entries, record)
            if record.get("event") == "submitted":
                ids = self._by_body.setdefault(canonical_json(record.get("request") or {}), [])
                if record["task_id"] not in ids:
                    ids.append(str(record["task_id"]))
        self._read_upto += complete

    def file_path(self, entry: RunEntry) -> Path:
        return self.output_dir / Path(entry.file or "").name

    # -- images ------------------------------------------------------------

    def save_image(
        self, task_id: str, request: dict, url: str | None, submitted_at: float, data: bytes
    ) -> tuple[Path, str]:
        """Write the image with the request embedded; never overwrites, never leaves the directory.

        Returns the path and the sha256 of the bytes written.
        """
        import hashlib

        self.output_dir.mkdir(parents=True, exist_ok=True)
        metadata = {"task_id": task_id, "request": request, "submitted": _iso(submitted_at), "url": url, "tool": TOOL}
        data = embed_metadata(data, metadata)
        stem = time.strftime("%Y%m%d-%H%M%S", time.localtime()) + "_" + _safe_id(task_id)
        return self._write_new(stem, image_format(data), data), hashlib.sha256(data).hexdigest()

    def _write_new(self, stem: str, ext: str, data: bytes) -> Path:
        tmp = self.output_dir / f".{stem}.{os.getpid()}.{time.monotonic_ns()}.tmp"
        tmp.write_bytes(data)
        try:
            for n in range(1, 1000):
                target = self.output_dir / (f"{stem}.{ext}" if n == 1 else f"{stem}-{n}.{ext}")
                try:
                    os.link(tmp, target)  # atomic, and fails rather than overwrite
                    return target
                except FileExistsError:
                    continue
            raise OSError(f"no free file name for {stem}")
        finally:
            tmp.unlink(missing_ok=True)


def _safe_id(task_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", task_id)[:8] or "task"


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    import hashlib  # loads OpenSSL (~3 ms): not at %load_ext, only once an image is saved

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
