"""Refresh the README's generated reference tables (between <!-- generated:NAME --> markers)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nanobanana_magic.reference import cell_options_markdown, commands_markdown, settings_markdown  # noqa: E402

TABLES = {"options": cell_options_markdown, "commands": commands_markdown, "settings": settings_markdown}


def refresh(text: str) -> str:
    for name, make in TABLES.items():
        pattern = re.compile(rf"(<!-- generated:{name} -->\n).*?(\n<!-- end:{name} -->)", re.S)
        text = pattern.sub(lambda m: m.group(1) + make() + m.group(2), text)
    return text


if __name__ == "__main__":
    readme = ROOT / "README.md"
    readme.write_text(refresh(readme.read_text(encoding="utf-8")), encoding="utf-8")
    print("README tables refreshed")
