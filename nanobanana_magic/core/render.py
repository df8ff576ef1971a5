"""What a generation looks like: status line, preview with caption, short error.

Every bundle has a `text/plain` fallback, so outputs read in a terminal and in `git diff`.
The preview is a scaled copy (never the full file) embedded once, inside the HTML.
"""

from __future__ import annotations

import base64
import html
import os
import time
from typing import TYPE_CHECKING, Any


if TYPE_CHECKING:
    from ..runtime.generation import Generation

MIME_META = "application/vnd.nanobanana.task+json"  # metadata key notebook tooling can read


def _params(request: dict) -> str:
    parts = [request.get("resolution"), request.get("aspectRatio"), request.get("outputFormat")]
    if request.get("googleSearch"):
        parts.append("google search")
    if request.get("imageUrls"):
        parts.append(f"{len(request['imageUrls'])} ref")
    return " · ".join(str(p) for p in parts if p)


def _excerpt(prompt: str, limit: int = 80) -> str:
    prompt = " ".join(prompt.split())
    return prompt if len(prompt) <= limit else prompt[: limit - 1] + "…"


def _shown_path(path: Any) -> str:
    if not path:
        return "—"
    try:
        rel = os.path.relpath(path)
        return rel if not rel.startswith("..") else str(path)
    except ValueError:
        return str(path)


def status_text(gen: "Generation") -> str:
    """`nanobanana · generating · 12.4 s · 2K · 16:9 · png · task 31ce2c17b257…`"""
    state = {"pending": "generating", "cancelled": "cancelled (still in the history)"}.get(gen.status, gen.status)
    return f"nanobanana · {state} · {gen.elapsed:.1f} s · {_params(gen.request)} · task {gen.task_id[:12]}…"


def caption_lines(gen: "Generation") -> list[str]:
    """Two lines under the image: what was asked, and where it is."""
    if gen.cached:
        first = time.strftime("%Y-%m-%d %H:%M", time.localtime(gen.first_generated or gen.submitted_at))
        return [f"\"{_excerpt(gen.prompt)}\" · {_params(gen.request)}",
                f"cached · first generated {first} · task {gen.task_id} · {_shown_path(gen.path)}"]
    return [f"\"{_excerpt(gen.prompt)}\" · {_params(gen.request)} · {gen.elapsed:.1f} s",
            f"task {gen.task_id} · {_shown_path(gen.path)}"]


def error_text(gen: "Generation") -> str:
    name = type(gen.exception).__name__ if gen.exception is not None else "NanoBananaError"
    return f"{name}: {gen.error}"


def task_metadata(gen: "Generation") -> dict:
    return {MIME_META: {"task_id": gen.task_id, "status": gen.status, "request": gen.request,
                        "path": str(gen.path) if gen.path else None, "url": gen.url,
                        "cached": gen.cached, "elapsed": round(gen.elapsed, 2)}}


_STATUS_STYLE = "font-family:var(--jp-code-font-family,monospace);font-size:12px;color:#666"
_ERROR_STYLE = ("font-family:var(--jp-code-font-family,monospace);font-size:12px;color:#b00020;"
                "background:#fdecea;padding:4px 8px;border-radius:3px")


def status_bundle(gen: "Generation") -> tuple[dict, dict]:
    text = status_text(gen)
    icon = {"pending": "⏳", "failed": "✗", "cancelled": "■"}.get(gen.status, "")
    return {"text/plain": text, "text/html": f"<div style='{_STATUS_STYLE}'>{icon} {html.escape(text)}</div>"}, task_metadata(gen)


def error_bundle(gen: "Generation") -> tuple[dict, dict]:
    text = error_text(gen)
    return {"text/plain": text, "text/html": f"<div style='{_ERROR_STYLE}'>{html.escape(text)}</div>"}, task_metadata(gen)


def result_bundle(gen: "Generation", max_px: int = 1024, fmt: str = "jpeg") -> tuple[dict, dict]:
    """Preview image and caption as one output; falls back to the status when there is no image."""
    if gen.status != "succeeded":
        return error_bundle(gen) if gen.error else status_bundle(gen)
    mime = "image/png" if fmt.lower() == "png" else "image/jpeg"
    lines = caption_lines(gen)
    try:
        image = gen.preview(max_px, fmt)
    except (OSError, SyntaxError, ValueError) as exc:  # the file is saved; only the preview failed
        image, lines = None, [*lines, f"(no preview: the image could not be decoded: {type(exc).__name__})"]
    if image is None:
        return {"text/plain": "\n".join(lines)}, task_metadata(gen)
    preview = base64.b64encode(image).decode("ascii")
    caption = "<br>".join(html.escape(line) for line in lines)
    alt = html.escape(_excerpt(gen.prompt), quote=True)
    markup = (f"<figure style='margin:0'><img src='data:{mime};base64,{preview}' alt=\"{alt}\" "
              f"style='max-width:100%;height:auto'/><figcaption style='{_STATUS_STYLE}'>{caption}"
              "</figcaption></figure>")
    return {"text/plain": "\n".join(lines), "text/html": markup}, task_metadata(gen)


def bundle_for(gen: "Generation", max_px: int = 1024, fmt: str = "jpeg") -> tuple[dict, dict]:
    """The bundle for the generation's current state."""
    if gen.status == "succeeded":
        return result_bundle(gen, max_px, fmt)
    if gen.status == "pending":
        return status_bundle(gen)
    if gen.status == "cancelled":
        return status_bundle(gen)
    return error_bundle(gen)


def generation_html(gen: "Generation") -> str:
    """`_repr_html_` of a Generation: a small preview (512 px) or its state."""
    data, _ = bundle_for(gen, 512, "jpeg")
    return data["text/html"]
