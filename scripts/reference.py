"""The README's reference tables, generated from the magics' own parsers (so docs never drift)."""

from __future__ import annotations

import argparse


def _flags(flags: tuple[str, ...], options: dict) -> str:
    """`-a RATIO`, `--aspect-ratio RATIO` for one `@argument` (its flags and keyword options)."""
    if not flags[0].startswith("-"):
        return f"`{options.get('metavar') or flags[0]}`"
    takes_value = options.get("action") not in ("store_true", "store_false", argparse.BooleanOptionalAction)
    metavar = ""
    if takes_value:
        metavar = " " + str(options.get("metavar") or str(options.get("dest") or flags[-1].lstrip("-")).upper())
    shown = list(flags)
    if options.get("action") is argparse.BooleanOptionalAction:
        shown += [f"--no-{f[2:]}" for f in flags if f.startswith("--")]
    return ", ".join(f"`{flag}{metavar}`" for flag in shown)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def cell_options_markdown() -> str:
    """The %%nanobanana option table, from the parser that PARAMETERS and the magic build."""
    from nanobanana_magic.notebook.magics import NanoBananaMagics

    # The `@argument` decorators the parser was built from, in source order (IPython keeps them).
    arguments = [d for d in reversed(NanoBananaMagics.nanobanana_cell.decorators) if hasattr(d, "args")]
    rows = ["| option | meaning |", "|---|---|"]
    for decorator in arguments:
        help_text = (decorator.kwds.get("help") or "").replace("%%", "%")
        rows.append(f"| {_cell(_flags(decorator.args, decorator.kwds))} | {_cell(help_text)} |")
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
