"""The one definition of the request parameters.

Each `Param` says everything about one field of the generate-2 body: its Python
name, JSON name, command-line flags, allowed values, default, help and how to
clean a value. The magic's flags, the control panel's widgets, validation, the
request body and the README's option table are all derived from `PARAMETERS`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .errors import InvalidRequestError

DEFAULT_BASE_URL = "https://api.nanobananaapi.ai"
MAX_PROMPT_CHARS = 20_000
MAX_IMAGE_URLS = 14

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


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _clean_prompt(param: Param, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidRequestError(f"prompt must be text, not {type(value).__name__}")
    if not value.strip():
        raise InvalidRequestError("prompt is empty; write what to draw (1 to 20,000 characters)")
    if len(value) > MAX_PROMPT_CHARS:
        raise InvalidRequestError(f"prompt is {len(value):,} characters; the API accepts at most {MAX_PROMPT_CHARS:,}")
    return value


def _clean_choice(param: Param, value: Any) -> str:
    text = str(value).strip()
    text = param.aliases.get(text.lower(), text)
    for choice in param.choices:
        if text.lower() == choice.lower():
            return choice
    raise InvalidRequestError(f"{param.label} '{value}' is not supported; use one of {' '.join(param.choices)}")


def _clean_bool(param: Param, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "no", "off", "0", ""):
        return False
    if value in (0, 1):
        return bool(value)
    raise InvalidRequestError(f"{param.label} must be true or false, not {value!r}")


def _clean_urls(param: Param, value: Any) -> list[str]:
    if value is None:
        return []
    urls = [value] if isinstance(value, str) else list(value)
    if len(urls) > MAX_IMAGE_URLS:
        raise InvalidRequestError(f"{len(urls)} reference images given; the API accepts at most {MAX_IMAGE_URLS}")
    cleaned = []
    for url in urls:
        url = str(url).strip()
        if not _is_http_url(url):
            raise InvalidRequestError(
                f"reference image '{url[:80]}' is not an http(s) URL; the API fetches images by URL"
            )
        cleaned.append(url)
    return cleaned


def _clean_optional_url(param: Param, value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    url = str(value).strip()
    if not _is_http_url(url):
        raise InvalidRequestError(f"{param.label} '{url[:80]}' is not an http(s) URL")
    return url


def is_public_url(url: str) -> bool:
    """False for loopback, private, link-local and local names: a service on the internet never reaches them."""
    import ipaddress

    host = (urlsplit(url).hostname or "").strip("[]").lower()
    if host in ("localhost", "") or host.endswith((".localhost", ".local", ".internal", ".lan")):
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "." in host  # a bare name like "myhost" resolves only on the local network
    return address.is_global


@dataclass(frozen=True)
class Param:
    """One request parameter, described once."""

    name: str  # Python name: GenerationRequest(aspect_ratio=...)
    json_name: str  # key in the request body
    label: str  # human name used in messages and the panel
    kind: str  # "text" | "choice" | "bool" | "urls" | "url"
    help: str
    default: Any = None
    flags: tuple[str, ...] = ()  # command-line flags of %%nanobanana; () = the cell body
    choices: tuple[str, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)
    configurable: bool = False  # a NanoBananaMagics trait of the same name sets the default
    omit_when_empty: bool = False  # leave the key out of the body rather than send null
    cleaner: Callable[[Param, Any], Any] = _clean_choice

    def clean(self, value: Any) -> Any:
        """The canonical value, or `InvalidRequestError` naming the field and allowed values."""
        return self.cleaner(self, value)

    @property
    def flag(self) -> str | None:
        """The long flag (`--aspect-ratio`), or None for the prompt."""
        return next((f for f in self.flags if f.startswith("--")), None)


PARAMETERS: tuple[Param, ...] = (
    Param(
        "prompt",
        "prompt",
        "prompt",
        "text",
        cleaner=_clean_prompt,
        help=f"what to draw, 1 to {MAX_PROMPT_CHARS:,} characters",
    ),
    Param(
        "image_urls",
        "imageUrls",
        "reference images",
        "urls",
        default=(),
        cleaner=_clean_urls,
        flags=("-i", "--image"),
        help=f"reference image URL (http or https), repeatable, at most {MAX_IMAGE_URLS}",
    ),
    Param(
        "aspect_ratio",
        "aspectRatio",
        "aspect ratio",
        "choice",
        default="auto",
        flags=("-a", "--aspect-ratio"),
        choices=ASPECT_RATIOS,
        configurable=True,
        help="aspect ratio of the image; auto follows the first reference image",
    ),
    Param(
        "resolution",
        "resolution",
        "resolution",
        "choice",
        default="1K",
        flags=("-r", "--resolution"),
        choices=RESOLUTIONS,
        configurable=True,
        help="about 1, 4 or 16 megapixels (higher costs more); case-insensitive",
    ),
    Param(
        "google_search",
        "googleSearch",
        "Google Search",
        "bool",
        default=False,
        flags=("-g", "--google-search"),
        cleaner=_clean_bool,
        configurable=True,
        help="ground the image in Google Web Search results",
    ),
    Param(
        "output_format",
        "outputFormat",
        "output format",
        "choice",
        default="png",
        flags=("-f", "--format"),
        choices=OUTPUT_FORMATS,
        aliases={"jpeg": "jpg"},
        configurable=True,
        help="file format of the result (jpeg is accepted as jpg)",
    ),
    Param(
        "callback_url",
        "callBackUrl",
        "callback URL",
        "url",
        default=None,
        flags=("--callback-url",),
        cleaner=_clean_optional_url,
        omit_when_empty=True,
        help="URL the service POSTs the finished task to (must be public; polling still runs)",
    ),
)

BY_NAME: dict[str, Param] = {p.name: p for p in PARAMETERS}
BY_JSON: dict[str, Param] = {p.json_name: p for p in PARAMETERS}


class GenerationRequest:
    """A validated generate-2 request. Attributes are the `Param` names.

    >>> GenerationRequest(prompt="a red apple", aspect_ratio="16:9").to_body()["aspectRatio"]
    '16:9'
    """

    __slots__ = ("_values",)

    def __init__(self, prompt: str, **values: Any) -> None:
        unknown = sorted(set(values) - set(BY_NAME))
        if unknown:
            raise InvalidRequestError(f"unknown parameter {unknown[0]!r}; use one of {' '.join(BY_NAME)}")
        values["prompt"] = prompt
        cleaned = {}
        for param in PARAMETERS:
            value = values.get(param.name)
            cleaned[param.name] = param.clean(param.default if value is None else value)
        object.__setattr__(self, "_values", cleaned)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> GenerationRequest:
        """Rebuild a request from a JSON body (camelCase keys)."""
        values = {BY_JSON[k].name: v for k, v in body.items() if k in BY_JSON}
        return cls(**values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("GenerationRequest is immutable; use .replace(...)")

    def replace(self, **changes: Any) -> GenerationRequest:
        """A copy with some parameters changed (and validated again)."""
        return GenerationRequest(**{**self._values, **changes})

    def values(self) -> dict[str, Any]:
        """Parameter name → value, in definition order."""
        return dict(self._values)

    def to_body(self) -> dict[str, Any]:
        """The exact camelCase JSON body of POST generate-2."""
        body = {}
        for param in PARAMETERS:
            value = self._values[param.name]
            if param.omit_when_empty and value in (None, "", ()):
                continue
            body[param.json_name] = list(value) if param.kind == "urls" else value
        return body

    def canonical_json(self) -> str:
        """A stable text of the body: equal requests give equal text (the cache key)."""
        return canonical_json(self.to_body())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GenerationRequest) and other.to_body() == self.to_body()

    def __hash__(self) -> int:
        return hash(self.canonical_json())

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return iter(self._values.items())

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{k}={_short(v)!r}"
            for k, v in self._values.items()
            if k == "prompt" or (v or None) != (BY_NAME[k].default or None)
        )
        return f"GenerationRequest({shown})"


def request_key(base_url: str, body: Mapping[str, Any], identities: Sequence[str] | None = None) -> str:
    """The cache key of a request: the API it goes to and the canonical body, with references
    named by content identity (`sha256:...`) where known, so a re-signed upload URL still matches."""
    request = dict(body)
    if identities is not None:
        request["imageUrls"] = list(identities)
    return canonical_json({"api": base_url.rstrip("/"), "request": request})


def canonical_json(body: Mapping[str, Any]) -> str:
    """JSON with sorted keys and no spaces, so that equal bodies compare equal as text."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _short(value: Any, limit: int = 60) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[: limit - 1] + "…"
    return value
