"""Loading and unloading: the extension shares IPython's one custom-exception slot instead of taking it."""

from __future__ import annotations

from IPython.core.interactiveshell import InteractiveShell

from nanobanana_magic.core.errors import InvalidRequestError


def test_another_extensions_exception_handler_keeps_working_and_comes_back_on_unload(capsys):
    shell = InteractiveShell.instance()
    seen: list[str] = []

    def theirs(shell, etype, value, tb, tb_offset=None):
        seen.append(f"{etype.__name__}: {value}")
        return []

    try:
        shell.set_custom_exc((ValueError,), theirs)
        shell.run_line_magic("load_ext", "nanobanana_magic")
        shell.run_cell("raise ValueError('for the other extension')")
        ours = shell.run_cell("%%nanobanana -a 7:3\na cat")
        assert seen == ["ValueError: for the other extension"]
        assert isinstance(ours.error_in_exec, InvalidRequestError)
        assert "InvalidRequestError" in capsys.readouterr().out  # our one line, not their handler
        shell.run_line_magic("unload_ext", "nanobanana_magic")
        shell.run_cell("raise ValueError('after unload')")
        assert seen[-1] == "ValueError: after unload"
        assert shell.custom_exceptions == (ValueError,)
    finally:
        shell.set_custom_exc((), None)
        InteractiveShell.clear_instance()


def test_unloading_leaves_ipythons_config_magic_working():
    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "nanobanana_magic")
        shell.run_line_magic("unload_ext", "nanobanana_magic")
        assert shell.run_cell("%config InteractiveShell.autocall = 0").success
    finally:
        InteractiveShell.clear_instance()
