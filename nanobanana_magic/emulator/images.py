"""Pictures the emulator serves: generated results, demo samples and hostile files.

Pillow is imported inside the functions that draw, so that importing the emulator
(for example from a test's conftest) stays cheap until an image is actually needed.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import math
import textwrap
import threading
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image as PILImage

#: Pixel budget per resolution: 1K is about one megapixel, 2K four, 4K sixteen.
PIXELS = {"1K": 1024 * 1024, "2K": 2048 * 2048, "4K": 4096 * 4096}

#: Reference images larger than this are not downloaded (a placeholder is drawn).
MAX_REFERENCE_BYTES = 5 * 1024 * 1024
MAX_REFERENCE_PIXELS = 50_000_000
REFERENCE_TIMEOUT = 3.0
MAX_REFERENCES_DRAWN = 14
REFERENCE_STATUSES = ("ok", "unreachable", "too large", "not an image")
MAX_PROMPT_CHARS_DRAWN = 600

# Loopback tools should not be routed through a proxy taken from the environment.
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class RenderSpec:
    """Everything that decides what a result image looks like."""

    task_id: str
    prompt: str
    aspect_ratio: str
    resolution: str
    output_format: str
    image_urls: tuple[str, ...] = ()


def image_size(ratio_w: float, ratio_h: float, resolution: str) -> tuple[int, int]:
    """Width and height for a ratio at a resolution, both multiples of 16.

    >>> image_size(1, 1, "1K"), image_size(16, 9, "2K")
    ((1024, 1024), (2736, 1536))
    """
    width = math.sqrt(PIXELS[resolution] * ratio_w / ratio_h)
    height = width * ratio_h / ratio_w
    return _round16(width), _round16(height)


def parse_ratio(aspect_ratio: str) -> tuple[int, int]:
    """Split "16:9" into (16, 9)."""
    left, right = aspect_ratio.split(":")
    return int(left), int(right)


def render_result(spec: RenderSpec, references: list[Reference] | None = None) -> bytes:
    """Draw and encode the result image of a task; ``references`` default to fetching them now."""
    if references is None:
        references = fetch_references(spec.image_urls[:MAX_REFERENCES_DRAWN])
    if spec.aspect_ratio == "auto":
        first = references[0].image if references else None
        ratio = first.size if first is not None else (1, 1)
        # An absurd reference shape must not produce an absurd canvas.
        ratio_w = min(max(ratio[0] / ratio[1], 1 / 8), 8)
        width, height = image_size(ratio_w, 1, spec.resolution)
    else:
        width, height = image_size(*parse_ratio(spec.aspect_ratio), spec.resolution)
    image = _gradient(width, height, _palette(spec.prompt))
    _draw_references(image, references)
    _draw_prompt(image, spec.prompt)
    _draw_footer(image, f"{spec.resolution} · {spec.aspect_ratio} · {width}x{height} · task {spec.task_id}")
    return encode(image, spec.output_format)


def encode(image: PILImage.Image, output_format: str) -> bytes:
    """PNG or JPEG bytes; PNG uses a low compression level because 4K must stay fast."""
    buffer = io.BytesIO()
    if output_format == "png":
        image.save(buffer, format="PNG", compress_level=1)
    else:
        image.convert("RGB").save(buffer, format="JPEG", quality=88)
    return buffer.getvalue()


@dataclass(frozen=True)
class Reference:
    """One imageUrls entry as the emulator saw it: ``status`` is one of REFERENCE_STATUSES."""

    url: str
    status: str
    image: PILImage.Image | None = None


def fetch_references(
    urls: tuple[str, ...] | list[str], timeout: float = REFERENCE_TIMEOUT, max_bytes: int = MAX_REFERENCE_BYTES
) -> list[Reference]:
    """Fetch several references at once, so slow hosts cost one timeout, not one each."""

    def load(url: str) -> Reference:
        return load_reference(url, timeout, max_bytes)

    if len(urls) <= 1:
        return [load(url) for url in urls]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(urls), thread_name_prefix="nanobanana-reference") as pool:
        return list(pool.map(load, urls))


def fetch_reference(url: str) -> PILImage.Image | None:
    """Download and decode a reference image; None on any failure (never raises)."""
    return load_reference(url).image


def load_reference(url: str, timeout: float = REFERENCE_TIMEOUT, max_bytes: int = MAX_REFERENCE_BYTES) -> Reference:
    """Download and decode one reference image; any failure becomes a status, never an exception."""
    try:
        # No Authorization header: a reference lives on someone else's host.
        request = urllib.request.Request(url, headers={"User-Agent": "nanobanana-emulator"})
        with _NO_PROXY_OPENER.open(request, timeout=timeout) as response:
            data = response.read(max_bytes + 1)
    except Exception:
        return Reference(url, "unreachable")
    if len(data) > max_bytes:
        return Reference(url, "too large")
    return _decode_reference(url, data)


def _decode_reference(url: str, data: bytes) -> Reference:
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_REFERENCE_PIXELS:
            return Reference(url, "too large")
        image.draft("RGB", (512, 512))
        image = image.convert("RGB")
        image.thumbnail((512, 512))
        return Reference(url, "ok", image)
    except Exception:
        return Reference(url, "not an image")


def append_trailer(data: bytes, count: int) -> bytes:
    """``data`` followed by ``count`` bytes after its end marker (JPEG EOI, PNG IEND).

    Decoders stop at the marker, so the file stays a valid image, as cameras and editors
    that append their own data produce. The filler never contains 0xFF, so it cannot be
    mistaken for a JPEG marker.
    """
    filler = b"nanobanana-emulator trailing data after the end-of-image marker\n"
    return data + (filler * (count // len(filler) + 1))[:count]


def sample_names() -> tuple[str, ...]:
    """Names (without .png) of the built-in sample reference images."""
    return tuple(sorted(_SAMPLES))


@cache
def sample_png(name: str) -> bytes | None:
    """PNG bytes of a built-in sample picture, or None when there is no such sample."""
    draw = _SAMPLES.get(name)
    return encode(draw(), "png") if draw else None


@lru_cache(maxsize=1)
def bomb_png() -> bytes:
    """A tiny, valid PNG whose pixel count is over twice Pillow's bomb limit."""
    from PIL import Image

    side = math.isqrt(2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)) + 1024
    buffer = io.BytesIO()
    Image.new("1", (side, side), 0).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


