"""Turn reference-image sources (`-i` strings, Python objects) into the URLs the API fetches.

A source is an http(s) URL (sent as is), a local PNG/JPEG/WebP file, `@NAME` (a variable of
the user namespace), or, from the Python API, the object itself: a `Generation`, a PIL image,
a `pathlib.Path`, a URL string, or a list or tuple of these. Whatever is not already a URL
the API can fetch is uploaded through an uploader (see `uploads.Uploader`).

`resolve` checks every source before it uploads anything: one bad file among five means
nothing is uploaded and nothing is sent.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Protocol
from urllib.parse import urlsplit

from ..core.errors import InvalidRequestError
from ..core.params import MAX_IMAGE_URLS

# No limit is documented by the API (it fetches the URL itself). 30 MiB is the largest input
# image the gateways in front of the same models state they fetch, and stays above a 2K
# result saved as PNG, so reusing a result as a reference fits. A bigger file is refused
# here, before a slow upload, rather than after it by the API with a vaguer error.
MAX_REFERENCE_BYTES = 30 * 1024 * 1024

# What a higher layer (the magics) may swap for its own wording of how to set upload_to.
NEEDS_UPLOAD_HINT = "set one with %config NanoBananaMagics.upload_to = 's3://bucket/prefix' (or NANOBANANA_UPLOAD_TO)"

ALLOWED_FORMATS = "PNG, JPEG or WebP"
_SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "WebP": ".webp"}
# Formats recognised only to name them in the error (the API does not take them).
_OTHER_IMAGE_MAGIC = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
)
_HEIF_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF"}
_GENERATION_ATTRIBUTES = ("task_id", "status", "url", "path", "finished_at")
_ACCEPTED = "a Generation, a PIL image, a pathlib.Path, a URL or file path string, or a list or tuple of these"


@dataclass(frozen=True)
class Reference:
    """One reference image as sent: where it came from, its sha256 when known, and its URL.

    `source` is the URL, the absolute path, `task:<id>` for a Generation, or `image:<n>`
    for an in-memory image (n: its 1-based position among the references).
    """

    source: str
    kind: str  # "url" | "file" | "generation" | "image"
    sha256: str | None
    url: str
    parent: str | None = None


class UrlMaker(Protocol):
    """What `resolve` needs from an uploader (`uploads.Uploader` is one)."""

    def url_for(self, data: bytes, suffix: str) -> str: ...


@dataclass
class _Leaf:
    """A source after `@NAME` and lists are expanded, before any file is read."""

    label: str  # how errors name it: the quoted -i text, @NAME, @NAME[i], or #n (n-th Python object)
    value: Any


@dataclass
class _Loaded:
    source: str
    kind: str
    label: str
    sha256: str | None = None
    url: str | None = None  # known already: nothing to upload
    data: bytes | None = None  # to upload
    suffix: str = ""
    parent: str | None = None


def resolve(
    sources: Iterable[Any] | Any,
    *,
    namespace: Mapping[str, Any] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    uploader_factory: Callable[[], UrlMaker | None] | None = None,
    result_url_ttl: float = 0.0,
    now: float | None = None,
) -> list[Reference]:
    """The references for `sources`, uploading what the API cannot fetch by itself.

    Raises InvalidRequestError (one line, nothing uploaded) for any unusable source, for
    more than MAX_IMAGE_URLS references, and when something must be uploaded but
    `uploader_factory` (called only then, at most once) returns None.
    """
    namespace = namespace if namespace is not None else {}
    cwd = Path(cwd) if cwd is not None else Path.cwd()
    now = time.time() if now is None else now
    if sources is None:
        sources = []
    elif not isinstance(sources, (list, tuple, Iterator)):
        sources = [sources]  # one source (a string, a Path, an image, a Generation)

    leaves: list[_Leaf] = []
    for number, source in enumerate(sources, 1):
        leaves.extend(_expand(source, namespace, number))
    if len(leaves) > MAX_IMAGE_URLS:
        raise InvalidRequestError(f"{len(leaves)} reference images given; the API accepts at most {MAX_IMAGE_URLS}")

    loaded = [_load(leaf, position, cwd, result_url_ttl, now) for position, leaf in enumerate(leaves, 1)]
    _upload(loaded, uploader_factory)
    return [
        Reference(source=item.source, kind=item.kind, sha256=item.sha256, url=item.url or "", parent=item.parent)
        for item in loaded
    ]


def cache_identity(references: Iterable[Reference]) -> list[str]:
    """Per reference, what identifies its image for the cache: `sha256:<hex>` when known, else the URL."""
    return [f"sha256:{ref.sha256}" if ref.sha256 else ref.url for ref in references]


def _expand(source: Any, namespace: Mapping[str, Any], number: int) -> list[_Leaf]:
    """`source` as leaves: `@NAME` looked up, lists and tuples flattened (one level)."""
    if isinstance(source, str):
        text = _unquote(source)
        if not text.startswith("@"):
            return [_Leaf(f"'{_short(text)}'", text)]
        name = text[1:]
        if not name.isidentifier():
            raise InvalidRequestError(
                f"reference image '{_short(text)}': after @ comes the name of a variable (e.g. -i @result)"
            )
        if name not in namespace:
            raise InvalidRequestError(f"reference image @{name}: no variable named {name} is defined")
        return _expand_value(namespace[name], f"@{name}")
    return _expand_value(source, f"#{number}")


def _expand_value(value: Any, label: str) -> list[_Leaf]:
    if isinstance(value, (list, tuple)):
        leaves = []
        for index, item in enumerate(value):
            if isinstance(item, (list, tuple)):
                raise InvalidRequestError(
                    f"reference image {label}[{index}] is a nested list; give a flat list of images"
                )
            leaves.append(_Leaf(f"{label}[{index}]", item))
        return leaves
    return [_Leaf(label, value)]


def _load(leaf: _Leaf, position: int, cwd: Path, result_url_ttl: float, now: float) -> _Loaded:
    value = leaf.value
    if _is_generation(value):
        return _load_generation(value, leaf.label, cwd, result_url_ttl, now)
    if _is_pil_image(value):
        data = _encode_png(value, leaf.label)
        return _Loaded(
            source=f"image:{position}", kind="image", label=leaf.label, sha256=_sha256(data), data=data, suffix=".png"
        )
    if isinstance(value, PurePath):
        return _load_file(_absolute(str(value), cwd), leaf.label, cwd)
    if isinstance(value, str):
        return _load_text(value, leaf.label, cwd)
    verb = "holds" if leaf.label.startswith("@") else "is"
    raise InvalidRequestError(f"reference image {leaf.label} {verb} a {type(value).__name__}; use {_ACCEPTED}")


def _load_text(text: str, label: str, cwd: Path) -> _Loaded:
    if not text:
        raise InvalidRequestError(f"reference image {label} is an empty string; give a URL or a file path")
    if _is_http_url(text):
        return _Loaded(source=text, kind="url", label=label, url=text)
    if text.lower().startswith("data:"):
        raise InvalidRequestError(
            f"reference image {label} is a data: URI; the API fetches images by URL: "
            "save it to a file (it is then uploaded) or pass a PIL image"
        )
    if "://" in text:
        raise InvalidRequestError(
            f"reference image '{_short(text)}' is not an http(s) URL; give an http(s) URL or a local file"
        )
    return _load_file(_absolute(text, cwd), label, cwd, relative=not os.path.isabs(os.path.expanduser(text)))


def _load_file(path: Path, label: str, cwd: Path, *, relative: bool = False) -> _Loaded:
    data, kind = _read_image(path, label, cwd if relative else None)
    return _Loaded(source=str(path), kind="file", label=label, sha256=_sha256(data), data=data, suffix=_SUFFIX[kind])


def _load_generation(generation: Any, label: str, cwd: Path, result_url_ttl: float, now: float) -> _Loaded:
    task_id = str(generation.task_id)
    status = str(generation.status)
    if status != "succeeded":
        state = "is still pending; wait for it to finish" if status == "pending" else f"{status} and has no image"
        raise InvalidRequestError(f"reference image {label}: task {task_id} {state}")
    path = _absolute(str(generation.path), cwd) if generation.path else None
    saved = path is not None and path.is_file()
    finished_at = generation.finished_at
    fresh = (
        finished_at is not None
        and now - float(finished_at) < result_url_ttl
        and isinstance(generation.url, str)
        and _is_http_url(generation.url)
    )
    if fresh:
        # The cache key must not change when the same result is later uploaded from disk.
        sha = _sha256(path.read_bytes()) if saved and path is not None else None
        return _Loaded(
            source=f"task:{task_id}", kind="generation", label=label, sha256=sha, url=generation.url, parent=task_id
        )
    if not saved:
        where = f" ({path})" if path is not None else ""
        why = (
            f"its result URL may have expired (result_url_ttl = {result_url_ttl:g} s)"
            if generation.url
            else "it has no result URL"
        )
        raise InvalidRequestError(
            f"reference image {label}: task {task_id} cannot be used: {why} and its saved file is missing{where}"
        )
    assert path is not None  # a generation without a saved file was refused above
    data, kind = _read_image(path, label, None)
    return _Loaded(
        source=f"task:{task_id}",
        kind="generation",
        label=label,
        sha256=_sha256(data),
        data=data,
        suffix=_SUFFIX[kind],
        parent=task_id,
    )


def _upload(loaded: list[_Loaded], uploader_factory: Callable[[], UrlMaker | None] | None) -> None:
    pending = [item for item in loaded if item.url is None]
    if not pending:
        return
    uploader = uploader_factory() if uploader_factory is not None else None
    if uploader is None:
        names = ", ".join(_short(item.label, 60) for item in pending[:3]) + (", …" if len(pending) > 3 else "")
        what = "reference image" if len(pending) == 1 else f"{len(pending)} reference images"
        raise InvalidRequestError(
            f"{what} {names} must be uploaded (the API takes URLs only) but no upload location is set; "
            + NEEDS_UPLOAD_HINT
        )
    for item in pending:
        assert item.data is not None
        item.url = uploader.url_for(item.data, item.suffix)
        item.data = None


def _read_image(path: Path, label: str, cwd: Path | None) -> tuple[bytes, str]:
    """The bytes of the image file at `path` and its format, or a one-line InvalidRequestError.

    `cwd` is given when `path` came from a relative path (the not-found message says so).
    """
    what = f"{path} (from {label})" if label[:1] in "@#" else str(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        hint = f" (relative paths are read from the kernel's working directory {cwd})" if cwd else ""
        raise InvalidRequestError(f"reference image not found: {what}{hint}") from None
    except OSError as exc:
        raise InvalidRequestError(f"cannot read reference image {what}: {_os_reason(exc)}") from None
    if stat.S_ISDIR(info.st_mode):
        raise InvalidRequestError(f"reference image {what} is a folder; give an image file")
    if not stat.S_ISREG(info.st_mode):
        raise InvalidRequestError(f"reference image {what} is not a regular file")
    _check_size(info.st_size, what)
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_REFERENCE_BYTES + 1)  # the file may have grown since stat
    except OSError as exc:
        raise InvalidRequestError(f"cannot read reference image {what}: {_os_reason(exc)}") from None
    _check_size(len(data), what)
    if not data:
        raise InvalidRequestError(f"reference image {what} is empty")
    kind = image_format(data)
    if kind in _SUFFIX:
        return data, kind
    if kind:
        raise InvalidRequestError(f"reference image {what} is a {kind} image; the API takes {ALLOWED_FORMATS}")
    raise InvalidRequestError(f"reference image {what} is not an image (expected {ALLOWED_FORMATS})")


def image_format(data: bytes) -> str | None:
    """The image format named by the first bytes of `data` ("PNG", "JPEG", "WebP", "GIF", ...), or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return _HEIF_BRANDS[data[8:12]]
    for magic, name in _OTHER_IMAGE_MAGIC:
        if data.startswith(magic):
            return name
    head = data[:256].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in data[:1024].lower()):
        return "SVG"
    return None


