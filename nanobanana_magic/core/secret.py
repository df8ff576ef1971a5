"""`ApiKey`: the API key as a value that cannot be printed by accident."""

from __future__ import annotations


def mask(key: str | None) -> str:
    """`sk-…a1b2` style: enough to tell keys apart, never enough to use one."""
    if not key:
        return "(not set)"
    if len(key) < 12:
        return "…" + "*" * 4
    return f"{key[:3]}…{key[-4:]}"


class ApiKey:
    """Holds the key; `str()` and `repr()` show it masked, `reveal()` gives the real one."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        value = value.strip()
        if not value:
            raise ValueError("empty API key")
        self._value = value

    def reveal(self) -> str:
        """The real key, for the Authorization header and nothing else."""
        return self._value

    def __repr__(self) -> str:
        return f"ApiKey('{mask(self._value)}')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApiKey) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple:  # pickling would write the key somewhere
        raise TypeError("an API key is not picklable")


class MaskedHeader(str):
    """A header value holding the key: the real text on the wire, masked in `repr`, so that a
    traceback printing local variables (IPython's verbose mode) shows `'Bearer sk-…a1b2'`."""

    __slots__ = ()

    def __repr__(self) -> str:
        scheme, _, secret = str.__str__(self).partition(" ")
        return repr(f"{scheme} {mask(secret)}")


def as_key(value: str | ApiKey | None) -> ApiKey | None:
    """`ApiKey` from a string, a key or nothing (empty strings count as nothing)."""
    if value is None or isinstance(value, ApiKey):
        return value
    value = str(value).strip()
    return ApiKey(value) if value else None
