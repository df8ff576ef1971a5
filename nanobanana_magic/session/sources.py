"""Reference sources for a session: what an upload not yet made looks like, and batch rows' own sources."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..core.params import GenerationRequest
from ..runtime.generation import Generation
from .settings import Settings

if TYPE_CHECKING:
    from ..runtime.references import Reference

OnSubmit = Callable[[int, Generation], None]


PLANNED = "https://upload.invalid/"  # the stand-in URL of an upload not made (the .invalid TLD never resolves)


class PlannedUploads:
    """A stand-in uploader: names what would be uploaded where, uploads nothing (see `references_for`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def url_for(self, data: bytes, suffix: str) -> str:
        import hashlib

        return PLANNED + hashlib.sha256(data).hexdigest() + suffix

    def describe(self, url: str) -> str:
        """Where a stand-in URL's image would go, for a dry run."""
        name = url[len(PLANNED) :]
        settings = self.settings
        if settings.upload_public_url.strip():
            return settings.upload_public_url.strip().rstrip("/") + "/" + name
        return f"<signed URL of {settings.upload_to.strip().rstrip('/')}/{name}, valid {settings.upload_expiry:g} s>"


def cache_identities(references: Sequence[Reference]) -> list[str]:
    """Per reference, what identifies its image for the cache (`references.cache_identity`)."""
    from ..runtime.references import cache_identity  # hashlib and friends: not at %load_ext

    return cache_identity(references)


def with_references(request: GenerationRequest, references: Sequence[Reference]) -> GenerationRequest:
    """The request carrying the references' URLs as its imageUrls."""
    return request.replace(image_urls=[r.url for r in references])


def batch_items(requests: Any) -> list[Any]:
    """A batch's items: a DataFrame-like object's records, one item, or the items given."""
    if callable(getattr(requests, "to_dict", None)) and not isinstance(requests, Mapping):
        return list(requests.to_dict("records"))
    if isinstance(requests, (str, Mapping)):
        return [requests]
    return list(requests)


def split_sources(item: Any) -> tuple[Any, Any]:
    """A batch row without its reference sources, and the sources (None when it has none of its own)."""
    if not isinstance(item, Mapping) or not ({"image_urls", "references"} & set(item)):
        return item, None
    row = dict(item)
    sources = _as_list(row.pop("image_urls", None)) + _as_list(row.pop("references", None))
    return row, sources


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