def _check_size(size: int, what: str) -> None:
    if size > MAX_REFERENCE_BYTES:
        raise InvalidRequestError(
            f"reference image {what} is {size / 2**20:.1f} MiB; at most {MAX_REFERENCE_BYTES // 2**20} MiB "
            "is accepted (downscale it or save it as JPEG)"
        )


def _encode_png(image: Any, label: str) -> bytes:
    buffer = io.BytesIO()
    try:
        # compress_level fixed: the sha256 (the cache key) must not follow Pillow's default.
        image.save(buffer, format="PNG", compress_level=6)
    except (OSError, ValueError):  # a mode PNG cannot hold (CMYK, YCbCr, ...)
        buffer = io.BytesIO()
        image.convert("RGBA" if "A" in image.getbands() else "RGB").save(buffer, format="PNG", compress_level=6)
    data = buffer.getvalue()
    _check_size(len(data), f"{label} (as PNG)")
    return data


def _is_generation(value: Any) -> bool:
    return all(hasattr(value, name) for name in _GENERATION_ATTRIBUTES) and not isinstance(value, (str, PurePath))


def _is_pil_image(value: Any) -> bool:
    # Only look if PIL is already imported: an image object cannot exist otherwise.
    pil_image = sys.modules.get("PIL.Image")
    return pil_image is not None and isinstance(value, pil_image.Image)


def _is_http_url(text: str) -> bool:
    parts = urlsplit(text)
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def _absolute(text: str, cwd: Path) -> Path:
    path = Path(os.path.expanduser(text))
    return Path(os.path.normpath(path if path.is_absolute() else cwd / path))


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1].strip()
    return text


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _os_reason(exc: OSError) -> str:
    return (exc.strerror or type(exc).__name__).lower()


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
