"""Prompt interpolation: `{expression}` from the user namespace, `{{` and `}}` literal.

Like an f-string, with `!r`/`!s`/`!a` conversions and `:format` specs, but every
failure is one line that names the problem, and nothing is half-interpolated.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping
from typing import Any

from .errors import InvalidRequestError

_HINT = "use {{ }} for literal braces, or --raw"
_GLOBALS = {"__builtins__": builtins}


def interpolate(template: str, namespace: Mapping[str, Any]) -> str:
    """The template with each `{...}` replaced by the value of the expression."""
    out: list[str] = []
    i, n = 0, len(template)
    while i < n:
        char = template[i]
        if char == "{" and template.startswith("{{", i):
            out.append("{")
            i += 2
        elif char == "}" and template.startswith("}}", i):
            out.append("}")
            i += 2
        elif char == "}":
            raise InvalidRequestError(f"single '}}' in the prompt; {_HINT}")
        elif char == "{":
            end = _closing_brace(template, i)
            out.append(_evaluate(template[i + 1 : end], namespace))
            i = end + 1
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _outside_quotes(text: str, start: int = 0) -> Iterator[tuple[int, str, int]]:
    """(index, character, bracket depth before it) for every character outside string literals."""
    depth, quote, i = 0, "", start
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        else:
            yield i, char, depth
            depth += (char in "{[(") - (char in "}])")
        i += 1


def _closing_brace(text: str, start: int) -> int:
    for i, char, depth in _outside_quotes(text, start):
        if char in "}])" and depth == 1:
            return i
    snippet = text[start : start + 30]
    raise InvalidRequestError(f"unclosed '{{' in the prompt near {snippet!r}; {_HINT}")


def _split_spec(field: str) -> tuple[str, str | None, str]:
    """expression, conversion, format spec: split at the first top-level `!` or `:`."""
    for i, char, depth in _outside_quotes(field):
        if depth == 0 and char == "!" and field[i + 1 : i + 2] in ("r", "s", "a") and field[i + 2 : i + 3] in ("", ":"):
            return field[:i], field[i + 1], field[i + 3 :]
        if depth == 0 and char == ":":
            return field[:i], None, field[i + 1 :]
    return field, None, ""


def _compile(expression: str) -> Any:
    return compile(expression.strip(), "<prompt>", "eval")


def _evaluate(field: str, namespace: Mapping[str, Any]) -> str:
    if not field.strip():
        raise InvalidRequestError(f"empty {{}} in the prompt; {_HINT}")
    conversion, spec = None, ""
    try:
        code = _compile(field)
    except SyntaxError:
        expression, conversion, spec = _split_spec(field)
        try:
            code = _compile(expression)
        except SyntaxError:
            shown = field if len(field) <= 40 else field[:39] + "…"
            raise InvalidRequestError(f"{{{shown}}} in the prompt is not a Python expression; {_HINT}") from None
    try:
        value = eval(code, _GLOBALS, namespace)
    except NameError as exc:
        name = getattr(exc, "name", None) or str(exc)
        raise InvalidRequestError(f"name '{name}' is not defined in the prompt; {_HINT}") from None
    except Exception as exc:
        raise InvalidRequestError(f"{{{field.strip()}}} in the prompt raised {type(exc).__name__}: {exc}") from None
    if conversion:
        convert: Any = {"r": repr, "s": str, "a": ascii}[conversion]
        value = convert(value)
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        shown = field if len(field) <= 40 else field[:39] + "…"
        raise InvalidRequestError(
            f"{{{shown}}} in the prompt is not a Python expression with a valid "
            f"format (':{spec[:20]}' does not fit {type(value).__name__}); {_HINT}"
        ) from None


def template_names(template: str) -> set[str]:
    """The names the template's `{expressions}` read (a sweep axis must be one of them to change the prompt)."""
    import ast

    names: set[str] = set()
    i, n = 0, len(template)
    while i < n:
        if template.startswith(("{{", "}}"), i):
            i += 2
        elif template[i] == "{":
            end = _closing_brace(template, i)
            expression = _split_spec(template[i + 1 : end])[0]
            try:
                tree = ast.parse(expression.strip(), mode="eval")
            except SyntaxError:
                tree = None
            if tree is not None:
                names |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
            i = end + 1
        else:
            i += 1
    return names
