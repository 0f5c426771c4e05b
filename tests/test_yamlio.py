"""YAML as people write it: duplicate keys, deep nesting and alias bombs are refused with one
located line, in bounded time; anchors and merge keys still work."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dwsearch.errors import SpecError
from dwsearch.yamlio import load_yaml


def refuse(text: str) -> str:
    with pytest.raises(SpecError) as info:
        load_yaml(text, "f.yaml", SpecError)
    message = str(info.value)
    assert "\n" not in message and message.startswith("f.yaml")
    return message


def test_duplicate_keys_name_both_lines() -> None:
    text = "input: [3, 32, 32]\nlayers: [{block: conv}]\nnum_classes: 10\nlayers: []\n"
    assert refuse(text) == "f.yaml:4: key 'layers' appears twice (lines 2 and 4); keep one"
    assert "appears twice" in refuse("{a: 1, a: 2}")


def test_merge_keys_are_not_duplicates() -> None:
    data = load_yaml("d: &d {x: 1, y: 2}\nt:\n  <<: *d\n  y: 3\n", "f.yaml", SpecError)
    assert data["t"] == {"x": 1, "y": 3}


@pytest.mark.parametrize("depth", [65, 900, 20_000])
def test_deep_nesting_is_refused_quickly(depth: int) -> None:
    start = time.perf_counter()
    assert "nested deeper than 64" in refuse("[" * depth + "]" * depth)
    assert time.perf_counter() - start < 10


def test_alias_bomb_is_refused_before_anything_walks_it() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    text = "\n".join(lines) + "\n"
    assert len(text) < 1000
    start = time.perf_counter()
    assert "expands to more than 200,000 values" in refuse(text)
    assert time.perf_counter() - start < 10


def test_invalid_yaml_names_the_line() -> None:
    assert refuse("a: [1, 2\nb: 3\n").startswith("f.yaml:2: invalid YAML")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="[]{}:,&*!|>-'\"#\n abc01", max_size=200))
def test_any_text_parses_or_gives_one_located_line(text: str) -> None:
    try:
        load_yaml(text, "f.yaml", SpecError)
    except SpecError as err:
        assert "\n" not in str(err) and str(err).startswith("f.yaml")
