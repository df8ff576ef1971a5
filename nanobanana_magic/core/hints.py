"""Every `%nanobanana ...` suggestion, in one table; only the notebook layer adds them to messages.

An error names its next step with a key (`NanoBananaError.hint`); `with_hint` turns it into
text for a person in a notebook. A plain Python user sees the error's message alone.
"""

from __future__ import annotations

from .errors import NanoBananaError

HINTS: dict[str, str] = {
    "key": "or run %nanobanana login (or %config NanoBananaMagics.api_key = '...')",
    "credits": "See %nanobanana credits",
    "budget": "raise %config NanoBananaMagics.max_credits, or set it again to start a new budget",
    "fetch": "fetch it later: %nanobanana fetch {task_id}",
    "history": "see %nanobanana history",
    "resume": "%nanobanana resume attaches to them",
    "wait": "%nanobanana wait {task_id} blocks until it ends",
    "output_dir": "set %config NanoBananaMagics.output_dir = '...' or NANOBANANA_OUTPUT_DIR",
    "upload": "set %config NanoBananaMagics.upload_to = 's3://bucket/prefix' (or NANOBANANA_UPLOAD_TO)",
    "stopped": "the task is still running: %nanobanana history, %nanobanana wait",
    "settings": "Settings: %config NanoBananaMagics (key via NANOBANANA_API_KEY or %nanobanana login).",
}


def hint_text(key: str | None, task_id: str | None = None) -> str:
    """The advice for `key`, or "" (a hint needing a task id is dropped without one)."""
    template = HINTS.get(key or "", "")
    if "{task_id}" in template and not task_id:
        return ""
    return template.format(task_id=task_id or "")


def with_hint(error: BaseException) -> str:
    """The error's one-line message followed by its notebook advice."""
    message = str(error)
    if not isinstance(error, NanoBananaError):
        return message
    advice = hint_text(error.hint, error.task_id)
    if not advice or advice in message:
        return message
    if advice.startswith("or ") or message.endswith((".", ";")):
        return f"{message} {advice}"
    return f"{message}. {advice[:1].upper()}{advice[1:]}"