class RenderCache:
    """Rendered results by key, least recently used first out.

    Each key is rendered once even when several downloads of it arrive together:
    ``_lock`` guards the table, and a per-key lock serialises the rendering itself.
    """

    def __init__(self, max_items: int = 8) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._rendering: dict[str, threading.Lock] = {}
        self.max_items = max_items

    def get(self, key: str, render: Callable[[], bytes]) -> bytes:
        """The cached bytes for ``key``, rendering them with ``render()`` when missing."""
        with self._lock:
            key_lock = self._rendering.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key]
            data = render()
            with self._lock:
                self._items[key] = data
                while len(self._items) > self.max_items:
                    self._items.popitem(last=False)
                self._rendering.pop(key, None)
            return data

    def clear(self) -> None:
        """Drop every cached image."""
        with self._lock:
            self._items.clear()


# --- drawing helpers -------------------------------------------------------------


def _round16(value: float) -> int:
    return max(16, int(round(value / 16)) * 16)


def _palette(prompt: str) -> list[tuple[int, int, int]]:
    """Four harmonious corner colours chosen by a hash of the prompt."""
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    base = digest[0] / 255
    colours = []
    for corner in range(4):
        hue = (base + corner * 0.08 + digest[corner + 1] / 255 * 0.06) % 1.0
        saturation = 0.45 + digest[corner + 5] / 255 * 0.3
        value = 0.55 + digest[corner + 9] / 255 * 0.35
        red, green, blue = colorsys.hsv_to_rgb(hue, saturation, value)
        colours.append((int(red * 255), int(green * 255), int(blue * 255)))
    return colours


