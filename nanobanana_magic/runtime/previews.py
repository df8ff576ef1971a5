"""Previews of saved files, made once and kept under `.previews/` beside them."""

from __future__ import annotations

import os
from pathlib import Path

from ..core.images import preview_bytes


def cached_preview(
    path: str | Path, max_px: int, fmt: str = "jpeg", quality: int = 85, *, data: bytes | None = None
) -> bytes:
    """`preview_bytes` of a saved file, kept under `.previews/`: decoding a 4K file once is enough.

    A re-run answered from the cache then shows its image without decoding 16 megapixels again.
    `data`: the image's bytes when the caller already holds them (a result just saved), so the
    file is not read again.
    """
    source = Path(path)
    ext = "png" if fmt.lower() == "png" else "jpg"
    cache = source.parent / ".previews" / f"{source.stem}_{max_px}_q{quality}.{ext}"
    try:
        if cache.stat().st_mtime >= source.stat().st_mtime:
            return cache.read_bytes()
    except OSError:
        pass
    original = source.read_bytes() if data is None else data
    data = preview_bytes(original, max_px, fmt, quality)
    if data is original:  # the file is its own preview: a copy would only take disk space
        return data
    try:
        cache.parent.mkdir(exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, cache)
    except OSError:  # a read-only output directory still shows its images
        pass
    return data
