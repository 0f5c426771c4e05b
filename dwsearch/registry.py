"""The block registry: the only way the builder finds a layer type.

Blocks register with ``@register_block("name")``; other packages add blocks through the
entry-point group ``dwsearch.blocks`` (an entry point may name a module that registers blocks
on import, or a class, registered under the entry point's name).
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib.metadata
import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "ENTRY_POINT_GROUP",
    "BlockInfo",
    "UnknownBlockError",
    "block_info",
    "get_block",
    "list_blocks",
    "register_block",
]

ENTRY_POINT_GROUP = "dwsearch.blocks"

T = TypeVar("T", bound=Callable[..., Any])


class UnknownBlockError(ValueError):
    """A block name that is not registered; the message lists close matches."""


@dataclass(frozen=True)
class BlockInfo:
    name: str
    factory: Callable[..., Any]
    description: str
    source: str  # "dwsearch" for built-ins, else the module or distribution that registered it


_REGISTRY: dict[str, BlockInfo] = {}
_plugins_loaded = False


def _describe(factory: Callable[..., Any]) -> str:
    doc = inspect.getdoc(factory) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def register_block(name: str, *, description: str | None = None) -> Callable[[T], T]:
    """Class decorator registering a block type under ``name``.

    Raises ``ValueError`` when the name is taken, so plugins cannot silently replace blocks.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"block name must be an identifier like 'my_block', found {name!r}")

    def decorator(factory: T) -> T:
        if name in _REGISTRY:
            other = _REGISTRY[name].source
            raise ValueError(f"block {name!r} is already registered (by {other})")
        module = getattr(factory, "__module__", "") or ""
        source = "dwsearch" if module.startswith("dwsearch.") else module
        _REGISTRY[name] = BlockInfo(name, factory, description or _describe(factory), source)
        return factory

    return decorator


def _ensure_loaded() -> None:
    """Import the built-in blocks and every installed plugin, once."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    import dwsearch.blocks  # noqa: F401  (registers the built-ins)

    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()
        except Exception as err:  # a broken plugin must not break every command
            warnings.warn(
                f"dwsearch: could not load block plugin {ep.name!r} ({ep.value}): {err}",
                stacklevel=2,
            )
            continue
        if inspect.ismodule(loaded) or ep.name in _REGISTRY:
            continue
        if callable(loaded):
            register_block(ep.name)(loaded)


def get_block(name: str) -> Callable[..., Any]:
    """The factory registered as ``name``; unknown names raise with close matches."""
    return block_info(name).factory


def block_info(name: str) -> BlockInfo:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UnknownBlockError(
            f"unknown block {name!r}; {hint}known blocks: {', '.join(sorted(_REGISTRY))}"
        ) from None


def list_blocks(pattern: str = "*") -> list[str]:
    """Registered block names matching a shell-style wildcard (``"dw*"``), sorted."""
    _ensure_loaded()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))
