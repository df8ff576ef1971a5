"""The output directory: run log lines, saved files with metadata, safe names."""

from __future__ import annotations

import json
import multiprocessing
from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image

from nanobanana_magic.core.images import embed_metadata, image_format, preview_bytes, read_metadata
from nanobanana_magic.core.params import request_key
from nanobanana_magic.core.states import TaskState
from nanobanana_magic.runtime.generation import Outcome
from nanobanana_magic.runtime.store import Store


def _image_bytes(fmt: str, size=(64, 48)) -> bytes:
    out = BytesIO()
    Image.new("RGB", size, (200, 120, 40)).save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_metadata_is_embedded_without_touching_the_pixels(fmt):
    data = _image_bytes(fmt)
    tagged = embed_metadata(data, {"task_id": "abc", "request": {"prompt": "ünïcode ✓"}})
    assert read_metadata(tagged) == {"task_id": "abc", "request": {"prompt": "ünïcode ✓"}}
    assert Image.open(BytesIO(tagged)).tobytes() == Image.open(BytesIO(data)).tobytes()


def test_preview_fits_the_longest_side():
    preview = preview_bytes(_image_bytes("PNG", (4000, 1000)), 1024, "jpeg")
    assert Image.open(BytesIO(preview)).size == (1024, 256)
    assert image_format(preview) == "jpg"


def _save(store: Store, task_id: str, data: bytes, request: dict | None = None) -> tuple[Path, str]:
    return store.save_image(task_id, request or {"prompt": "p", "outputFormat": "png"}, "http://files/x.png", 1.0, data)


def _succeeded(task_id: str, path: Path, sha256: str) -> Outcome:
    return Outcome(task_id, TaskState.SUCCEEDED, 2.0, 1.0, url="http://files/x.png", path=path, sha256=sha256)


@pytest.mark.parametrize("task_id", ["../../etc/passwd", "/abs/path", "a/b\\c", "..", "", "ÿ\x00\n"])
def test_saved_file_names_cannot_escape_the_output_dir(tmp_path, task_id):
    store = Store(tmp_path / "out")
    path, _ = _save(store, task_id, _image_bytes("PNG"))
    assert path.parent == tmp_path / "out" and path.exists()


def test_same_task_saved_twice_gets_two_files(tmp_path):
    store = Store(tmp_path)
    first, _ = _save(store, "abcdef1234", _image_bytes("PNG"))
    second, _ = _save(store, "abcdef1234", _image_bytes("PNG"))
    assert first != second and first.exists() and second.exists()


def test_file_extension_follows_the_bytes_not_the_request(tmp_path):
    path, _ = _save(Store(tmp_path), "t1", _image_bytes("JPEG"), {"prompt": "p", "outputFormat": "png"})
    assert path.suffix == ".jpg"


def test_run_log_merges_submit_and_outcome(tmp_path):
    store = Store(tmp_path)
    store.record_submit("t1", {"prompt": "a"}, 1000.0)
    store.record_submit("t2", {"prompt": "b"}, 1001.0)
    path, sha256 = _save(store, "t1", _image_bytes("PNG"), {"prompt": "a"})
    store.record_outcome(_succeeded("t1", path, sha256))
    entries = {e.task_id: e for e in store.entries()}
    assert entries["t1"].status == "succeeded" and entries["t1"].sha256 and entries["t1"].file
    assert entries["t2"].pending


def test_torn_last_line_is_skipped(tmp_path):
    store = Store(tmp_path)
    store.record_submit("t1", {"prompt": "a"}, 1.0)
    with open(store.log_path, "a") as handle:
        handle.write('{"event": "submitted", "task_id": "t2", "requ')
    assert [e.task_id for e in store.entries()] == ["t1"]


def _append_many(directory: str, writer: int) -> None:
    store = Store(directory)
    for n in range(200):
        store.record_submit(f"w{writer}-{n}", {"prompt": "x" * 3000}, float(n))


def test_appends_from_several_processes_never_interleave(tmp_path):
    processes = [multiprocessing.Process(target=_append_many, args=(str(tmp_path), w)) for w in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(30)
    lines = Path(tmp_path / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 800
    assert all(json.loads(line)["request"]["prompt"] == "x" * 3000 for line in lines)


API = "http://127.0.0.1:1"


def test_cache_keys_hold_the_api_and_the_canonical_request(tmp_path):
    store = Store(tmp_path)
    body = {"prompt": "a", "resolution": "1K"}
    store.record_submit("t1", body, 1.0, api=API, key=request_key(API, body))
    path, sha256 = _save(store, "t1", _image_bytes("PNG"), body)
    store.record_outcome(_succeeded("t1", path, sha256))
    assert store.find_cached(request_key(API, dict(reversed(list(body.items()))))).task_id == "t1"
    assert store.find_cached(request_key(API, {"prompt": "b", "resolution": "1K"})) is None
    assert store.find_cached(request_key("https://api.nanobananaapi.ai", body)) is None  # another API


def test_a_refetch_adds_an_event_and_keeps_the_recorded_outcome(tmp_path):
    store = Store(tmp_path)
    store.record_submit("t1", {"prompt": "a"}, 1000.0)
    path, sha256 = _save(store, "t1", _image_bytes("PNG"))
    store.record_outcome(Outcome("t1", TaskState.SUCCEEDED, 1003.0, 3.0, path=path, sha256=sha256))
    again, sha_again = _save(store, "t1", _image_bytes("PNG", (10, 10)))
    store.record_outcome(Outcome("t1", TaskState.SUCCEEDED, 9999.0, 8999.0, path=again, sha256=sha_again))
    entry = store.entry("t1")
    assert (entry.finished_at, entry.elapsed, entry.status) == (1003.0, 3.0, "succeeded")
    assert entry.file == again.name and entry.sha256 == sha_again and entry.events == ["restored"]


def test_a_record_written_after_a_torn_line_is_not_lost(tmp_path):
    store = Store(tmp_path)
    store.record_submit("t1", {"prompt": "a"}, 1.0)
    with open(store.log_path, "a") as handle:
        handle.write('{"event": "submitted", "task_id": "torn", "requ')  # a writer died here
    store.record_submit("t2", {"prompt": "b"}, 2.0)
    assert [e.task_id for e in store.entries()] == ["t1", "t2"]


def test_entries_follow_lines_appended_by_another_writer(tmp_path):
    mine, theirs = Store(tmp_path), Store(tmp_path)
    mine.record_submit("t1", {"prompt": "a"}, 1.0)
    assert [e.task_id for e in mine.entries()] == ["t1"]
    theirs.record_submit("t2", {"prompt": "b"}, 2.0)  # another kernel, same directory
    assert [e.task_id for e in mine.entries()] == ["t1", "t2"]
    mine.log_path.unlink()
    assert mine.entries() == []