def _gradient(width: int, height: int, colours: list[tuple[int, int, int]]) -> PILImage.Image:
    from PIL import Image

    # Bilinear upscaling of a 2x2 image is the cheapest smooth four-corner gradient.
    corners = Image.new("RGB", (2, 2))
    corners.putdata(colours)
    return corners.resize((width, height), Image.Resampling.BILINEAR, box=(0.5, 0.5, 1.5, 1.5))


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _draw_prompt(image: PILImage.Image, prompt: str) -> None:
    from PIL import Image, ImageDraw

    width, height = image.size
    text = " ".join(prompt.split())
    if len(text) > MAX_PROMPT_CHARS_DRAWN:
        text = text[: MAX_PROMPT_CHARS_DRAWN - 1] + "…"
    size, lines = _fit_text(text, width, height)
    font = _font(size)
    block = "\n".join(lines)
    style = {"font": font, "spacing": size // 4, "align": "center", "stroke_width": max(1, size // 18)}
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = (int(v) for v in draw.multiline_textbbox((0, 0), block, **style))
    text_w, text_h = right - left, bottom - top
    x = (width - text_w) // 2
    y = (height - text_h) // 2
    pad = size // 2
    box = (max(0, x - pad), max(0, y - pad), min(width, x + text_w + pad), min(height, y + text_h + pad))
    # Darken only the text's own rectangle: compositing the whole 4K canvas is slow.
    region = image.crop(box)
    image.paste(Image.blend(region, Image.new("RGB", region.size, (20, 20, 30)), 0.45), box)
    draw.multiline_text((x - left, y - top), block, fill=(255, 255, 255), stroke_fill=(0, 0, 0), **style)


def _fit_text(text: str, width: int, height: int) -> tuple[int, list[str]]:
    """Largest font size (within limits) at which the wrapped text fits; else cut it."""
    short_side = min(width, height)
    size = max(12, short_side // 11)
    while True:
        lines, columns = _wrap(text, size, width * 0.86)
        max_lines = max(1, int(height * 0.6 / (size * 1.25)))
        if len(lines) <= max_lines:
            return size, lines
        if size <= max(12, short_side // 30):
            lines = lines[:max_lines]
            lines[-1] = lines[-1][: max(1, columns - 1)] + "…"
            return size, lines
        size = max(12, int(size * 0.85))


def _wrap(text: str, size: int, max_width: float) -> tuple[list[str], int]:
    """Wrap to a column count whose widest line really fits (wide glyphs shrink it)."""
    font = _font(size)
    sample = "the quick brown fox jumps over a lazy dog"
    columns = max(4, int(max_width / max(1.0, font.getlength(sample) / len(sample))))
    while True:
        lines = textwrap.wrap(text, columns, break_long_words=True) or [""]
        widest = max(font.getlength(line) for line in lines[:50])
        if widest <= max_width or columns <= 4:
            return lines, columns
        columns = max(4, int(columns * max_width / widest) - 1)


def _draw_footer(image: PILImage.Image, text: str) -> None:
    from PIL import ImageDraw

    width, height = image.size
    size = max(10, min(width, height) // 48)
    font = _font(size)
    draw = ImageDraw.Draw(image)
    while size > 8 and draw.textlength(text, font=font) > width * 0.96:
        size -= 2
        font = _font(size)
    draw.text(
        (width // 2, height - size // 2),
        text,
        font=font,
        anchor="md",
        fill=(255, 255, 255),
        stroke_width=1,
        stroke_fill=(0, 0, 0),
    )


def _draw_references(image: PILImage.Image, references: list[Reference]) -> None:
    """Paste references as framed, numbered thumbnails along the top edge; failures say why."""
    from PIL import ImageDraw

    if not references:
        return
    width, height = image.size
    margin = max(4, min(width, height) // 64)
    per_row = min(len(references), 7)
    slot = min((width - margin * (per_row + 1)) // per_row, height // 5)
    if slot < 8:
        return
    draw = ImageDraw.Draw(image)
    frame = max(1, slot // 40)
    for index, reference in enumerate(references):
        row, column = divmod(index, per_row)
        left = margin + column * (slot + margin)
        top = margin + row * (slot + margin)
        draw.rectangle((left, top, left + slot - 1, top + slot - 1), fill=(250, 250, 245))
        inner = slot - 4 * frame
        if reference.image is None:
            _draw_placeholder(draw, left + 2 * frame, top + 2 * frame, inner)
            _draw_label(draw, (left + slot // 2, top + slot // 2), f"reference {index + 1}\n{reference.status}", inner)
            continue
        thumb = reference.image.copy()
        thumb.thumbnail((inner, inner))
        image.paste(thumb, (left + (slot - thumb.width) // 2, top + (slot - thumb.height) // 2))
        _draw_label(
            draw,
            (left + 3 * frame, top + slot - 3 * frame),
            str(index + 1),
            inner // 2,
            size=max(10, slot // 6),
            anchor="ld",
        )


def _draw_label(
    draw, at: tuple[int, int], text: str, max_width: int, size: int | None = None, anchor: str = "mm"
) -> None:
    """White text with a dark outline at ``at``, shrunk until it fits in ``max_width``."""
    size = size or max(8, max_width // 6)
    font = _font(size)
    while size > 8 and draw.multiline_textbbox((0, 0), text, font=font)[2] > max_width:
        size -= 1
        font = _font(size)
    draw.multiline_text(
        at,
        text,
        font=font,
        anchor=anchor,
        align="center",
        fill=(255, 255, 255),
        stroke_width=max(1, size // 10),
        stroke_fill=(0, 0, 0),
    )


def _draw_placeholder(draw, left: int, top: int, side: int) -> None:
    draw.rectangle((left, top, left + side - 1, top + side - 1), fill=(200, 200, 200))
    width = max(1, side // 20)
    draw.line((left, top, left + side - 1, top + side - 1), fill=(150, 40, 40), width=width)
    draw.line((left, top + side - 1, left + side - 1, top), fill=(150, 40, 40), width=width)


# --- samples ---------------------------------------------------------------------


def _draw_banana() -> PILImage.Image:
    from PIL import ImageDraw

    image = _gradient(480, 320, [(150, 200, 240), (120, 180, 235), (245, 235, 210), (235, 220, 190)])
    draw = ImageDraw.Draw(image)
    draw.ellipse((60, 250, 420, 300), fill=(200, 185, 160))
    draw.arc((90, -40, 390, 260), start=30, end=150, fill=(110, 80, 20), width=60)
    draw.arc((94, -36, 386, 256), start=32, end=148, fill=(250, 215, 50), width=52)
    draw.line((360, 160, 372, 176), fill=(90, 60, 20), width=10)
    draw.line((108, 176, 96, 164), fill=(90, 60, 20), width=12)
    return image


def _draw_cat() -> PILImage.Image:
    from PIL import ImageDraw

    image = _gradient(400, 400, [(250, 210, 220), (240, 190, 205), (230, 220, 250), (210, 200, 245)])
    draw = ImageDraw.Draw(image)
    fur, dark = (150, 150, 160), (40, 40, 50)
    draw.polygon([(95, 170), (120, 60), (185, 120)], fill=fur, outline=dark)
    draw.polygon([(305, 170), (280, 60), (215, 120)], fill=fur, outline=dark)
    draw.ellipse((80, 100, 320, 330), fill=fur, outline=dark, width=3)
    for eye_x in (150, 250):
        draw.ellipse((eye_x - 22, 180, eye_x + 22, 222), fill=(120, 200, 90))
        draw.ellipse((eye_x - 6, 184, eye_x + 6, 218), fill=dark)
    draw.polygon([(188, 245), (212, 245), (200, 260)], fill=(230, 130, 150))
    for side in (-1, 1):
        for dy in (-8, 4, 16):
            draw.line((200 + side * 30, 258, 200 + side * 120, 250 + dy * 2), fill=dark, width=2)
    return image


def _draw_landscape() -> PILImage.Image:
    from PIL import ImageDraw

    image = _gradient(640, 360, [(255, 190, 120), (250, 150, 120), (120, 160, 220), (90, 120, 200)])
    draw = ImageDraw.Draw(image)
    draw.ellipse((440, 50, 540, 150), fill=(255, 240, 170))
    draw.polygon([(0, 260), (160, 150), (330, 260)], fill=(70, 110, 80))
    draw.polygon([(220, 270), (430, 130), (640, 270)], fill=(55, 95, 70))
    draw.rectangle((0, 260, 640, 360), fill=(60, 130, 90))
    return image


_SAMPLES = {"banana": _draw_banana, "cat": _draw_cat, "landscape": _draw_landscape}
