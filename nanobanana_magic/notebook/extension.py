"""Loading into IPython: magics, configuration, and the one-line display of our errors."""

from __future__ import annotations

from typing import Any

from ..core.errors import InvalidRequestError, NanoBananaError
from ..core.hints import with_hint
from .kernel import WaitInterrupted

_state: dict[str, Any] = {}


def load(shell: Any) -> None:
    from .magics import NanoBananaMagics

    if _state.get("shell") is shell:
        return
    from .commands import cell_help_transformer

    magics = NanoBananaMagics(shell=shell)
    shell.register_magics(magics)
    if cell_help_transformer not in shell.input_transformers_cleanup:
        shell.input_transformers_cleanup.append(cell_help_transformer)  # `%%nanobanana --help`, no body
    shell.configurables.append(magics)  # so that %config NanoBananaMagics lists its settings
    # IPython has one custom-exception slot: keep what another extension put there, and hand it
    # every exception that is not ours.
    previous = (tuple(getattr(shell, "custom_exceptions", ()) or ()), getattr(shell, "CustomTB", None))
    _state.update(shell=shell, magics=magics, previous=previous)
    shell.set_custom_exc((NanoBananaError, WaitInterrupted, *previous[0]), _short_error)
    _wrap_config_magic(shell, magics)


def unload(shell: Any) -> None:
    magics = _state.pop("magics", None)
    if magics is None:
        return
    magics.close()
    config_magic = _state.get("config_magic")
    if config_magic is not None:
        shell.magics_manager.magics["line"]["config"] = config_magic
    from .commands import cell_help_transformer

    if cell_help_transformer in shell.input_transformers_cleanup:
        shell.input_transformers_cleanup.remove(cell_help_transformer)
    exceptions, handler = _state.get("previous", ((), None))
    if exceptions and handler is not None:
        shell.custom_exceptions, shell.CustomTB = exceptions, handler
    else:
        shell.set_custom_exc((), None)
    shell.magics_manager.magics["line"].pop("nanobanana", None)
    shell.magics_manager.magics["cell"].pop("nanobanana", None)
    if magics in shell.configurables:
        shell.configurables.remove(magics)
    _state.clear()


def _wrap_config_magic(shell: Any, magics: Any) -> None:
    """`%config NanoBananaMagics.x = bad` fails its cell with our one-line message.

    IPython's `%config` logs a configurable's TraitError (`ERROR:root:...`) and the cell
    succeeds, so a typo in a papermill run would silently keep the old value. The traits
    note the refusal (`config_errors`); this wrapper raises it once `%config` returns.
    """
    registered = shell.magics_manager.magics["line"].get("config")
    original = shell.find_line_magic("config")  # loads IPython's lazy %config: the bound magic itself
    if registered is None or getattr(original, "__self__", None) is None:
        return
    _state["config_magic"] = original

    def config(line: str = "") -> Any:
        magics.config_errors.clear()
        magics.collect_config_errors = True
        try:
            result = original(line)
        finally:
            magics.collect_config_errors = False
        if magics.config_errors:
            raise InvalidRequestError(magics.config_errors[0])
        return result

    config.__doc__ = original.__doc__
    shell.magics_manager.magics["line"]["config"] = config


def loaded_magics() -> Any:
    """The loaded NanoBananaMagics of the running IPython (loading the extension if needed), or None."""
    if "magics" not in _state:
        try:
            from IPython import get_ipython
        except ImportError:
            return None
        shell = get_ipython()
        if shell is None:
            return None
        load(shell)
    return _state["magics"]


def _short_error(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None) -> Any:
    """`ErrorName: message`, one line, no stack trace; the cell still fails."""
    if isinstance(value, WaitInterrupted):
        line = f"\x1b[0;31mKeyboardInterrupt\x1b[0m: {value}"
        shell._showtraceback(KeyboardInterrupt, str(value), [line])  # reported as what it is
        return [line]
    if not isinstance(value, NanoBananaError):
        exceptions, handler = _state.get("previous", ((), None))
        if handler is not None and isinstance(value, exceptions):
            return handler(etype, value, tb, tb_offset)  # set_custom_exc stored it bound to the shell
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
        return None
    magics = _state.get("magics")
    if magics is not None and not magics.short_errors:
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
        return []
    message = with_hint(value)
    line = f"\x1b[0;31m{etype.__name__}\x1b[0m: {message}"
    # The error output's `evalue` (what nbclient and papermill report) carries the advice too.
    shell._showtraceback(etype, message, [line])
    return [line]
