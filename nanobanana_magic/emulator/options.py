"""Server-wide behaviours the live service may show but API.md does not document.

Every option is off by default, so the emulator follows API.md exactly unless told
otherwise. Per-request and per-task misbehaviour is planned with faults instead
(faults.py); these options hold for every request until changed.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

MESSAGE_KEYS = ("msg", "message")
UNKNOWN_TASK_ID_MODES = ("not_found", "server_exception")
DEFAULT_REFERENCE_TIMEOUT = 3.0
DEFAULT_REFERENCE_MAX_BYTES = 5 * 1024 * 1024


@dataclass(frozen=True)
class Options:
    """What the service does differently from API.md; frozen, so a change swaps the whole object."""

    #: key of the text in error answers: "msg" (API.md) or "message" (the sibling generate-pro endpoint)
    message_key: str = "msg"
    #: "not_found": every unknown id is code 404; "server_exception": an id that is not 32 hex
    #: digits is JSON code 500 "Server exception, please check the parameters"
    unknown_task_id: str = "not_found"
    #: resultImageUrl is root-relative ("/files/...") instead of absolute
    relative_urls: bool = False
    #: result URLs end in ".jpeg" whatever the format (the bytes stay PNG when png was asked for)
    wrong_extension: bool = False
    #: Content-Type of every result file (None: image/png or image/jpeg by the URL's extension)
    file_content_type: str | None = None
    #: extra bytes after the end marker of every result file (0: none)
    trailing_bytes: int = 0
    #: first polls of every new task answered "task not found"
    unregistered_polls: int = 0
    #: JSON code record-info answers for a failed task, e.g. 501 (None: code 200 and the record)
    failed_code: int | None = None
    #: API requests (submit, poll, credits) admitted per sliding second; more get HTTP 429
    rate_limit: int | None = None
    #: tasks generating at once; a submit beyond that is refused with code 429, nothing charged
    max_concurrent: int | None = None
    #: seconds to wait for each reference image
    reference_timeout: float = DEFAULT_REFERENCE_TIMEOUT
    #: reference images larger than this are not used (drawn as "too large")
    reference_max_bytes: int = DEFAULT_REFERENCE_MAX_BYTES

    def __post_init__(self) -> None:
        _one_of("message_key", self.message_key, MESSAGE_KEYS)
        _one_of("unknown_task_id", self.unknown_task_id, UNKNOWN_TASK_ID_MODES)
        for name in ("relative_urls", "wrong_extension"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False; got {getattr(self, name)!r}")
        if self.file_content_type is not None and not (
            isinstance(self.file_content_type, str) and self.file_content_type.strip()
        ):
            raise ValueError(f"file_content_type must be a non-empty string or None; got {self.file_content_type!r}")
        _count("trailing_bytes", self.trailing_bytes, minimum=0)
        _count("unregistered_polls", self.unregistered_polls, minimum=0)
        _count("rate_limit", self.rate_limit, minimum=1, optional=True)
        _count("max_concurrent", self.max_concurrent, minimum=1, optional=True)
        _count("reference_max_bytes", self.reference_max_bytes, minimum=1)
        if self.failed_code is not None:
            _count("failed_code", self.failed_code, minimum=100)
        timeout = self.reference_timeout
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            raise ValueError(f"reference_timeout must be a number of seconds > 0; got {timeout!r}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in declaration order."""
        return tuple(field.name for field in fields(cls))


def _one_of(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _count(name: str, value: Any, minimum: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}{' or None' if optional else ''}; got {value!r}")
