"""The output directory: saved images and the run log `runs.jsonl`.

The run log is append-only, one JSON object per line. A "submitted" line is
written as soon as the API returns a task id, a "finished" line when the API
says how the task ended. Several kernels may share a directory: each line is
written with a single `write` under an exclusive `flock`.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.images import embed_metadata, image_format
from ..core.schedule import NEWEST_DURATIONS
from ..core.version import TOOL

if TYPE_CHECKING:
    from .generation import Outcome

try:
    import fcntl
except ImportError:  # Windows: one O_APPEND write per line is still atomic enough there
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("nanobanana_magic")

RUN_LOG = "runs.jsonl"
LOCK_FILE = ".runs.lock"


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
    api: str | None = None  # the base URL it was submitted to
    key: str | None = None  # the cache key (`params.request_key`)
    references: list[dict] = field(default_factory=list)  # per reference: source, sha256, url
    parents: list[str] = field(default_factory=list)  # task ids of the generations used as references
    metadata: dict = field(default_factory=dict)  # a batch row's other columns (label, split, ...)
    events: list[str] = field(default_factory=list)  # "restored", ... after the outcome

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
        entry.api, entry.key = record.get("api"), record.get("key")
        entry.references = list(record.get("references") or [])
        entry.parents = list(record.get("parents") or [])
        entry.metadata = dict(record.get("metadata") or {})
    elif record.get("event") == "finished" and entry.pending:
        # History: the first outcome stands; later events only say where the bytes are now.
        entry.status = record.get("status") or entry.status
        entry.finished_at = record.get("t")
        entry.elapsed = record.get("elapsed")
        entry.error = record.get("error")
        _apply_file(entry, record)
    elif record.get("event") in ("finished", "restored"):
        entry.events.append(str(record.get("event")))
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
        self._by_key: dict[str, list[str]] = {}  # cache key → task ids, oldest first
        # resolution → (submitted_at, duration) of the succeeded tasks, in submit order; and how many ever
        self._durations: dict[str, list[tuple[float, float]]] = {}
        self._duration_counts: dict[str, int] = {}
        self._decide = threading.Lock()  # the in-process half of `deciding`
        self._read_upto = 0
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file parsed
        self.damaged = 0  # lines of the run log that could not be read

    # -- run log -----------------------------------------------------------

    def append(self, record: dict, *, durable: bool = True) -> None:
        """Append one line, atomically with respect to other writers.

        `durable`: wait until the line is on disk (fsync, a few ms) before returning.
        """
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
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)  # closing releases the lock

    def record_submit(
        self,
        task_id: str,
        request: dict,
        submitted_at: float,
        *,
        api: str | None = None,
        key: str | None = None,
        references: Sequence[Mapping[str, Any]] = (),
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """The paid-for fact: written before any polling, so the task can always be found.

        `api` and `key` scope the cache; `references` (source, sha256, url, parent) and `metadata`
        are provenance. Nothing secret goes in: only the URLs the API itself received.
        """
        parents = [str(r["parent"]) for r in references if r.get("parent")]
        record: dict[str, Any] = {
            "event": "submitted",
            "task_id": task_id,
            "time": _iso(submitted_at),
            "t": round(submitted_at, 3),
            "request": request,
            "api": api,
            "key": key,
        }
        if references:
            record["references"] = [{k: r.get(k) for k in ("source", "sha256", "url")} for r in references]
        if parents:
            record["parents"] = parents
        if metadata:
            record["metadata"] = dict(metadata)
        self.append(record)

    def record_outcome(self, outcome: Outcome) -> None:
        """How the task ended (first outcome) or, for a task already ended, where its bytes are now."""
        entry = self.entry(outcome.task_id)
        event = "restored" if entry is not None and not entry.pending else "finished"
        # Not fsynced: losing this line to a crash of the machine loses nothing paid for (the task then
        # reads as pending and is fetched again by its id), and the next submit's fsync writes it too.
        # A thousand results then do not each hold a worker for a disk flush.
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
            },
            durable=False,
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

    def find_cached(self, key: str) -> RunEntry | None:
        """The newest succeeded entry with this cache key (file present or not: the caller checks it)."""
        found = self.cached_entries(key)
        return found[0] if found else None

    def cached_entries(self, key: str) -> list[RunEntry]:
        """Every succeeded entry with this cache key, newest first (an older one may still have its file)."""
        with self._lock:
            self._catch_up()
            entries = (self._entries[task_id] for task_id in reversed(self._by_key.get(key, [])))
            return [replace(e) for e in entries if e.status == "succeeded"]

    def find_pending(self, key: str, younger_than: float, now: float | None = None) -> RunEntry | None:
        """The newest task with this cache key that has not ended and was submitted less than
        `younger_than` seconds ago (by any kernel): a re-run attaches to it instead of paying again."""
        now = time.time() if now is None else now
        with self._lock:
            self._catch_up()
            for task_id in reversed(self._by_key.get(key, [])):
                entry = self._entries[task_id]
                if entry.pending and entry.submitted_at and now - entry.submitted_at < younger_than:
                    return replace(entry)
        return None

    def pending_entries(self, younger_than: float, now: float | None = None) -> list[RunEntry]:
        """Every task of the log that has not ended and is younger than `younger_than` seconds, oldest first."""
        now = time.time() if now is None else now
        return [e for e in self.entries() if e.pending and e.submitted_at and now - e.submitted_at < younger_than]

    def find_prefix(self, prefix: str) -> list[RunEntry]:
        """The entries whose task id starts with `prefix` (a status line shows the first 12 characters)."""
        with self._lock:
            self._catch_up()
            return [replace(e) for t, e in self._entries.items() if t.startswith(prefix)]

    @contextmanager
    def deciding(self) -> Iterator[None]:
        """Hold the directory's decision lock: whether a request is cached, pending or to be paid
        for is decided by one kernel (or thread) at a time, so two Run Alls attach to one task."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with self._decide:
            fd = os.open(self.output_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def _catch_up(self) -> None:
        """Parse the lines appended since the last call (by any kernel); start over if the file was replaced."""
        try:
            stat = os.stat(self.log_path)
        except FileNotFoundError:
            self._entries, self._by_key, self._read_upto, self._identity = {}, {}, 0, None
            self._durations, self._duration_counts = {}, {}
            return
        identity = (stat.st_dev, stat.st_ino)
        if identity != self._identity or stat.st_size < self._read_upto:
            self._entries, self._by_key, self._read_upto, self._identity, self.damaged = {}, {}, 0, identity, 0
            self._durations, self._duration_counts = {}, {}
        if stat.st_size == self._read_upto:
            return
        with open(self.log_path, "rb") as handle:
            handle.seek(self._read_upto)
            chunk = handle.read(stat.st_size - self._read_upto)
        complete = chunk.rfind(b"\n") + 1  # a line still being written waits for the next call
        for line in chunk[:complete].splitlines():
            record = _parse_line(line)
            if record is None:
                if line.strip():
                    self.damaged += 1  # a writer died mid-line, or someone edited the file
                    log.warning("%s: skipped a damaged line (%d so far)", self.log_path, self.damaged)
                continue
            known = self._entries.get(str(record["task_id"]))
            ends = record.get("event") == "finished" and (known is None or known.pending)
            _apply(self._entries, record)
            if ends:
                self._note_duration(self._entries[str(record["task_id"])])
            if record.get("event") == "submitted" and record.get("key"):
                ids = self._by_key.setdefault(str(record["key"]), [])
                if record["task_id"] not in ids:
                    ids.append(str(record["task_id"]))
        self._read_upto += complete

    def _note_duration(self, entry: RunEntry) -> None:
        """Under the lock: a task's first outcome, kept for `durations` when it succeeded and says how long it took."""
        elapsed, resolution = entry.elapsed, entry.request.get("resolution")
        if entry.status != "succeeded" or not entry.submitted_at or not isinstance(resolution, str):
            return
        if isinstance(elapsed, (int, float)) and not isinstance(elapsed, bool) and 0 < elapsed < float("inf"):
            key = resolution.strip().upper()
            bisect.insort(self._durations.setdefault(key, []), (float(entry.submitted_at), float(elapsed)))
            self._duration_counts[key] = self._duration_counts.get(key, 0) + 1

    def durations(self, resolution: str, newest: int = NEWEST_DURATIONS) -> list[float]:
        """Seconds the `newest` last-submitted succeeded tasks of `resolution` took (`elapsed`), in submit order.

        Newest by submit, not by finish: the last tasks of a batch to finish are its slowest, and
        a plan learned from them alone would poll every task too late. Kept up to date as the run
        log is read, so asking before every submit costs nothing however long the history.
        """
        with self._lock:
            self._catch_up()
            return [duration for _, duration in self._durations.get(resolution.strip().upper(), [])[-newest:]]

    def duration_count(self, resolution: str) -> int:
        """How many succeeded tasks of `resolution` the run log holds durations for (past `durations`' cap too)."""
        with self._lock:
            self._catch_up()
            return self._duration_counts.get(resolution.strip().upper(), 0)

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
