"""The README documents exactly what the code offers (generated tables, checked here)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from reference import cell_options_markdown, commands_markdown, settings_markdown

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_readme_option_table_matches_the_parameter_definition():
    assert cell_options_markdown() in README, "run: python scripts/update_readme.py"


def test_readme_command_table_matches_the_commands():
    assert commands_markdown() in README


def test_readme_settings_table_matches_the_configuration():
    assert settings_markdown() in README


def test_readme_first_screen_has_the_two_commands():
    first_screen = "\n".join(README.splitlines()[:40])
    assert "make demo" in first_screen and "make test" in first_screen


def test_every_parameter_flag_is_documented():
    from nanobanana_magic.core.params import PARAMETERS

    for param in PARAMETERS:
        for flag in param.flags:
            assert f"`{flag}" in README, flag
