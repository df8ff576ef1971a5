"""Sweeps: `--sweep NAME=V1,V2` and `NAME=@list` parsed into the axes of a cartesian product."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from .errors import InvalidRequestError
from .params import BY_NAME, PARAMETERS, Param
from .render import Axis


def _sweep_param(name: str) -> Param | None:
    aliases = {(p.flag or "").lstrip("-").replace("-", "_"): p for p in PARAMETERS if p.flag}
    return BY_NAME.get(name) if name in BY_NAME and name != "prompt" else aliases.get(name)


def parse_sweeps(
    specs: list[str], namespace: Mapping[str, Any], variables: Collection[str] | None = None
) -> list[Axis]:
    """`NAME=V1,V2` or `NAME=@list` → axes; parameter values are validated, others are prompt variables.

    Every axis must change the request: NAME is a parameter or one of the prompt's `{variables}`
    (`variables`; None: not checked), and no axis is given twice. Nothing is paid for twice.
    """
    axes: list[Axis] = []
    for spec in specs:
        name, values = _axis(spec, namespace, variables)
        if any(existing == name for existing, _ in axes):
            raise InvalidRequestError(f"--sweep {name} is given twice; give its values once: --sweep {name}=A,B,C")
        axes.append((name, values))
    return axes


def _axis(spec: str, namespace: Mapping[str, Any], variables: Collection[str] | None) -> Axis:
    name, sep, text = spec.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not name or not text.strip():
        raise InvalidRequestError(f"--sweep takes NAME=V1,V2 or NAME=@list, not '{spec}'")
    values = _values(name, text, namespace)
    param = _sweep_param(name)
    if param is not None:
        name = param.name
        values = [param.clean([v] if param.kind == "urls" else v) for v in values]
    elif name == "prompt":
        raise InvalidRequestError("--sweep prompt=...: put a {variable} in the prompt and sweep that instead")
    elif not name.isidentifier() or (variables is not None and name not in variables):
        shown = ", ".join(f"{{{v}}}" for v in sorted(variables or ())) or "none"
        raise InvalidRequestError(
            f"--sweep {name}: not a parameter ({' '.join(p.name for p in PARAMETERS[1:])}) nor a variable "
            f"of the prompt ({shown}); it would not change the request"
        )
    if not values:
        raise InvalidRequestError(f"--sweep {name} has no values")
    if len(set(map(repr, values))) != len(values):
        raise InvalidRequestError(f"--sweep {name} repeats a value; each value would be paid for twice")
    return name, values


def _values(name: str, text: str, namespace: Mapping[str, Any]) -> list[Any]:
    """`V1,V2` split, or `@list` read from the namespace."""
    if not text.startswith("@"):
        return [v.strip() for v in text.split(",") if v.strip()]
    found: Any = namespace.get(text[1:].strip())
    if isinstance(found, (str, bytes)) or not hasattr(found, "__iter__"):
        raise InvalidRequestError(f"--sweep {name}=@{text[1:]}: '{text[1:]}' is not a list in your namespace")
    return list(found)
