"""The exception tree: catch `NanoBananaError` for everything this package raises."""

from __future__ import annotations


class NanoBananaError(Exception):
    """Base class of every error this package raises on purpose.

    `code` is the API's error code when the error came from the service.
    Messages are one line, say what to do next, and never contain the API key.
    """

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message


class InvalidRequestError(NanoBananaError):
    """The request was refused before sending (local validation) or by the API (400, 422)."""


class AuthenticationError(NanoBananaError):
    """The key is missing or the API rejected it (401)."""


class InsufficientCreditsError(NanoBananaError):
    """The account has not enough credits for the task (402)."""


class RateLimitError(NanoBananaError):
    """Still rate limited (429) after the retries."""


class ServiceUnavailableError(NanoBananaError):
    """Maintenance (455), a server error (5xx) after the retries, or an answer that is not the API's."""


class TaskFailedError(NanoBananaError):
    """The task ended without an image (successFlag 2 or 3)."""

    def __init__(self, message: str, *, task_id: str = "", code: int | None = None) -> None:
        super().__init__(message, code=code)
        self.task_id = task_id


class TaskTimeoutError(NanoBananaError):
    """The task did not finish within the timeout; it may still finish later."""


class NetworkError(NanoBananaError):
    """The API could not be reached, or an answer was lost on the way."""


class DownloadError(NanoBananaError):
    """The task succeeded but its image could not be downloaded or decoded."""


_KEY_HINT = "Set NANOBANANA_API_KEY or run %nanobanana login"

_BY_CODE: dict[int, tuple[type[NanoBananaError], str]] = {
    400: (InvalidRequestError, "the API refused the request (400): {msg}"),
    401: (AuthenticationError, "the API rejected the key (401). " + _KEY_HINT),
    402: (InsufficientCreditsError, "not enough credits for this task (402). See %nanobanana credits"),
    403: (NanoBananaError, "access denied (403): {msg}"),
    404: (NanoBananaError, "not found (404): {msg}"),
    422: (InvalidRequestError, "the API refused a parameter (422): {msg}"),
    429: (RateLimitError, "rate limited by the API (429) after {attempts} attempts; try again in a minute"),
    455: (ServiceUnavailableError, "the service is under maintenance (455) after {attempts} attempts: {msg}"),
    505: (NanoBananaError, "this feature is disabled for the account (505): {msg}"),
}


def error_for_code(code: int, msg: str = "", *, attempts: int = 1) -> NanoBananaError:
    """The exception for an API error code (from the HTTP status or the JSON `code`)."""
    msg = " ".join(str(msg or "no message").split())[:300]
    if code in _BY_CODE:
        cls, template = _BY_CODE[code]
    elif 500 <= code < 600:
        cls, template = ServiceUnavailableError, "server error ({code}) after {attempts} attempts: {msg}"
    else:
        cls, template = NanoBananaError, "the API answered code {code}: {msg}"
    return cls(template.format(code=code, msg=msg, attempts=attempts), code=code)


def is_transient(error: BaseException) -> bool:
    """True for errors a later identical call may not hit (worth polling again)."""
    return isinstance(error, (RateLimitError, ServiceUnavailableError, NetworkError))
