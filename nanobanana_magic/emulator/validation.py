"""The emulator's own check of a generate-2 body.

Deliberately independent of the package's parameter definitions: a test oracle that
shared the client's validation would hide the client's validation bugs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

ASPECT_RATIOS = (
    "1:1",
    "1:4",
    "1:8",
    "2:3",
    "3:2",
    "3:4",
    "4:1",
    "4:3",
    "4:5",
    "5:4",
    "8:1",
    "9:16",
    "16:9",
    "21:9",
    "auto",
)
RESOLUTIONS = ("1K", "2K", "4K")
OUTPUT_FORMATS = ("png", "jpg")
MAX_PROMPT_CHARS = 20_000
MAX_IMAGE_URLS = 14

#: Values the service assumes for fields the body leaves out.
DEFAULTS = {
    "imageUrls": [],
    "aspectRatio": "auto",
    "resolution": "1K",
    "googleSearch": False,
    "outputFormat": "jpg",
}


class InvalidBody(ValueError):
    """A body the service refuses; ``code`` is the API error code (400 or 422)."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


@dataclass(frozen=True)
class SubmitParams:
    """A validated generate-2 request with defaults filled in."""

    prompt: str
    image_urls: tuple[str, ...]
    aspect_ratio: str
    resolution: str
    google_search: bool
    output_format: str
    callback_url: str | None


def validate_submit(body: Any) -> SubmitParams:
    """Check a decoded JSON body; raise InvalidBody naming the first bad field."""
    if not isinstance(body, dict):
        raise InvalidBody(400, "request body must be a JSON object")
    fields = {**DEFAULTS, **body}
    prompt = fields.get("prompt")
    if "prompt" not in body:
        raise InvalidBody(422, "prompt is required")
    if not isinstance(prompt, str):
        raise InvalidBody(422, "prompt must be a string")
    if not prompt.strip() or len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidBody(422, f"prompt must be 1..{MAX_PROMPT_CHARS} characters, got {len(prompt.strip())}")
    return SubmitParams(
        prompt=prompt,
        image_urls=_image_urls(fields["imageUrls"]),
        aspect_ratio=_choice("aspectRatio", fields["aspectRatio"], ASPECT_RATIOS),
        resolution=_choice("resolution", fields["resolution"], RESOLUTIONS),
        google_search=_boolean("googleSearch", fields["googleSearch"]),
        output_format=_choice("outputFormat", fields["outputFormat"], OUTPUT_FORMATS),
        callback_url=_callback_url(body),
    )


def is_http_url(value: Any) -> bool:
    """True for an absolute http(s) URL with a host."""
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed or not isinstance(value, str):
        raise InvalidBody(422, f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidBody(422, f"{name} must be a boolean; got {value!r}")
    return value


def _image_urls(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise InvalidBody(422, "imageUrls must be an array of http(s) URLs")
    if len(value) > MAX_IMAGE_URLS:
        raise InvalidBody(422, f"imageUrls holds at most {MAX_IMAGE_URLS} URLs; got {len(value)}")
    for index, url in enumerate(value):
        if not is_http_url(url):
            raise InvalidBody(422, f"imageUrls[{index}] must be an http(s) URL")
    return tuple(value)


def _callback_url(body: dict) -> str | None:
    if "callBackUrl" not in body:
        return None
    # null is refused on purpose: the client is meant to leave the field out instead.
    if not is_http_url(body["callBackUrl"]):
        raise InvalidBody(422, "callBackUrl must be an http(s) URL")
    return body["callBackUrl"]
