"""Reading YAML that people (and generators) write, safely and unambiguously.

``yaml.safe_load`` runs no code, but it still (1) keeps the last of two equal keys without a
word, so a second ``layers:`` silently replaces the first, (2) recurses once per nesting
level, so a few hundred brackets end in a RecursionError, and (3) lets a few hundred bytes of
nested aliases stand for billions of values, which whoever walks the result then pays for.
:func:`load_yaml` refuses all three with one located line, in bounded time and memory.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node

from dwsearch.errors import DwsearchError

__all__ = ["MAX_ALIASES", "MAX_DEPTH", "MAX_VALUES", "load_yaml"]

MAX_DEPTH = 64  # nesting levels of lists and mappings
MAX_ALIASES = 1000  # uses of *anchor in one document
MAX_VALUES = 200_000  # scalars, lists and mappings once aliases are expanded


class _Refused(Exception):
    """Internal: the document breaks a rule; ``line`` is 1-based (0 when unknown)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


class _Loader(yaml.SafeLoader):
    """SafeLoader with a nesting limit, an alias limit and duplicate keys refused."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise _Refused(mark.line + 1, f"more than {MAX_ALIASES} aliases (*name)")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise _Refused(mark.line + 1, f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *defaults": keys written beside it override, as YAML says
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the caller rejects it with its path
                continue
            if first is not None:
                raise _Refused(line, f"key {key!r} appears twice (lines {first} and {line}); "
                                     f"keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _count(value: Any, budget: int) -> int:
    """Values in ``value`` with aliases expanded, counting down from ``budget``; raises when
    it runs out (iterative, so depth does not matter)."""
    stack = [value]
    while stack:
        item = stack.pop()
        budget -= 1
        if budget < 0:
            raise _Refused(0, f"expands to more than {MAX_VALUES:,} values (nested aliases)")
        if isinstance(item, dict):
            stack.extend(item.values())
            stack.extend(item.keys())
        elif isinstance(item, list):
            stack.extend(item)
    return budget


def load_yaml(text: str, source: str, error: type[DwsearchError]) -> Any:
    """Parse one YAML document from ``text``; ``source`` names it in messages (a path), and
    every problem is raised as ``error`` with one line: ``source:LINE: what``."""
    if not isinstance(text, str):
        raise error(f"{source}: expected text, found {type(text).__name__}")
    loader: _Loader | None = None
    try:
        # Inside the try: the reader checks every character as it is built, so a control
        # character (a stray BEL, a NUL) is a located line like any other syntax error.
        loader = _Loader(text)
        data = loader.get_single_data()
        _count(data, MAX_VALUES)
    except _Refused as err:
        where = f"{source}:{err.line}" if err.line else source
        raise error(f"{where}: {err}") from err
    except yaml.reader.ReaderError as err:
        line = text.count("\n", 0, max(0, err.position)) + 1
        code = ord(err.character) if isinstance(err.character, str) else int(err.character)
        raise error(f"{source}:{line}: invalid YAML: character #x{code:04x} is not allowed (of "
                    f"the control characters only tab and line breaks are; write others as "
                    f"escapes in a double-quoted string, e.g. \"\\x07\")") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise error(f"{where}: invalid YAML: {problem}") from err
    except RecursionError as err:  # constructing very deep flow collections in C-less paths
        raise error(f"{source}: nested too deeply") from err
    finally:
        if loader is not None:
            loader.dispose()
    return data
