"""The README's reference tables, generated from the magics' own parsers (so docs never drift)."""

from __future__ import annotations

import argparse


def _flags(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    metavar = ""
    if action.nargs != 0 and not isinstance(action, argparse.BooleanOptionalAction):
        metavar = " " + (action.metavar if isinstance(action.metavar, str) else action.dest.upper())
    return ", ".join(f"`{flag}{metavar}`" for flag in action.option_strings)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def cell_options_markdown() -> str:
    """The %%nanobanana option table, from the parser that PARAMETERS and the magic build."""
    from nanobanana_magic.notebook.magics import NanoBananaMagics

    parser = NanoBananaMagics.nanobanana_cell.parser
    rows = ["| option | meaning |", "|---|---|"]
    for action in parser._actions:
        rows.append(f"| {_cell(_flags(action))} | {_cell((action.help or '').replace('%%', '%'))} |")
    return "\n".join(rows)


def commands_markdown() -> str:
    """The %nanobanana command table."""
    from nanobanana_magic.notebook.commands import COMMANDS

    rows = ["| command | does |", "|---|---|"]
    for name, func in COMMANDS.items():
        usage = func.parser.format_usage().replace("usage: ", "").strip()
        usage = " ".join(usage.split())
        rows.append(
            f"| {_cell('`' + usage + '`')} | {_cell((func.parser.description or '').strip().splitlines()[0])} |"
        )
    return "\n".join(rows)


def settings_markdown() -> str:
    """The NanoBananaMagics settings table (name, default, help)."""
    from nanobanana_magic.notebook.config import ENVIRONMENT
    from nanobanana_magic.notebook.magics import NanoBananaMagics

    rows = ["| setting | env var | default | meaning |", "|---|---|---|---|"]
    traits = NanoBananaMagics.class_traits(config=True)
    for name in sorted(traits, key=lambda n: (n != "api_key", n)):
        trait = traits[name]
        default = trait.default()
        shown = "none" if default is None else repr(default)
        env = f"`{ENVIRONMENT[name]}`" if name in ENVIRONMENT else ""
        rows.append(f"| `{name}` | {env} | {_cell('`' + shown + '`')} | {_cell(trait.help or '')} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(cell_options_markdown(), commands_markdown(), settings_markdown(), sep="\n\n")
