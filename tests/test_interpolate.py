"""Prompt interpolation: f-string-like, with one-line errors and no half-interpolated prompts."""

from __future__ import annotations

import pytest

from nanobanana_magic import InvalidRequestError
from nanobanana_magic.core.interpolate import interpolate

NS = {"city": "Lisbon", "n": 3, "items": ["a", "b"], "d": {"k": "v"}, "pi": 3.14159}


@pytest.mark.parametrize(
    "template, expected",
    [
        ("a map of {city}", "a map of Lisbon"),
        ("{n} cats", "3 cats"),
        ("{items[1]} and {d['k']}", "b and v"),
        ("{city.upper()}", "LISBON"),
        ("{n * 2}", "6"),
        ("{pi:.2f}", "3.14"),
        ("{city!r}", "'Lisbon'"),
        ("{{literal}} and {city}", "{literal} and Lisbon"),
        ('json {{"a": 1}}', 'json {"a": 1}'),
        ("{ {'x': 1}['x'] }", "1"),
        ("no braces at all", "no braces at all"),
    ],
)
def test_expressions_are_evaluated_in_the_namespace(template, expected):
    assert interpolate(template, NS) == expected


def test_undefined_name_is_a_one_line_error_with_the_way_out():
    with pytest.raises(InvalidRequestError) as info:
        interpolate("a map of {citty}", NS)
    assert str(info.value) == "name 'citty' is not defined in the prompt; use {{ }} for literal braces, or --raw"


@pytest.mark.parametrize(
    "template, fragment",
    [
        ('a prompt with JSON {"a": 1, "b"}', "is not a Python expression"),
        ("unclosed {city", "unclosed '{'"),
        ("stray } brace", "single '}'"),
        ("empty {} braces", "empty {}"),
        ("{1/0}", "raised ZeroDivisionError"),
    ],
)
def test_bad_braces_name_the_problem_and_suggest_escaping(template, fragment):
    with pytest.raises(InvalidRequestError) as info:
        interpolate(template, NS)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)
