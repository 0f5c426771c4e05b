"""The block registry: the only way the builder finds a layer type.

Three kinds of entries share one namespace of names and aliases:

* built-in blocks, listed in :data:`BUILTIN_BLOCKS` as data. Their names are reserved from the
  moment this module is imported and their descriptions are known without importing torch;
  the class is imported on first use. This module imports no block module.
* plugin blocks from other installed packages, through the entry-point group
  ``dwsearch.blocks`` (an entry point names a module that registers blocks when imported, or
  a class, registered under the entry point's name). Plugins are discovered once, lazily,
  under a lock: on the first lookup of a name that is not built in, the first listing, or the
  first :func:`register_block` call.
* user blocks, registered with ``@register_block("name")``.

A name (or alias) is never replaced: registering one that a built-in, a plugin or an earlier
registration holds raises ``ValueError``, whenever it happens. Aliases keep old spec and study
files working after a block is renamed. Every function here is safe to call from several
threads (Optuna runs trials in threads).
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import importlib.metadata
import inspect
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from dwsearch.errors import UnknownBlockError

__all__ = [
    "ADDED_ARGUMENTS",
    "BUILTIN_BLOCKS",
    "ENTRY_POINT_GROUP",
    "INFERRED_ARGUMENTS",
    "BlockInfo",
    "UnknownBlockError",
    "block_info",
    "block_signature",
    "canonical_layer",
    "canonical_name",
    "get_block",
    "list_blocks",
    "register_alias",
    "register_block",
]

ENTRY_POINT_GROUP = "dwsearch.blocks"
# Arguments the builder fills from the incoming shape; a spec may repeat them but they are
# not part of an architecture's identity.
INFERRED_ARGUMENTS = ("in_channels", "in_features")
# Arguments a built-in block gained after specs were first hashed: left out of the canonical
# form while at their default, so every spec written before keeps its hash (and the studies
# and reuse keys built on it). inverted_residual's mid_channels: pruned widths.
ADDED_ARGUMENTS: Mapping[str, tuple[str, ...]] = {"inverted_residual": ("mid_channels",)}

T = TypeVar("T", bound=Callable[..., Any])


@dataclass(frozen=True)
class _Builtin:
    target: str  # "module:attribute"
    description: str  # the first line of the class docstring (a test holds them equal)
    aliases: tuple[str, ...] = ()


# The built-in blocks as data: name -> where the class lives, what it is, its other names.
BUILTIN_BLOCKS: Mapping[str, _Builtin] = {
    "conv": _Builtin(
        "dwsearch.blocks.standard:ConvBlock",
        "Standard k x k convolution -> optional BatchNorm -> activation (bias defaults to not "
        "bn).",
    ),
    "grouped": _Builtin(
        "dwsearch.blocks.standard:GroupedConvBlock",
        "k x k convolution with groups=g -> BN -> activation: g=1 is standard, g=in is "
        "depthwise.",
    ),
    "dwsep": _Builtin(
        "dwsearch.blocks.depthwise:DepthwiseSeparable",
        "Depthwise k x k (x multiplier) -> BN -> act -> [SE] -> pointwise 1x1 -> BN -> act "
        "[+ skip].",
        aliases=("conv_dw", "depthwise_separable"),
    ),
    "hybrid": _Builtin(
        "dwsearch.blocks.depthwise:HybridConv",
        "Output channels split: round(ratio x out) from a standard conv, the rest from dwsep.",
    ),
    "inverted_residual": _Builtin(
        "dwsearch.blocks.inverted:InvertedResidual",
        "MobileNetV2 block: 1x1 expand (x t) -> dw k x k -> [SE] -> linear 1x1 project "
        "[+ skip].",
        aliases=("mbconv",),
    ),
    "maxpool": _Builtin(
        "dwsearch.blocks.layers:MaxPool",
        "2-D max pooling (torch.nn.MaxPool2d; stride defaults to kernel_size).",
    ),
    "avgpool": _Builtin(
        "dwsearch.blocks.layers:AvgPool",
        "2-D average pooling (torch.nn.AvgPool2d; stride defaults to kernel_size).",
    ),
    "global_avgpool": _Builtin(
        "dwsearch.blocks.layers:GlobalAvgPool",
        "Average over H and W, then flatten (C, H, W) -> (C,) unless flatten is false.",
    ),
    "dropout": _Builtin(
        "dwsearch.blocks.layers:Dropout",
        "Element-wise dropout with probability p (torch.nn.Dropout).",
    ),
    "dropout2d": _Builtin(
        "dwsearch.blocks.layers:Dropout2d",
        "Channel-wise dropout with probability p (torch.nn.Dropout2d).",
    ),
    "flatten": _Builtin(
        "dwsearch.blocks.layers:Flatten", "Flatten (C, H, W) to (C*H*W,) (torch.nn.Flatten)."
    ),
    "linear": _Builtin(
        "dwsearch.blocks.layers:Linear",
        "Fully connected layer -> activation (identity by default); in_features is inferred.",
    ),
}


@dataclass(frozen=True)
class BlockInfo:
    """A registered block. ``factory`` is None only for a built-in not imported yet
    (``block_info(name, load=False)``)."""

    name: str
    factory: Callable[..., Any] | None
    description: str
    source: str  # "dwsearch" for built-ins, else the module that registered it
    aliases: tuple[str, ...] = ()
    target: str = ""  # "module:attribute" of a built-in


_lock = threading.RLock()  # guards the two dicts below and plugin discovery
_registry: dict[str, BlockInfo] = {
    name: BlockInfo(name, None, entry.description, "dwsearch", entry.aliases, entry.target)
    for name, entry in BUILTIN_BLOCKS.items()
}
_aliases: dict[str, str] = {
    alias: name for name, entry in BUILTIN_BLOCKS.items() for alias in entry.aliases
}
_plugins = "pending"  # "pending" -> "loading" -> "done"


def _describe(factory: Callable[..., Any]) -> str:
    doc = inspect.getdoc(factory) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"{what} must be an identifier like 'my_block', found {name!r}")
    return name


def _holder(name: str) -> str | None:
    """Who holds ``name`` (as a name or an alias), or None. Call with the lock held."""
    if name in _aliases:
        return f"an alias of {_aliases[name]!r}"
    if name in _registry:
        source = _registry[name].source
        return "a built-in block" if source == "dwsearch" else f"a block of {source}"
    return None


def register_block(
    name: str, *, description: str | None = None, aliases: tuple[str, ...] = ()
) -> Callable[[T], T]:
    """Class decorator registering a block type under ``name`` (and any ``aliases``).

    The block is any callable returning an ``nn.Module`` from keyword arguments; the builder
    fills ``in_channels`` / ``in_features`` from the incoming shape. Raises ``ValueError``
    when the name or an alias is already held by a built-in, a plugin or another block.
    """
    _check_name(name, "block name")
    for alias in aliases:
        _check_name(alias, "alias")

    def decorator(factory: T) -> T:
        if not callable(factory):
            raise TypeError(f"register_block({name!r}) decorates a class or function, "
                            f"found {type(factory).__name__}")
        _load_plugins()
        with _lock:
            for key in (name, *aliases):
                held = _holder(key)
                if held is not None:
                    raise ValueError(
                        f"block name {key!r} is already taken ({held}); choose another name"
                    )
            module = getattr(factory, "__module__", "") or "<unknown>"
            _registry[name] = BlockInfo(
                name, factory, description or _describe(factory), module, tuple(aliases)
            )
            for alias in aliases:
                _aliases[alias] = name
        return factory

    return decorator


def register_alias(alias: str, name: str) -> None:
    """Let ``alias`` stand for the registered block ``name`` (for a renamed block)."""
    _check_name(alias, "alias")
    target = canonical_name(name)
    with _lock:
        held = _holder(alias)
        if held is not None:
            raise ValueError(f"alias {alias!r} is already taken ({held})")
        _aliases[alias] = target
        info = _registry[target]
        _registry[target] = replace(info, aliases=(*info.aliases, alias))


def _load_plugins() -> None:
    """Import every installed plugin once. Plugin modules call :func:`register_block` while
    this runs (in this thread: the lock is re-entrant, and the state says "loading")."""
    global _plugins
    if _plugins == "done":
        return
    with _lock:
        if _plugins != "pending":  # done by another thread, or re-entered from a plugin
            return
        _plugins = "loading"
        try:
            for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                _load_plugin(ep)
        finally:
            _plugins = "done"


def _load_plugin(ep: importlib.metadata.EntryPoint) -> None:
    try:
        loaded = ep.load()
    except Exception as err:  # a broken plugin must not break every command
        warnings.warn(
            f"dwsearch: could not load block plugin {ep.name!r} ({ep.value}): {err}",
            stacklevel=4,
        )
        return
    if inspect.ismodule(loaded) or not callable(loaded):
        return
    with _lock:
        existing = _registry.get(ep.name)
        if existing is not None and existing.factory is loaded:
            return  # the module registered it under this name already
    try:
        register_block(ep.name)(loaded)
    except ValueError as err:
        warnings.warn(f"dwsearch: block plugin {ep.name!r} ({ep.value}) skipped: {err}",
                      stacklevel=4)


def canonical_name(name: str) -> str:
    """The registered name for ``name`` or one of its aliases; unknown names raise
    :class:`UnknownBlockError` listing close matches."""
    if not isinstance(name, str):
        raise UnknownBlockError(f"block name must be a string, found {name!r}")
    with _lock:
        if name in _registry:
            return name
        if name in _aliases:
            return _aliases[name]
    _load_plugins()
    with _lock:
        if name in _registry:
            return name
        if name in _aliases:
            return _aliases[name]
        known = sorted(_registry)
        candidates = [*known, *_aliases]
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UnknownBlockError(f"unknown block {name!r}; {hint}known blocks: {', '.join(known)}")


def block_info(name: str, *, load: bool = True) -> BlockInfo:
    """The registry entry for ``name`` (or an alias). ``load=False`` skips importing a
    built-in's class (no torch), so ``factory`` may then be None."""
    canonical = canonical_name(name)
    with _lock:
        info = _registry[canonical]
    if info.factory is not None or not load:
        return info
    module_name, _, attribute = info.target.partition(":")
    # Imported outside the lock: Python's import machinery has its own locks, and a block
    # module that registers something while we hold ours could otherwise deadlock.
    factory = getattr(importlib.import_module(module_name), attribute)
    with _lock:
        info = replace(_registry[canonical], factory=factory)
        _registry[canonical] = info
    return info


