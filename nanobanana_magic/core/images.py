"""Pillow work on bytes (no files, no threads): checks, previews, metadata spliced into saved files."""

from __future__ import annotations

import json
import re
import struct
import zlib
from io import BytesIO
from typing import Any

from .errors import DownloadError

METADATA_KEY = "nanobanana"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def image_format(data: bytes) -> str:
    """ "png", "jpg" or "bin", from the magic bytes (the server may not send what was asked)."""
    if data.startswith(_PNG_SIGNATURE):
        return "png"
    if data.startswith(b"\xff\xd8"):
        return "jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "bin"


#: A PNG or JPEG already within `max_px` and no larger than this is its own preview (nothing
#: decoded): about twice the size of a 1024 px preview at quality 85, so the notebook stays small.
PASSTHROUGH_MAX_BYTES = 256 * 1024


def preview_bytes(data: bytes, max_px: int, fmt: str = "jpeg", quality: int = 85) -> bytes:
    """A copy no larger than `max_px` on its longest side, encoded as JPEG or PNG.

    Decodes as little as it can: a small file that already fits is used as it is (a JPEG
    without its comments; a PNG also where JPEG is asked, since every browser shows both: it
    saves decoding a million pixels per 1K result), a large JPEG is decoded at a reduced scale
    (`draft`), anything else once. `image_format` of the answer tells which it is.
    """
    from PIL import Image

    with Image.open(BytesIO(data)) as image:
        wants_jpeg = fmt.lower() in ("jpeg", "jpg")
        if _fits_as_is(image, len(data), max_px, wants_jpeg):
            return _without_comments(data) if image.format == "JPEG" else data
        if image.format == "JPEG":
            image.draft("RGB", (max_px, max_px))  # decode at reduced scale: much faster for 4K
        # reducing_gap 1: shrink by the largest whole factor first (a box average, as good as any
        # filter at a whole factor and several times faster on 16 megapixels), then Lanczos the rest.
        image.thumbnail((max_px, max_px), Image.Resampling.LANCZOS, reducing_gap=1.0)
        # Pillow copies an image read from a file object before saving it to another one (both are
        # named "", so it cannot tell them apart): naming the source saves copying every pixel.
        image.filename = "<preview source>"
        out = BytesIO()
        if wants_jpeg:
            if image.mode not in ("RGB", "L"):
                image = _flatten(image)
            image.save(out, "JPEG", quality=quality)  # optimize=True costs a quarter more CPU for 4% fewer bytes
        else:
            image.save(out, "PNG", optimize=False, compress_level=6)
        return out.getvalue()


def _fits_as_is(image: Any, size: int, max_px: int, wants_jpeg: bool) -> bool:
    if max(image.size) > max_px or size > PASSTHROUGH_MAX_BYTES:
        return False
    if image.format == "PNG":
        return True
    return wants_jpeg and image.format == "JPEG" and image.mode in ("RGB", "L")  # browsers show CMYK badly


def _without_comments(data: bytes) -> bytes:
    """A JPEG without its comment (COM) segments, such as the metadata `embed_metadata` adds.

    Only the segments before the scan are walked; anything unexpected leaves the bytes as they are.
    """
    kept, pos = [data[:2]], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xDA:  # start of scan: the rest is entropy-coded data
            kept.append(data[pos:])
            return b"".join(kept)
        end = pos + 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if marker != 0xFE:
            kept.append(data[pos:end])
        pos = end
    return data


def _flatten(image: Any) -> Any:
    from PIL import Image

    rgba = image.convert("RGBA")
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def embed_metadata(data: bytes, metadata: dict) -> bytes:
    """The same image with `metadata` (JSON) embedded: a PNG iTXt chunk or a JPEG comment.

    The bytes are spliced, not re-encoded: fast for 4K, and the pixels stay exactly the API's.
    """
    text = json.dumps(metadata, ensure_ascii=False, sort_keys=True)
    kind = image_format(data)
    if kind == "png":
        return _png_with_text(data, METADATA_KEY, text)
    if kind == "jpg":
        return _jpeg_with_comment(data, f"{METADATA_KEY}:{text}")
    return data


def read_metadata(data: bytes) -> dict | None:
    """The metadata `embed_metadata` wrote, read back with Pillow, or None."""
    from PIL import Image

    with Image.open(BytesIO(data)) as image:
        text = getattr(image, "text", {}).get(METADATA_KEY) if image.format == "PNG" else None
        comment = image.info.get("comment")
        if text is None and comment:
            comment = comment.decode("utf-8", "replace") if isinstance(comment, bytes) else comment
            prefix = METADATA_KEY + ":"
            text = comment[len(prefix) :] if comment.startswith(prefix) else None
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _png_with_text(data: bytes, keyword: str, text: str) -> bytes:
    # iTXt: keyword, NUL, compression flag and method, empty language and translated keyword.
    payload = keyword.encode("latin-1") + b"\x00\x00\x00\x00\x00" + text.encode("utf-8")
    chunk = struct.pack(">I", len(payload)) + b"iTXt" + payload
    chunk += struct.pack(">I", zlib.crc32(b"iTXt" + payload) & 0xFFFFFFFF)
    ihdr_end = len(_PNG_SIGNATURE) + 8 + struct.unpack(">I", data[8:12])[0] + 4
    return data[:ihdr_end] + chunk + data[ihdr_end:]


