"""The exception tree: catch `NanoBananaError` for everything this package raises.

Errors carry what a caller may act on as fields (`code`, `task_id`, `hint`); messages say
what happened in plain words. Advice in terms of `%nanobanana` commands is added by the
notebook layer only (see `hints.py`), so a plain Python user never reads about magics.
"""

from __future__ import annotations


class NanoBananaError(Exception):
    """Base class of every error this package raises on purpose.

    `code`: the API's error code when the error came from the service. `task_id`: the task
    concerned, when there is one (a paid task that can still be fetched). `hint`: a key of
    `hints.HINTS`, the next step for a person in a notebook.
    """

    hint: str | None = None  # a class may name its usual next step

    def __init__(
        self, message: str, *, code: int | None = None, task_id: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.task_id = task_id
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        return self.message

    def again(self, message: str, **fields: object) -> NanoBananaError:
        """The same kind of error with another message (and fields), the original as its cause."""
        values = {"code": self.code, "task_id": self.task_id, "hint": self.hint, **fields}
        error = type(self)(message, **values)  # type: ignore[arg-type]
        error.__cause__ = self
        return error


class InvalidRequestError(NanoBananaError):
    """The request was refused before sending (local validation) or by the API (400, 422)."""


class AuthenticationError(NanoBananaError):
    """The key is missing or the API rejected it (401)."""

    hint = "key"


class InsufficientCreditsError(NanoBananaError):
    """The account has not enough credits for the task (402)."""

    hint = "credits"


class BudgetExceededError(NanoBananaError):
    """The task or sweep would pass `max_credits`; nothing was sent."""

    hint = "budget"


class RateLimitError(NanoBananaError):
    """Still rate limited (429) after the retries."""


class ServiceUnavailableError(NanoBananaError):
    """Maintenance (455), a server error (5xx) after the retries, or an answer that is not the API's."""


class TaskFailedError(NanoBananaError):
    """The task ended without an image (successFlag 2 or 3, or code 501)."""


class TaskTimeoutError(NanoBananaError):
    """The task did not finish within the timeout; it may still finish later."""

    hint = "fetch"


class NetworkError(NanoBananaError):
    """The API could not be reached, or an answer was lost on the way."""


class DownloadError(NanoBananaError):
    """The task succeeded but its image could not be downloaded or decoded."""

    hint = "fetch"


_BY_CODE: dict[int, tuple[type[NanoBananaError], str]] = {
    400: (InvalidRequestError, "the API refused the request (400): {msg}"),
    401: (AuthenticationError, "the API rejected the key (401). Set NANOBANANA_API_KEY"),
    402: (InsufficientCreditsError, "not enough credits for this task (402)"),
    403: (NanoBananaError, "access denied (403): {msg}"),
    404: (NanoBananaError, "not found (404): {msg}"),
    422: (InvalidRequestError, "the API refused a parameter (422): {msg}"),
    429: (RateLimitError, "rate limited by the API (429) after {attempts} attempts; try again in a minute"),
    455: (ServiceUnavailableError, "the service is under maintenance (455) after {attempts} attempts: {msg}"),
    501: (TaskFailedError, "generation failed (501): {msg}"),
    505: (NanoBananaError, "this feature is disabled for the account (505): {msg}"),
}


def error_for_code(code: int, msg: object = "", *, attempts: int = 1, task_id: str | None = None) -> NanoBananaError:
    """The exception for an API error code (from the HTTP status or the JSON `code`)."""
    text = " ".join(str(msg or "no message").split())[:300]
    if code in _BY_CODE:
        cls, template = _BY_CODE[code]
    elif 500 <= code < 600:
        cls, template = ServiceUnavailableError, "server error ({code}) after {attempts} attempts: {msg}"
    else:
        cls, template = NanoBananaError, "the API answered code {code}: {msg}"
    return cls(template.format(code=code, msg=text, attempts=attempts), code=code, task_id=task_id)


def is_transient(error: BaseException) -> bool:
    """True for errors a later identical call may not hit (worth polling again)."""
    return isinstance(error, (RateLimitError, ServiceUnavailableError, NetworkError))
