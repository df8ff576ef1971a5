"""Sweeps: `--sweep NAME=V1,V2` and `NAME=@list` parsed into the axes of a cartesian product."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import InvalidRequestError
from .params import BY_NAME, PARAMETERS, Param
from .render import Axis


def _sweep_param(name: str) -> Param | None:
    aliases = {(p.flag or "").lstrip("-").replace("-", "_"): p for p in PARAMETERS if p.flag}
    return BY_NAME.get(name) if name in BY_NAME and name != "prompt" else aliases.get(name)


def parse_sweeps(specs: list[str], namespace: Mapping[str, Any]) -> list[Axis]:
    """`NAME=V1,V2` or `NAME=@list` → axes; parameter values are validated, others are prompt variables."""
    axes: list[Axis] = []
    for spec in specs:
        name, sep, text = spec.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name or not text.strip():
            raise InvalidRequestError(f"--sweep takes NAME=V1,V2 or NAME=@list, not '{spec}'")
        if text.startswith("@"):
            found: Any = namespace.get(text[1:].strip())
            if isinstance(found, (str, bytes)) or not hasattr(found, "__iter__"):
                raise InvalidRequestError(f"--sweep {name}=@{text[1:]}: '{text[1:]}' is not a list in your namespace")
            values = list(found)
        else:
            values = [v.strip() for v in text.split(",") if v.strip()]
        param = _sweep_param(name)
        if param is not None:
            name = param.name
            values = [param.clean([v] if param.kind == "urls" else v) for v in values]
        elif not name.isidentifier():
            raise InvalidRequestError(
                f"--sweep {name}: not a parameter ({' '.join(p.name for p in PARAMETERS[1:])}) nor a variable name"
            )
        if not values:
            raise InvalidRequestError(f"--sweep {name} has no values")
        axes.append((name, values))
    return axes
