"""The output directory: saved images and the run log `runs.jsonl`.

The run log is append-only, one JSON object per line. A "submitted" line is
written as soon as the API returns a task id, a "finished" line when the API
says how the task ended. Several kernels may share a directory: each line is
written with a single `write` under an exclusive `flock`.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .imaging import embed_metadata, image_format
from .params import canonical_json

if TYPE_CHECKING:
    from .generation import Generation

RUN_LOG = "runs.jsonl"
TOOL = "nanobanana-magic 0.1"


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

    @property
    def pending(self) -> bool:
        return self.status == "pending"


def _iso(t: float | None) -> str | None:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else None


class Store:
    """Saves images under `output_dir` and keeps the run log; a `ResultSink` for generations."""

    def __init__(self, output_dir: "str | Path") -> None:
        self.output_dir = Path(output_dir)
        self.log_path = self.output_dir / RUN_LOG

    # -- run log -----------------------------------------------------------

    def append(self, record: dict) -> None:
        """Append one line, atomically with respect to other writers."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)  # closing releases the lock

    def record_submit(self, task_id: str, request: dict, submitted_at: float) -> None:
        """The paid-for fact: written before any polling, so the task can always be found."""
        self.append({"event": "submitted", "task_id": task_id, "time": _iso(submitted_at),
                     "t": round(submitted_at, 3), "request": request})

    def record_outcome(self, generation: "Generation") -> None:
        status = "succeeded" if generation.url and generation.status == "failed" else generation.status
        path = generation.path
        self.append({"event": "finished", "task_id": generation.task_id, "status": status,
                     "time": _iso(generation.finished_at), "t": round(generation.finished_at or time.time(), 3),
                     "elapsed": round(generation.elapsed, 2), "url": generation.url,
                     "file": Path(path).name if path else None,
                     "sha256": sha256_file(path) if path else None, "error": generation.error})

    def records(self) -> Iterator[dict]:
        """Every readable line; a torn last line (a crash mid-write) is skipped."""
        try:
            with open(self.log_path, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(record, dict) and record.get("task_id"):
                        yield record
        except FileNotFoundError:
            return

    def entries(self) -> list[RunEntry]:
        """One entry per task, in submit order (oldest first)."""
        entries: dict[str, RunEntry] = {}
        for record in self.records():
            task_id = str(record["task_id"])
            entry = entries.setdefault(task_id, RunEntry(task_id))
            if record.get("event") == "submitted":
                entry.request = record.get("request") or {}
                entry.submitted_at = record.get("t")
            elif record.get("event") == "finished":
                entry.status = record.get("status") or entry.status
                entry.finished_at = record.get("t")
                entry.url = record.get("url") or entry.url
                entry.file = record.get("file") or entry.file
                entry.sha256 = record.get("sha256") or entry.sha256
                entry.error = record.get("error")
        return list(entries.values())

    def entry(self, task_id: str) -> RunEntry | None:
        return next((e for e in self.entries() if e.task_id == task_id), None)

    def find_cached(self, body: dict) -> RunEntry | None:
        """The newest succeeded entry with this exact body whose file is still here."""
        key = canonical_json(body)
        for entry in reversed(self.entries()):
            if entry.status == "succeeded" and entry.file and canonical_json(entry.request) == key:
                if self.file_path(entry).is_file():  # a name like ".." must not count
                    return entry
        return None

    def file_path(self, entry: RunEntry) -> Path:
        return self.output_dir / Path(entry.file or "").name

    # -- images ------------------------------------------------------------

    def save_image(self, generation: "Generation", data: bytes) -> Path:
        """Write the image with the request embedded; never overwrites, never leaves the directory."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        metadata = {"task_id": generation.task_id, "request": generation.request,
                    "submitted": _iso(generation.submitted_at), "url": generation.url, "tool": TOOL}
        data = embed_metadata(data, metadata)
        stem = time.strftime("%Y%m%d-%H%M%S", time.localtime()) + "_" + _safe_id(generation.task_id)
        return self._write_new(stem, image_format(data), data)

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


def sha256_file(path: "str | Path") -> str:
    """Hex sha256 of a file's bytes."""
    import hashlib  # loads OpenSSL (~3 ms): not at %load_ext, only once an image is saved

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()



def as_jsonable(entry: RunEntry) -> dict[str, Any]:
    return {k: v for k, v in entry.__dict__.items()}
