"""nanobanana-magic: the NanoBanana image API in Jupyter and IPython.

    %load_ext nanobanana_magic

    %%nanobanana -a 16:9 -r 2K
    a watercolour map of {city} at dusk

Importing this package is cheap: requests, Pillow and ipywidgets load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .core.errors import (
    AuthenticationError,
    BudgetExceededError,
    DownloadError,
    InsufficientCreditsError,
    InvalidRequestError,
    NanoBananaError,
    NetworkError,
    RateLimitError,
    ServiceUnavailableError,
    TaskFailedError,
    TaskTimeoutError,
)
from .core.params import PARAMETERS, GenerationRequest
from .core.version import __version__

if TYPE_CHECKING:
    from .notebook.magics import NanoBananaMagics
    from .runtime.generation import Generation
    from .session.client import NanoBananaClient


__all__ = [
    "PARAMETERS",
    "AuthenticationError",
    "BudgetExceededError",
    "DownloadError",
    "Generation",
    "GenerationRequest",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "NanoBananaClient",
    "NanoBananaError",
    "NanoBananaMagics",
    "NetworkError",
    "RateLimitError",
    "ServiceUnavailableError",
    "TaskFailedError",
    "TaskTimeoutError",
    "__version__",
    "config",
    "export",
    "generate_many",
    "load_ipython_extension",
    "panel",
    "unload_ipython_extension",
]

_LAZY = {
    "NanoBananaClient": "session.client",
    "Generation": "runtime.generation",
    "NanoBananaMagics": "notebook.magics",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext nanobanana_magic`: register the magics, the config class and short errors."""
    from .notebook.extension import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """`%unload_ext nanobanana_magic`: stop the poller threads, restore error display."""
    from .notebook.extension import unload

    unload(ipython)


def config() -> NanoBananaMagics:
    """This kernel's live settings (the `NanoBananaMagics` instance), loading the extension if needed."""
    from .notebook.extension import loaded_magics

    magics = loaded_magics()
    if magics is None:
        raise NanoBananaError(
            "the settings live in IPython or Jupyter; in a plain script set NANOBANANA_* "
            "environment variables (or use NanoBananaClient)"
        )
    return magics


_script_session: Any = None


def _session() -> tuple[Any, Any]:
    """The kernel's session and magics, or in a plain script one session built from the environment."""
    global _script_session
    from .notebook.extension import loaded_magics

    magics = loaded_magics()
    if magics is not None:
        return magics.session, magics
    if _script_session is None:
        from .session.session import Session
        from .session.settings import Settings

        _script_session = Session(Settings.from_environment())
    return _script_session, None


def generate_many(
    rows: Any, *, concurrency: int | None = None, force: bool = False, timeout: float | None = None
) -> list[Generation]:
    """Generate a batch in this kernel's session (settings, cache, run log, poller), showing progress.

    `rows`: prompts, GenerationRequests, dicts, or a DataFrame-like object (`.to_dict("records")`).
    The columns that are parameters (`prompt`, `aspect_ratio`, `resolution`, ...; the configured
    defaults fill the rest) make each request; the others (a `label`, a `split`, an `id`) are kept
    with the task in the run log and go into every export. Results in input order. Running the same
    rows again answers the finished ones from the cache and attaches to the ones still pending.
    Works in a plain Python script too (settings from NANOBANANA_* environment variables).
    """
    from .core.params import PARAMETERS
    from .notebook.progress import Progress
    from .session.sources import batch_items

    session, magics = _session()
    defaults = {p.name: getattr(magics, p.name) for p in PARAMETERS if p.configurable} if magics else None
    items = batch_items(rows)
    in_kernel = magics is not None and magics.bridge.in_kernel
    progress = Progress(len(items), widget=in_kernel)
    try:
        # Every row (and its reference images) is checked before anything is sent.
        return session.generate_many(
            items,
            concurrency=concurrency,
            force=force,
            timeout=timeout,
            defaults=defaults,
            namespace=magics.user_ns if magics else None,
            on_progress=progress.update,
        )
    finally:
        progress.finish()


def export(path: str, *, format: str | None = None, since: str | None = None) -> Any:
    """Write this directory's generations to `path`, as `%nanobanana export` does; returns what it did.

    `format`: csv, json, jsonl, md (a file; default from the suffix), imagefolder or webdataset
    (a directory with a README.md dataset card; exporting again adds only the new images).
    `since`: only tasks submitted since then (`30m`, `2h`, `7d`, `2026-11-24`, ...).
    """
    from .runtime import provenance

    session, _ = _session()
    entries = provenance.read_entries(session.store, since)
    return provenance.export(path, entries, session.store, fmt=format, endpoint=session.settings.base_url)


def panel() -> Any:
    """The control panel for this kernel (loads the extension if needed)."""
    from .notebook.control_panel import Panel, PanelContext

    return Panel(PanelContext.of(config()))
