"""resolve(): reference-image sources (-i strings, @NAME, Python objects) become Reference
records; what the API cannot fetch is uploaded, after every source has been checked."""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import FrozenInstanceError, dataclass
from pathlib import Path

import pytest
import requests
from PIL import Image

from nanobanana_magic.core.errors import InvalidRequestError
from nanobanana_magic.runtime import references
from nanobanana_magic.runtime.references import (
    MAX_REFERENCE_BYTES,
    NEEDS_UPLOAD_HINT,
    Reference,
    cache_identity,
    resolve,
)
from nanobanana_magic.runtime.uploads import Uploader

NOW = 1_800_000_000.0
TTL = 600.0


class FakeUploader:
    """Records what would be uploaded; the URL changes per call, as signed URLs do."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def url_for(self, data: bytes, suffix: str) -> str:
        self.calls.append((hashlib.sha256(data).hexdigest(), suffix))
        return f"https://store.example/{self.calls[-1][0]}{suffix}?sig={len(self.calls)}"


@dataclass
class FakeGeneration:
    task_id: str
    status: str = "succeeded"
    url: str | None = "https://results.example/task.png"
    path: Path | None = None
    finished_at: float | None = NOW - 10


def image_bytes(fmt: str = "PNG", color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format=fmt)
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def never_called():
    raise AssertionError("uploader_factory was called although nothing needed uploading")


@pytest.fixture
def uploader():
    return FakeUploader()


@pytest.fixture
def run(tmp_path, uploader):
    """resolve() with cwd = tmp_path, the fake uploader and fixed times."""

    def call(sources, namespace=None, **kwargs):
        kwargs.setdefault("uploader_factory", lambda: uploader)
        return resolve(sources, namespace=namespace or {}, cwd=tmp_path, result_url_ttl=TTL, now=NOW, **kwargs)

    return call


@pytest.fixture
def png_file(tmp_path):
    path = tmp_path / "cat.png"
    path.write_bytes(image_bytes())
    return path


# --- URLs and files ----------------------------------------------------------------------------


def test_url_is_sent_as_is_without_an_uploader(run):
    refs = run(["https://example.com/a.png"], uploader_factory=never_called)
    assert refs == [
        Reference(
            source="https://example.com/a.png", kind="url", sha256=None, url="https://example.com/a.png", parent=None
        )
    ]


@pytest.mark.parametrize(
    "text", ["'https://example.com/a.png'", '"https://example.com/a.png"', "  'https://example.com/a.png'  "]
)
def test_matching_surrounding_quotes_are_stripped(run, text):
    assert run([text], uploader_factory=never_called)[0].url == "https://example.com/a.png"


def test_relative_path_is_read_from_cwd_and_uploaded_under_its_sha256(run, uploader, png_file):
    (ref,) = run(["cat.png"])
    data = png_file.read_bytes()
    assert (ref.source, ref.kind, ref.sha256, ref.parent) == (str(png_file), "file", sha(data), None)
    assert uploader.calls == [(sha(data), ".png")]
    assert ref.url.startswith(f"https://store.example/{sha(data)}.png")


def test_absolute_and_home_relative_paths(run, png_file, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    refs = run([str(png_file), "~/cat.png", f"'{png_file}'"])
    assert [ref.source for ref in refs] == [str(png_file)] * 3


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("JPEG", ".jpg"), ("WEBP", ".webp")])
def test_format_is_decided_by_magic_bytes_not_by_name(run, uploader, tmp_path, fmt, suffix):
    (tmp_path / "misnamed.gif").write_bytes(image_bytes(fmt))
    run(["misnamed.gif"])
    assert uploader.calls[0][1] == suffix


def test_missing_file_says_where_relative_paths_are_read_from(run, tmp_path):
    with pytest.raises(InvalidRequestError, match="reference image not found: .*nope.png") as caught:
        run(["nope.png"])
    assert f"working directory {tmp_path}" in str(caught.value)


def test_folder_is_refused(run, tmp_path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(InvalidRequestError, match="is a folder; give an image file"):
        run(["dir"])


def test_special_file_is_refused_without_reading_it(run, tmp_path):
    os.mkfifo(tmp_path / "pipe")  # reading it would block
    with pytest.raises(InvalidRequestError, match="is not a regular file"):
        run(["pipe"])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_refused(run, png_file):
    png_file.chmod(0)
    with pytest.raises(InvalidRequestError, match="cannot read reference image .*permission denied"):
        run(["cat.png"])


def test_read_error_is_one_line(run, png_file, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(references, "open", refuse, raising=False)
    with pytest.raises(InvalidRequestError, match=r"cannot read reference image .*cat.png: permission denied$"):
        run(["cat.png"])


def test_non_image_file_is_refused_naming_the_formats(run, tmp_path):
    (tmp_path / "notes.png").write_text("just some text")
    with pytest.raises(InvalidRequestError, match=r"notes.png is not an image \(expected PNG, JPEG or WebP\)"):
        run(["notes.png"])


def test_empty_file_is_refused(run, tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InvalidRequestError, match="is empty"):
        run(["empty.png"])


@pytest.mark.parametrize("fmt, name", [("GIF", "GIF"), ("BMP", "BMP"), ("TIFF", "TIFF")])
def test_other_image_formats_are_named_and_refused(run, tmp_path, fmt, name):
    (tmp_path / "pic").write_bytes(image_bytes(fmt))
    with pytest.raises(InvalidRequestError, match=f"is a {name} image; the API takes PNG, JPEG or WebP"):
        run(["pic"])


def test_file_over_the_size_limit_is_refused_before_reading(run, uploader, tmp_path):
    big = tmp_path / "big.png"
    with big.open("wb") as file:  # sparse: no disk used, and the check must not read it
        file.write(b"\x89PNG\r\n\x1a\n")
        file.truncate(MAX_REFERENCE_BYTES + 1)
    with pytest.raises(InvalidRequestError, match=r"big.png is 30.0 MiB; at most 30 MiB is accepted"):
        run(["big.png"])
    assert uploader.calls == []


def test_non_http_url_is_refused(run):
    with pytest.raises(InvalidRequestError, match="'ftp://host/a.png' is not an http\\(s\\) URL"):
        run(["ftp://host/a.png"])


def test_data_uri_is_refused_with_what_to_do_instead(run):
    with pytest.raises(InvalidRequestError, match="is a data: URI; .*save it to a file"):
        run(["data:image/png;base64,iVBORw0KGgo="])


# --- @NAME and Python objects -------------------------------------------------------------------


def test_undefined_name_is_refused(run):
    with pytest.raises(InvalidRequestError, match="reference image @ghost: no variable named ghost is defined"):
        run(["@ghost"])


def test_name_must_be_an_identifier(run):
    with pytest.raises(InvalidRequestError, match="after @ comes the name of a variable"):
        run(["@not a name"])


@pytest.mark.parametrize("value, type_name", [({"a": 1}, "dict"), (42, "int"), (b"\x89PNG", "bytes")])
def test_name_of_an_unsupported_type_is_refused(run, value, type_name):
    with pytest.raises(InvalidRequestError, match=f"@thing holds a {type_name}; use a Generation, a PIL image"):
        run(["@thing"], {"thing": value})


def test_name_holding_a_path_a_url_or_a_list_of_them(run, png_file):
    namespace = {"p": png_file, "u": "https://example.com/u.png", "both": [png_file, "https://example.com/l.png"]}
    refs = run(["@p", "@u", "@both"], namespace)
    assert [(ref.kind, ref.source) for ref in refs] == [
        ("file", str(png_file)),
        ("url", "https://example.com/u.png"),
        ("file", str(png_file)),
        ("url", "https://example.com/l.png"),
    ]


def test_relative_path_object_is_read_from_cwd(run, png_file):
    assert run(["@p"], {"p": Path("cat.png")})[0].source == str(png_file)


def test_nested_list_is_refused(run):
    with pytest.raises(InvalidRequestError, match=r"@frames\[1\] is a nested list"):
        run(["@frames"], {"frames": ["https://example.com/a.png", ["https://example.com/b.png"]]})


def test_bad_element_of_a_list_is_named_by_its_index(run, tmp_path):
    with pytest.raises(InvalidRequestError, match=r"nope.png \(from @frames\[1\]\)"):
        run(["@frames"], {"frames": ["https://example.com/a.png", tmp_path / "nope.png"]})


def test_pil_image_is_uploaded_as_png_with_a_stable_sha256(run, uploader):
    image = Image.new("RGB", (16, 16), "blue")
    first = run(["https://example.com/a.png", "@img"], {"img": image})[1]
    second = run(["@img"], {"img": image})[0]
    assert (first.kind, first.source) == ("image", "image:2")
    assert second.source == "image:1"
    assert first.sha256 == second.sha256
    assert [suffix for _, suffix in uploader.calls] == [".png", ".png"]


def test_pil_image_in_a_mode_png_cannot_hold_is_converted(run, uploader):
    (ref,) = run(["@img"], {"img": Image.new("CMYK", (4, 4))})
    assert ref.kind == "image" and uploader.calls[0][1] == ".png"


def test_python_objects_are_accepted_directly(run, png_file):
    refs = run([png_file, Image.new("L", (4, 4)), "https://example.com/a.png"])
    assert [ref.kind for ref in refs] == ["file", "image", "url"]


def test_a_single_source_need_not_be_in_a_list(run):
    assert run("https://example.com/a.png", uploader_factory=never_called)[0].kind == "url"


def test_python_object_of_an_unsupported_type_is_named_by_position(run):
    with pytest.raises(InvalidRequestError, match="reference image #2 is a dict"):
        run(["https://example.com/a.png", {}])


# --- Generations -----------------------------------------------------------------------------------


def test_fresh_generation_is_sent_as_its_url_with_the_sha256_of_its_file(run, tmp_path):
    saved = tmp_path / "result.png"
    saved.write_bytes(image_bytes())
    (ref,) = run(["@g"], {"g": FakeGeneration("t1", path=saved)}, uploader_factory=never_called)
    assert ref == Reference(
        source="task:t1",
        kind="generation",
        sha256=sha(saved.read_bytes()),
        url="https://results.example/task.png",
        parent="t1",
    )


def test_fresh_generation_without_its_file_has_no_sha256(run):
    (ref,) = run(["@g"], {"g": FakeGeneration("t1", path=None)}, uploader_factory=never_called)
    assert (ref.sha256, ref.url, ref.parent) == (None, "https://results.example/task.png", "t1")


def test_old_generation_is_uploaded_from_its_file_with_the_same_identity(run, uploader, tmp_path):
    saved = tmp_path / "result.png"
    saved.write_bytes(image_bytes())
    fresh = run(["@g"], {"g": FakeGeneration("t1", path=saved)})[0]
    old = run(["@g"], {"g": FakeGeneration("t1", path=saved, finished_at=NOW - TTL - 1)})[0]
    assert old.url.startswith("https://store.example/") and old.parent == "t1"
    assert uploader.calls == [(sha(saved.read_bytes()), ".png")]
    assert cache_identity([fresh]) == cache_identity([old])


def test_generation_with_no_finish_time_is_uploaded(run, uploader, tmp_path):
    saved = tmp_path / "result.jpg"
    saved.write_bytes(image_bytes("JPEG"))
    run(["@g"], {"g": FakeGeneration("t1", path=saved, finished_at=None)})
    assert uploader.calls[0][1] == ".jpg"


def test_old_generation_whose_file_is_gone_is_refused(run, tmp_path):
    g = FakeGeneration("t1", path=tmp_path / "deleted.png", finished_at=NOW - 3600)
    with pytest.raises(InvalidRequestError, match="task t1 cannot be used: its result URL may have expired"):
        run(["@g"], {"g": g})


@pytest.mark.parametrize("status, words", [("pending", "is still pending"), ("failed", "failed and has no image")])
def test_generation_without_an_image_is_refused(run, status, words):
    with pytest.raises(InvalidRequestError, match=f"@g: task t9 {words}"):
        run(["@g"], {"g": FakeGeneration("t9", status=status, url=None)})


# --- limits, uploads, identity ------------------------------------------------------------------------


def test_fourteen_references_are_accepted(run):
    assert len(run([f"https://example.com/{n}.png" for n in range(14)])) == 14


def test_more_than_fourteen_in_all_are_refused_before_anything_is_read(run):
    namespace = {"frames": [Path(f"/nonexistent/{n}.png") for n in range(10)]}
    with pytest.raises(InvalidRequestError) as caught:
        run(["@frames"] + [f"https://example.com/{n}.png" for n in range(5)], namespace, uploader_factory=never_called)
    assert str(caught.value) == "15 reference images given; the API accepts at most 14"


def test_nothing_is_uploaded_when_a_later_source_is_bad(run, uploader, png_file):
    with pytest.raises(InvalidRequestError):
        run(["cat.png", "missing.png"])
    assert uploader.calls == []


def test_without_an_upload_location_the_error_says_how_to_set_one(run, png_file):
    with pytest.raises(InvalidRequestError) as caught:
        run(["cat.png"], uploader_factory=lambda: None)
    message = str(caught.value)
    assert message.startswith("reference image 'cat.png' must be uploaded (the API takes URLs only)")
    assert message.endswith(NEEDS_UPLOAD_HINT)
    assert "%config NanoBananaMagics.upload_to = 's3://bucket/prefix'" in NEEDS_UPLOAD_HINT
    assert "NANOBANANA_UPLOAD_TO" in NEEDS_UPLOAD_HINT


def test_the_hint_can_be_swapped_by_a_higher_layer(run, png_file, monkeypatch):
    monkeypatch.setattr(references, "NEEDS_UPLOAD_HINT", "open the panel's Settings tab")
    with pytest.raises(InvalidRequestError, match="open the panel's Settings tab$"):
        run(["cat.png"], uploader_factory=lambda: None)


def test_uploader_factory_is_called_once_for_many_uploads(run, uploader, png_file):
    calls = []

    def factory():
        calls.append(1)
        return uploader

    run(["cat.png", "@img", "https://example.com/a.png"], {"img": Image.new("L", (2, 2))}, uploader_factory=factory)
    assert calls == [1]
    assert len(uploader.calls) == 2


def test_cache_identity_is_the_sha256_when_known_else_the_url(run, png_file):
    first = run(["cat.png", "https://example.com/a.png"])
    again = run(["cat.png", "https://example.com/a.png"])
    assert first[0].url != again[0].url  # a new signature each time
    digest = sha(png_file.read_bytes())
    assert cache_identity(first) == cache_identity(again) == [f"sha256:{digest}", "https://example.com/a.png"]


def test_reference_is_frozen(run):
    (ref,) = run(["https://example.com/a.png"])
    with pytest.raises(FrozenInstanceError):
        ref.url = "https://elsewhere.example/"


# --- end to end: a local file through a real S3 server ---------------------------------------------


def test_local_file_is_uploaded_to_s3_and_the_sent_url_serves_it(s3_server, s3_bucket, png_file, tmp_path):
    store = Uploader(f"s3://{s3_bucket}/refs", s3_server.options())
    (ref,) = resolve(
        ["cat.png"], namespace={}, cwd=tmp_path, uploader_factory=lambda: store, result_url_ttl=TTL, now=NOW
    )
    assert requests.get(ref.url, timeout=10).content == png_file.read_bytes()
    assert s3_server.keys(s3_bucket) == [f"refs/{ref.sha256}.png"]
    resolve([png_file], namespace={}, cwd=tmp_path, uploader_factory=lambda: store, result_url_ttl=TTL, now=NOW)
    assert (store.uploaded, store.skipped) == (1, 1)
