"""Loading into IPython: magics, configuration, and the one-line display of our errors."""

from __future__ import annotations

from typing import Any

from ..core.errors import NanoBananaError

_state: dict[str, Any] = {}


def load(shell: Any) -> None:
    from .magics import NanoBananaMagics

    if _state.get("shell") is shell:
        return
    magics = NanoBananaMagics(shell=shell)
    shell.register_magics(magics)
    shell.configurables.append(magics)  # so that %config NanoBananaMagics lists its settings
    _state.update(shell=shell, magics=magics)
    shell.set_custom_exc((NanoBananaError,), _short_error)


def unload(shell: Any) -> None:
    magics = _state.pop("magics", None)
    if magics is None:
        return
    magics.close()
    shell.set_custom_exc((), None)
    shell.magics_manager.magics["line"].pop("nanobanana", None)
    shell.magics_manager.magics["cell"].pop("nanobanana", None)
    if magics in shell.configurables:
        shell.configurables.remove(magics)
    _state.clear()


def magics_instance() -> Any:
    """The loaded NanoBananaMagics of the running IPython (loading the extension if needed)."""
    if "magics" not in _state:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is None:
            raise NanoBananaError("the panel needs IPython or Jupyter")
        load(shell)
    return _state["magics"]


def _short_error(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None) -> list[str]:
    """`ErrorName: message`, one line, no stack trace; the cell still fails."""
    magics = _state.get("magics")
    if magics is not None and not magics.short_errors:
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
        return []
    line = f"\x1b[0;31m{etype.__name__}\x1b[0m: {value}"
    shell._showtraceback(etype, value, [line])
    return [line]
