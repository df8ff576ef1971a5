"""nanobanana-magic: the NanoBanana image API in Jupyter and IPython.

    %load_ext nanobanana_magic

    %%nanobanana -a 16:9 -r 2K
    a watercolour map of {city} at dusk

Importing this package is cheap: requests, Pillow and ipywidgets load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .core.errors import (AuthenticationError, DownloadError, InsufficientCreditsError, InvalidRequestError,
                     NanoBananaError, NetworkError, RateLimitError, ServiceUnavailableError,
                     TaskFailedError, TaskTimeoutError)
from .core.params import PARAMETERS, GenerationRequest

if TYPE_CHECKING:
    from .session.client import NanoBananaClient
    from .runtime.generation import Generation
    from .notebook.magics import NanoBananaMagics

__version__ = "0.1.0"

__all__ = ["AuthenticationError", "DownloadError", "Generation", "GenerationRequest",
           "InsufficientCreditsError", "InvalidRequestError", "NanoBananaClient", "NanoBananaError",
           "NanoBananaMagics", "NetworkError", "PARAMETERS", "RateLimitError", "ServiceUnavailableError",
           "TaskFailedError", "TaskTimeoutError", "config", "generate_many", "load_ipython_extension", "panel",
           "unload_ipython_extension"]

_LAZY = {"NanoBananaClient": "session.client", "Generation": "runtime.generation", "NanoBananaMagics": "notebook.magics"}


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


def config() -> "NanoBananaMagics":
    """This kernel's live settings (the `NanoBananaMagics` instance), loading the extension if needed."""
    from .notebook.extension import magics_instance

    return magics_instance()


def generate_many(requests: Any, *, concurrency: int | None = None, force: bool = False) -> "list[Generation]":
    """Generate a batch in this kernel's session (settings, cache, run log, poller), with a progress bar.

    `requests`: GenerationRequests, dicts of parameters, or prompt strings. Results in input order.
    """
    magics = config()
    return magics.session.generate_many(requests, concurrency=concurrency or magics.concurrency, force=force)


def panel() -> Any:
    """The control panel for this kernel (loads the extension if needed)."""
    from .notebook.extension import magics_instance
    from .notebook.control_panel import Panel

    return Panel(magics_instance())