def _jpeg_with_comment(data: bytes, text: str) -> bytes:
    payload = text.encode("utf-8")[: 65533 - 2]
    segment = b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload
    pos = 2
    # JFIF/EXIF (APPn) segments must stay first; the comment goes after them.
    while pos + 4 <= len(data) and data[pos] == 0xFF and 0xE0 <= data[pos + 1] <= 0xEF:
        pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
    return data[:pos] + segment + data[pos:]


#: The API's largest result (4K) has about 16.8 million pixels. Pillow's own bomb limit lets
#: through images that decode to ~0.7 GB; far bigger than any real result is refused undecoded.
MAX_RESULT_PIXELS = 64 * 1024 * 1024


class CorruptImage(ValueError):
    """The bytes are not a whole image (a broken download is worth another try)."""


def check_image(data: bytes, max_pixels: int = MAX_RESULT_PIXELS) -> str:
    """Prove the bytes are a whole image without decoding the pixels; return "png", "jpg" or "webp".

    PNG: every chunk's CRC up to IEND (Pillow's verify). JPEG: a valid header, then segments and
    scans up to the end-of-image marker that closes them (`jpeg_end`). Bytes after the end of
    either are legal (cameras and editors append data there) and are kept. Others are decoded.
    Raises `DownloadError` for what no result can be, `CorruptImage` for a broken file.
    """
    from PIL import Image

    kind = image_format(data)
    if kind == "bin":
        raise CorruptImage("the result image is truncated or corrupt (it does not start like a PNG, JPEG or WebP file)")
    try:
        with Image.open(BytesIO(data)) as image:
            if image.width * image.height > max_pixels:
                raise DownloadError(
                    f"the result image has too many pixels to decode safely "
                    f"({image.width}x{image.height}, limit {max_pixels:,})"
                )
            if image.format == "PNG":
                image.verify()
            elif image.format == "JPEG":
                if jpeg_end(data) is None:
                    raise OSError("JPEG without its end-of-image marker")
            else:
                image.load()
    except Image.DecompressionBombError as exc:
        raise DownloadError(f"the result image has too many pixels to decode safely ({exc.args[0][:80]})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise CorruptImage(f"the result image is truncated or corrupt ({type(exc).__name__})") from None
    return kind


#: A marker inside entropy-coded data: 0xFF followed by neither a stuffed 0x00, a restart marker
#: (0xD0-0xD7) nor another 0xFF (fill).
_JPEG_MARKER = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


def jpeg_end(data: bytes) -> int | None:
    """The offset just past the end-of-image marker that closes the JPEG's scans, or None.

    Segments are skipped by their declared length (so an EXIF thumbnail's own markers are not
    mistaken for the image's), and each scan's data runs to the next marker. None when the
    file stops before its end marker or its structure is broken.
    """
    pos, size = 2, len(data)
    while pos + 2 <= size:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:
            return pos + 2
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if pos + 4 > size:
            return None
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if length < 2:
            return None
        pos += 2 + length
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next marker
            found = _JPEG_MARKER.search(data, pos)
            if found is None:
                return None
            pos = found.start()
    return None


SUFFIXES = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".webp": "webp"}
_PIL_NAMES = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}


def suffix_format(suffix: str) -> str:
    """ "png", "jpg" or "webp" for a file suffix; `InvalidRequestError` for any other."""
    from .errors import InvalidRequestError

    fmt = SUFFIXES.get(suffix.lower())
    if fmt is None:
        raise InvalidRequestError(f"cannot save as '{suffix or '(no suffix)'}'; use one of {' '.join(SUFFIXES)}")
    return fmt


def convert(data: bytes, fmt: str, quality: int = 95) -> bytes:
    """The image re-encoded as `fmt` ("png", "jpg" or "webp"), metadata comment kept for JPEG/PNG."""
    from PIL import Image

    metadata = read_metadata(data)
    with Image.open(BytesIO(data)) as image:
        if fmt == "jpg" and image.mode not in ("RGB", "L"):
            image = _flatten(image)
        out = BytesIO()
        image.save(out, _PIL_NAMES[fmt], **({"quality": quality} if fmt != "png" else {}))
    converted = out.getvalue()
    return embed_metadata(converted, metadata) if metadata else converted
