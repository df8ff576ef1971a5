"""Checks made before anything is paid for: the output directory, timeouts, callback URLs, saved files."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import NanoBananaError
from ..core.params import is_public_url
from ..runtime.generation import Generation
from ..runtime.store import RunEntry, Store

if TYPE_CHECKING:
    pass

OnSubmit = Callable[[int, Generation], None]


def file_state(store: Store, entry: RunEntry) -> str:
    """ "ok", "missing" or "altered": the saved file of a succeeded entry against its recorded sha256."""
    import hashlib

    path = store.file_path(entry)
    if not entry.file or not path.is_file():
        return "missing"
    if entry.sha256 and hashlib.sha256(path.read_bytes()).hexdigest() != entry.sha256:
        return "altered"
    return "ok"


def check_callback(callback_url: str | None, base_url: str) -> None:
    """A callback URL must be one the API can reach: public, unless the API itself is local (the emulator)."""
    if callback_url and not is_public_url(callback_url) and is_public_url(base_url):
        from ..core.errors import InvalidRequestError

        raise InvalidRequestError(
            f"callback URL '{callback_url[:80]}' is not reachable from the internet, so the service cannot POST "
            "to it; leave it out (polling runs anyway) or give a public URL"
        )


def check_timeout(timeout: float | None) -> None:
    """A per-task timeout must be a positive number of seconds."""
    import math

    if timeout is not None and (not math.isfinite(timeout) or timeout <= 0):
        from ..core.errors import InvalidRequestError

        raise InvalidRequestError(f"timeout {timeout:g} is not allowed; use a number of seconds above 0 (default 600)")


def check_output_dir(path: Path) -> None:
    """Create `output_dir` if needed; a one-line error when it cannot hold the run log and images."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    else:
        if os.access(path, os.W_OK | os.X_OK):
            return
        reason = "not writable"
    raise NanoBananaError(
        f"output_dir {str(path)!r} cannot be used ({reason}); nothing was submitted", hint="output_dir"
    )