def get_block(name: str) -> Callable[..., Any]:
    """The factory registered as ``name`` (or an alias); unknown names raise with close
    matches."""
    factory = block_info(name).factory
    assert factory is not None  # block_info loads it
    return factory


def list_blocks(pattern: str = "*") -> list[str]:
    """Registered block names matching a shell-style wildcard (``"dw*"``), sorted. Aliases are
    not listed (see :attr:`BlockInfo.aliases`)."""
    if not isinstance(pattern, str):
        raise UnknownBlockError(f"block pattern must be a string like 'dw*', found {pattern!r}")
    _load_plugins()
    with _lock:
        names = list(_registry)
    return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))


def block_signature(name: str) -> inspect.Signature:
    """The keyword signature of a block's factory (its arguments and their defaults)."""
    return inspect.signature(get_block(name))


def canonical_layer(block: str, args: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """A layer in the form that identifies its architecture: the registered name (not an
    alias) and every keyword argument with the block's defaults filled in, without the
    arguments the builder infers (``in_channels``, ``in_features``). Arguments the block does
    not take are kept as written (building such a spec fails anyway)."""
    name = canonical_name(block)
    filled: dict[str, Any] = {}
    for param in block_signature(name).parameters.values():
        if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
            continue
        if param.default is not param.empty:
            filled[param.name] = param.default
    filled.update(args)
    for key in INFERRED_ARGUMENTS:
        filled.pop(key, None)
    signature = block_signature(name).parameters
    for key in ADDED_ARGUMENTS.get(name, ()):
        if key in filled and filled[key] == signature[key].default:
            del filled[key]
    return name, filled
